"""HSE train step at paper size: compile time and count, steps/s, examples/s, memory, FLOP/s.

    python benchmarks/bench_hse_step.py [--batch 64] [--steps 3] [--model hse|fse]
        [--devices 1] [--dtype float32|bfloat16] [--input-examples 2000]

Paper size (issue #2): batch 64 videos, 3-5 clips of 20-40 frames, an 80-frame video
context, sentences of 10-20 words, vocab 10k, dims 500/300, hidden 1024, τ = 5e-4.
Prints the step's FLOPs from XLA's cost analysis divided by the measured step time next to
a large matmul's FLOP/s on the same machine, and the input pipeline's examples/s from
TFRecords (written to a temp dir in the canonical schema, read through the HSE view).

The timed steps run the jitted train step on consecutive batches of the stream (their lengths
differ); ``compiles`` counts XLA backend compilations from the first step on (1 = one static
shape for every batch).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from typing import Any


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="hse", choices=["hse", "fse"])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
  p.add_argument("--dtype", default="float32", help="matmul dtype of the GRUs")
  p.add_argument("--hidden", type=int, default=1024)
  p.add_argument("--max-clips", type=int, default=5, help="static clip limit")
  p.add_argument("--max-frames-per-clip", type=int, default=40)
  p.add_argument("--max-words", type=int, default=20)
  p.add_argument("--max-paragraph-words", type=int, default=100,
                 help="e.g. 384 (the ActivityNet config): steps past the batch's longest "
                      "paragraph are skipped by the GRU loops")
  p.add_argument("--input-examples", type=int, default=2000,
                 help="examples for the input-pipeline measurement (0 = skip)")
  return p.parse_args()


ARGS = _parse()
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={ARGS.devices}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs.hse import activitynet_c3d  # pylint: disable=g-import-not-at-top,wrong-import-position
from data_prep import builder  # pylint: disable=g-import-not-at-top,wrong-import-position
from hvt_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

VOCAB, VIDEO_DIM, WORD_DIM = 10_000, 500, 300


def record(i: int, rng: np.random.Generator, split: str) -> dict:
  """A paper-sized video: 3-5 clips of 20-40 rows, sentences of 10-20 words."""
  n_clips = int(rng.integers(3, 6))
  lengths = rng.integers(20, 41, size=n_clips)
  t = int(lengths.sum())
  ends = np.cumsum(lengths).astype(np.float32)
  rows = np.arange(t, dtype=np.float32)
  return dict(video_id=f"{split}{i}", duration=float(t), split=split, label="",
              features={"c3d": rng.normal(size=(t, VIDEO_DIM)).astype(np.float32)},
              timestamps={"c3d": np.stack([rows, rows + 1], 1)},
              segments=np.stack([ends - lengths, ends], 1),
              sentences=[f"s{j}" for j in range(n_clips)],
              tokens=[rng.integers(2, VOCAB, size=int(rng.integers(10, 21))).tolist()
                      for _ in range(n_clips)])


def write_data(out_dir: str, n_train: int) -> str:
  rng = np.random.default_rng(0)
  spec = builder.DatasetSpec(name="bench", modalities={"c3d": VIDEO_DIM}, tokenizer="word",
                            vocab=["<pad>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 2)])
  splits = {"train": (record(i, rng, "train") for i in range(n_train)),
            "val_1": (record(i, rng, "val_1") for i in range(8))}
  return builder.write_dataset(spec, splits, out_dir, counter=builder.SkipCounter())


def make_config(data_dir: str):
  c = activitynet_c3d.get_config(f"model={ARGS.model}")
  c.input.data_dir = data_dir
  c.input.modality = "c3d"
  c.input.max_clips = ARGS.max_clips
  c.input.max_frames_per_clip = ARGS.max_frames_per_clip
  c.input.max_video_frames = 80
  c.input.max_words = ARGS.max_words
  c.input.max_paragraph_words = ARGS.max_paragraph_words
  c.model.word_dim = WORD_DIM
  c.model.hidden = ARGS.hidden
  c.model.word_vectors = "none"
  c.model.dtype = ARGS.dtype
  c.batch_size = ARGS.batch
  c.progress_bar = False
  return c


def analytic_step_flops(b: int, h: int, c: int = 5, f: int = 40, fv: int = 80, l: int = 20,
                        lp: int = 100, d: int = VIDEO_DIM, e: int = WORD_DIM) -> float:
  """Matmul FLOPs of one HSE step, counting every padded time step (what the GRUs run).

  XLA's cost analysis counts a while-loop body once, so it under-reports recurrent work;
  this counts forward matmuls and takes backward = 2x forward (input and weight grads).
  """
  def gru(rows, steps, in_dim, hidden, hoisted=False):
    proj = 2 * rows * (1 if hoisted else steps) * in_dim * 3 * hidden
    return proj + 2 * rows * steps * hidden * 3 * hidden

  forward = (gru(b * c, f, d, h) + gru(b, fv, d, h) + gru(b * c, l, e, h) + gru(b, lp, e, h)
             + 2 * gru(b, c, h, h))
  if ARGS.model == "hse":
    forward += (2 * gru(b, c, h, h, True) + gru(b * c, f, h, d, True)
                + gru(b * c, l, h, e, True))
  else:
    forward = gru(b, fv, d, h) + gru(b, lp, e, h)
  return 3 * forward


def matmul_flops(n: int = 2048, reps: int = 5) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t)


def bench_input(config, n: int) -> float:
  ds = pipeline.train_dataset(config, 0)
  it = ds.as_numpy_iterator()
  next(it)  # warm-up: file open, graph build
  batches = max(1, n // config.batch_size)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - t)


COMPILES: list[float] = []


def _count_compiles(event: str, secs: float, **_) -> None:
  if event == "/jax/core/compile/backend_compile_duration":
    COMPILES.append(secs)


def time_steps(s, config, variants: dict[str, Any]) -> dict[str, list[float]]:
  """Times each variant's step on the same consecutive batches, interleaved (A B A B ...) so
  that a shared machine's load hits all alike. ``variants``: label -> (step fn, state).

  The first batch compiles (not timed); then ``ARGS.steps`` timed steps per variant.
  Returns label -> step seconds.
  """
  batches = pipeline.iterate(pipeline.train_dataset(config, 0), s.mesh,
                             pipeline.get_view(config.model.name))
  states = {k: state for k, (_, state) in variants.items()}
  times = {k: [] for k in variants}
  with jax.set_mesh(s.mesh):
    for i in range(ARGS.steps + 1):
      batch, _ = next(batches)
      for label, (step_fn, _) in variants.items():
        first = len(COMPILES)
        t = time.perf_counter()
        states[label], metrics = step_fn(states[label], batch)
        jax.block_until_ready(metrics)
        if i == 0:
          print(f"{label:24s} first step (compiles) {time.perf_counter() - t:6.1f} s, "
                f"compiles {len(COMPILES) - first}", flush=True)
        else:
          times[label].append(time.perf_counter() - t)
  for label, ts in times.items():
    print(f"{label:24s} step_s (median) {np.median(ts):6.2f}   steps: "
          f"{', '.join(f'{x:.2f}' for x in ts)}", flush=True)
  return times


def main():
  print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} CPU cores")
  jax.monitoring.register_event_duration_secs_listener(_count_compiles)
  with tempfile.TemporaryDirectory() as tmp:
    n_train = max(ARGS.batch * (ARGS.steps + 2), ARGS.input_examples)
    t = time.perf_counter()
    write_data(tmp, n_train)
    print(f"wrote {n_train} paper-sized videos in {time.perf_counter() - t:.1f} s")
    config = make_config(tmp)
    s = train.setup(config)
    state = train.init_state(s)
    batch, _ = next(pipeline.iterate(pipeline.train_dataset(config, 0), s.mesh,
                                     pipeline.get_view(config.model.name)))
    with jax.set_mesh(s.mesh):
      t = time.perf_counter()
      compiled = train.make_train_step(s).lower(state, batch).compile()
      compile_s = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    mem = compiled.memory_analysis()
    del compiled
    print(f"model={ARGS.model} batch={ARGS.batch} hidden={ARGS.hidden} dtype={ARGS.dtype}")
    print(f"compile_s        {compile_s:8.1f}")
    variants = {"train step": (train.make_train_step(s), state)}
    n_compiles = len(COMPILES)
    times = time_steps(s, config, variants)
    print(f"compiles         {len(COMPILES) - n_compiles:8d}   (all timed steps, all variants; "
          f"one per variant = one static shape)")
    step_s = float(np.median(times["train step"]))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    mm = matmul_flops()
    print(f"steps/s          {1 / step_s:8.3f}")
    print(f"examples/s       {ARGS.batch / step_s:8.1f}")
    analytic = analytic_step_flops(ARGS.batch, ARGS.hidden, c=ARGS.max_clips,
                                   f=ARGS.max_frames_per_clip, l=ARGS.max_words,
                                   lp=ARGS.max_paragraph_words)
    print(f"step TFLOP       {analytic / 1e12:8.3f}   (analytic matmuls incl. padding; XLA "
          f"cost analysis, loop bodies once: {flops / 1e12:.3f})")
    print(f"achieved GFLOP/s {analytic / step_s / 1e9:8.1f}   vs 2048² matmul "
          f"{mm / 1e9:.1f} GFLOP/s ({100 * analytic / step_s / mm:.0f}%; padding counted, "
          f"so above 100% means padding skipped); XLA cost analysis / step time: "
          f"{flops / step_s / 1e9:.1f} GFLOP/s")
    if mem is not None:
      print(f"XLA temp MiB     {mem.temp_size_in_bytes / 2**20:8.1f}   args MiB "
            f"{mem.argument_size_in_bytes / 2**20:.1f}")
    print(f"peak RSS GiB     {peak_rss:8.2f}")
    print(f"STEP_S {step_s:.3f}")
    if ARGS.input_examples:
      print(f"input examples/s {bench_input(config, ARGS.input_examples):8.1f}   "
            "(TFRecords -> HSE view -> batch)")


if __name__ == "__main__":
  main()
