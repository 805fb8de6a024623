"""Every family measured on the devices present, in one call: train steps and corpus scoring.

    python benchmarks/accelerator.py [--size paper|tiny] [--budget-minutes 8]
        [--families hse,hammer,flat:score,mcha,text_mlm] [--dtypes float32,bfloat16]
        [--devices 1] [--blocks Q C] [--json rows.json]

For each family, built from its paper config (``configs/<family>/<dataset>.py``; ``tiny``:
the same config's ``runlocal``) with random weights (bert-base-uncased's architecture from
a config.json-only directory, ``benchmarks/towers.py``; weights do not change the cost), on
a synthetic dataset with the config's modalities at the paper's feature dims, read through
the family's own views and the trainer's pipeline:

* ``train``: one step of the trainer (``hvt_jax.train.make_train_step``: forward, loss,
  Adam) on ``--devices`` devices, per compute dtype (``config.model.dtype``: float32, and
  bfloat16 where the family's config has the field; parameters and Adam state stay
  float32);
* ``score``: the model's ``score`` prediction function on one query block x candidate block
  (``--blocks``; default per family) of encodings from ``encode_query``/``encode_candidate``
  (``hvt_jax.models.base.PredictFns``, as the evaluators call them), on one device; the
  TVR-val (10,895 x 2,179 pairs) and ActivityNet-val_1 (17,505 x 4,917) columns extrapolate
  the measured pairs/s to the full corpus pass of one device (scoring only; HSE ranks
  paragraphs, so its columns are a yardstick).

A family named as ``<family>:train`` or ``<family>:score`` in ``--families`` gets only that
measurement.

Printed per row: median seconds per call, XLA's FLOPs per call (``cost_analysis``; "≥": the
program has a while loop, whose body XLA counts once, e.g. HSE's GRUs), achieved TFLOP/s,
MFU against the device kind's peak (``hvt_jax.flops.PEAKS``; "n/a" on CPUs), XLA's memory
for the call (``memory_analysis``: arguments + outputs + temporaries) and the device's peak
bytes in use so far (``memory_stats``, where the backend has it). A failing measurement
prints its error in its row and the others go on; measurements stop when
``--budget-minutes`` is spent (a compile already started finishes). Exit status 1 only
when no measurement succeeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CORPORA = {"TVR-val": 10_895 * 2_179, "ANet-val_1": 17_505 * 4_917}   # (query, video) pairs
# Feature dims of the paper configs' modalities (ActivityNet C3D after PCA, TVR's I3D,
# ResNet-152 and ASR features, MMT's S3D and VGGish); ``tiny`` uses TINY_DIM for all.
DIMS = {"c3d": 500, "i3d": 1024, "resnet": 2048, "subtitle": 768, "s3d": 1024, "vggish": 128}
TINY_DIM = 16


@dataclasses.dataclass(frozen=True)
class Bench:
  """One family's measurements.

  Attributes:
    config: the paper config module; arg: its config arg (``runlocal`` is added for tiny).
    tokenizer: the dataset's ("word": HSE's vocabulary; "wordpiece": BERT's).
    views: (query view, candidate view) of the score blocks ("" = the model's own view);
      () = the model has no ``score``.
    blocks: the paper-size score block (queries, candidates).
  """
  config: str
  arg: str = ""
  tokenizer: str = "wordpiece"
  views: tuple[str, ...] = ("", "")
  blocks: tuple[int, int] = (16, 64)


BENCHES = {
    "hse": Bench("configs.hse.activitynet_c3d", "model=hse", "word", blocks=(256, 1024)),
    "hammer": Bench("configs.hammer.tvr", "model=hammer", views=("query", "video")),
    "flat": Bench("configs.hammer.tvr", "model=flat", views=("query", "video")),
    "mcha": Bench("configs.mcha.activitynet", views=("caption", "video")),
    "text_mlm": Bench("configs.text_mlm.activitynet", views=()),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="accelerator.py", description=__doc__.splitlines()[0])
  p.add_argument("--size", default="paper", choices=["paper", "tiny"])
  p.add_argument("--families", default=",".join(BENCHES),
                 help=f"comma-separated, of {sorted(BENCHES)}; <family>:train or "
                 "<family>:score for only that measurement")
  p.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes measured")
  p.add_argument("--budget-minutes", type=float, default=8.0)
  p.add_argument("--devices", type=int, default=1, help="train-step devices (0 = all)")
  p.add_argument("--blocks", type=int, nargs=2, default=None, metavar=("Q", "C"),
                 help="score block (default: per family; tiny: 4 x 8)")
  p.add_argument("--json", default="", help="also write the rows to this JSON file")
  return p.parse_args(argv)


@dataclasses.dataclass
class Row:
  """One measurement: what was run and what it cost (NaN / None where not measured)."""
  family: str
  what: str
  dtype: str = ""
  seconds: float = math.nan
  flops: float = math.nan
  flops_lower_bound: bool = False
  tflops_per_sec: float = math.nan
  mfu: float | None = None
  xla_gib: float = math.nan
  device_peak_gib: float = math.nan
  pairs_per_sec: float = math.nan
  corpus_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
  compile_seconds: float = math.nan
  error: str = ""


class Budget:
  """Wall-clock budget of the whole run."""

  def __init__(self, minutes: float):
    self.deadline = time.monotonic() + 60.0 * minutes

  def left(self) -> float:
    return self.deadline - time.monotonic()


# ------------------------------------------------------------------ synthetic dataset


def _modalities(c: Any) -> list[str]:
  """The feature streams the config reads (HSE: modality; HAMMER: modalities + subtitle;
  MCHA: experts)."""
  inp = c.input
  names = [inp.modality] if inp.get("modality") else list(inp.get("modalities") or ())
  names += [inp.subtitle] if inp.get("subtitle") else []
  names += list(inp.get("experts") or ())
  return names or ["c3d"]   # text only (text_mlm): a dataset still has a feature stream


def _vocab(tokenizer: str, size: str) -> tuple[list[str], int]:
  """(vocabulary, first id a synthetic token may take)."""
  from benchmarks import towers  # pylint: disable=g-import-not-at-top
  if tokenizer == "word":
    n = 10_000 if size == "paper" else 50
    return ["<pad>", "<unk>"] + [f"w{i}" for i in range(n - 2)], 2
  if size == "tiny":
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)], 5
  vocab = [f"w{i}" for i in range(towers.BERT_BASE["vocab_size"])]
  for name, i in towers.BERT_SPECIAL.items():
    vocab[i] = f"[{name.upper()}]"
  return vocab, 1000


def write_dataset(c: Any, tokenizer: str, size: str, num_records: int, out_dir: str) -> str:
  """A synthetic dataset with the config's modalities: ``num_records`` videos in the train
  split and in every split the config's evaluations read; returns its directory."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_prep import builder  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  names = _modalities(c)
  unknown = sorted(set(names) - set(DIMS))
  if unknown and size == "paper":
    raise ValueError(f"modalities {unknown} have no paper dims in DIMS")
  dims = {m: (DIMS[m] if size == "paper" else TINY_DIM) for m in names}
  vocab, first = _vocab(tokenizer, size)
  rows, sentences, words = (128, 4, 16) if size == "paper" else (20, 3, 6)
  rng = np.random.default_rng(0)

  def record(i: int, split: str) -> dict:
    starts = np.arange(rows, dtype=np.float32)
    edges = np.linspace(0, rows, sentences + 1, dtype=np.float32)
    return dict(video_id=f"{split}{i}", duration=float(rows), split=split, label="",
                features={m: rng.normal(size=(rows, d)).astype(np.float32)
                          for m, d in dims.items()},
                timestamps={m: np.stack([starts, starts + 1], 1) for m in dims},
                segments=np.stack([edges[:-1], edges[1:]], 1),
                sentences=[f"s{j}" for j in range(sentences)],
                tokens=[rng.integers(first, len(vocab), size=words).tolist()
                        for _ in range(sentences)])

  splits = {"train"} | {e.split for e in c.evals.values() if "split" in e}
  spec = builder.DatasetSpec(name="bench", modalities=dims, tokenizer=tokenizer, vocab=vocab)
  return builder.write_dataset(
      spec, {s: [record(i, s) for i in range(num_records)] for s in sorted(splits)},
      out_dir, counter=builder.SkipCounter())


def make_config(family: str, size: str, dtype: str, devices: int, tower_dir: str) -> Any:
  """The family's paper config (tiny: its runlocal) ready for the synthetic dataset.

  Raises:
    ValueError: an unknown family, or a dtype the family's config does not have.
  """
  if family not in BENCHES:
    raise ValueError(f"unknown family {family!r}; valid: {sorted(BENCHES)}")
  b = BENCHES[family]
  arg = ",".join(x for x in (b.arg, "runlocal" if size == "tiny" else "") if x)
  c = importlib.import_module(b.config).get_config(arg or None)
  if "dtype" not in c.model:
    raise ValueError(f"{b.config} has no config.model.dtype")
  c.model.dtype = dtype
  if c.model.get("word_vectors"):
    c.model.word_vectors = "none"             # no GloVe file: random word vectors
  if size == "paper" and c.model.get("text", {}).get("checkpoint"):
    c.model.text.checkpoint = tower_dir     # bert-base-uncased's architecture, no weights
  if size == "tiny" and "text" in c.model:
    c.model.text.num_layers = 1             # runlocal's tower, one layer: quick to compile
  c.mesh_devices = devices
  c.progress_bar = False
  return c


# ------------------------------------------------------------------ measurements


def _time(fn, budget: Budget, reps: int = 5) -> float:
  """Median seconds of ``fn()`` (which blocks until done) after one warm-up call; at least
  one timed call, more while they fit in a tenth of the budget left."""
  fn()
  times = []
  while len(times) < reps and (not times or sum(times) < 0.1 * max(budget.left(), 0.0)):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _cost(row: Row, compiled: Any, devices: int, peak: float | None) -> None:
  """FLOPs, memory and rates of ``compiled`` (run in ``row.seconds``) into ``row``."""
  import jax  # pylint: disable=g-import-not-at-top
  from hvt_jax import flops  # pylint: disable=g-import-not-at-top
  row.flops = flops.program_flops(compiled, devices)
  row.flops_lower_bound = " while(" in compiled.as_text()
  row.xla_gib = flops.memory_bytes(compiled) / 2**30
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    row.device_peak_gib = stats["peak_bytes_in_use"] / 2**30
  if math.isfinite(row.seconds) and row.seconds > 0:
    row.tflops_per_sec = row.flops / row.seconds / 1e12
    row.mfu = flops.mfu(row.flops, row.seconds, peak, devices)


def _setup(c: Any, pretrained: bool = False):
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  s = train.setup(c)
  return s, train.init_state(s, pretrained_weights=pretrained)


def measure_train(family: str, c: Any, budget: Budget, peak: float | None) -> Row:
  """The trainer's step on ``c.batch_size`` examples of the synthetic train split."""
  import jax  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  row = Row(family, f"train b={c.batch_size}", c.model.dtype)
  s, state = _setup(c)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                   pipeline.get_view(c.model.name)))
  with jax.set_mesh(s.mesh):
    t = time.perf_counter()
    compiled = train.make_train_step(s).lower(state, batch).compile()
    row.compile_seconds = time.perf_counter() - t
    holder = [state]

    def step():
      holder[0], metrics = compiled(holder[0], batch)
      jax.block_until_ready(metrics)

    row.seconds = _time(step, budget)
  _cost(row, compiled, s.mesh.size, peak)
  return row


def _encodings(c: Any, encode: Any, params: Any, view_name: str, size: int, split: str):
  """``encode`` (jitted ``encode_query`` or ``encode_candidate``) of the first ``size``
  examples of ``split`` through the view (the model's own for ""), in the config's eval
  batches as the evaluators run it, on one device."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  view = pipeline.get_view(c.model.name, view_name or None)
  c = c.copy_and_resolve_references()
  c.eval_batch_size = min(size, c.eval_batch_size)
  ds, _, _ = pipeline.eval_dataset(c, split, view)
  parts = []
  for batch in ds.as_numpy_iterator():
    batch = {k: v for k, v in batch.items() if k not in view.host_only}
    parts.append(encode(params, jax.device_put(batch, jax.devices()[0])))
    if len(parts) * c.eval_batch_size >= size:
      break
  return jax.tree.map(lambda *x: jnp.concatenate(x)[:size], *parts)


def measure_score(family: str, c: Any, blocks: tuple[int, int], budget: Budget,
                  peak: float | None) -> Row:
  """``score`` on a (query block, candidate block) of encodings, on one device."""
  import jax  # pylint: disable=g-import-not-at-top
  from hvt_jax import families  # pylint: disable=g-import-not-at-top
  from hvt_jax.models import base  # pylint: disable=g-import-not-at-top
  bq, bc = blocks
  row = Row(family, f"score {bq}x{bc}", c.model.dtype)
  c = c.copy_and_resolve_references()
  c.mesh_devices = 1
  s, state = _setup(c)
  preds = base.PredictFns(s.graphdef, families.model_class(c.model.name).PREDICT_FNS)
  params = jax.device_put(state["params"], jax.devices()[0])
  split = next(e.split for e in c.evals.values() if "split" in e)
  qv, cv = BENCHES[family].views
  queries = _encodings(c, jax.jit(preds["encode_query"]), params, qv, bq, split)
  cands = _encodings(c, jax.jit(preds["encode_candidate"]), params, cv, bc, split)
  t = time.perf_counter()
  compiled = jax.jit(preds["score"]).lower(params, queries, cands).compile()
  row.compile_seconds = time.perf_counter() - t
  row.seconds = _time(lambda: jax.block_until_ready(compiled(params, queries, cands)), budget)
  _cost(row, compiled, 1, peak)
  row.pairs_per_sec = bq * bc / row.seconds
  row.corpus_seconds = {k: n / row.pairs_per_sec for k, n in CORPORA.items()}
  return row


# ------------------------------------------------------------------ the run


def _error(e: BaseException) -> str:
  text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
  return text[:160]


def run(args: argparse.Namespace) -> list[Row]:
  """Every requested (family, dtype, train | score) measurement, within the budget."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import towers  # pylint: disable=g-import-not-at-top
  from hvt_jax import flops  # pylint: disable=g-import-not-at-top
  budget = Budget(args.budget_minutes)
  kind = jax.devices()[0].device_kind
  names = [f for f in args.families.split(",") if f]
  dtypes = [d for d in args.dtypes.split(",") if d]
  tower_dir = towers.bert_base_dir()
  rows: list[Row] = []
  data: dict[str, str] = {}
  with tempfile.TemporaryDirectory(prefix="accelerator_") as tmp:
    # Round robin: f32 train and score of every family first, then bf16.
    for dtype in dtypes:
      for name in names:
        family, _, only = name.partition(":")
        bench = BENCHES.get(family)
        whats = ["train"] + (["score"] if bench is not None and bench.views else [])
        if only:
          whats = [w for w in whats if w == only] or [only]   # a bad one: its row's error
        for what in whats:
          if budget.left() <= 0:
            rows.append(Row(family, what, dtype, error="skipped: budget spent"))
            continue
          try:
            if bench is not None and (what not in ("train", "score") or
                                      (what == "score" and not bench.views)):
              raise ValueError(f"{name}: {family!r} has no {what!r} measurement (train"
                               f"{', score' if bench.views else ''})")
            c = make_config(family, args.size, dtype, args.devices, tower_dir)
            blocks = tuple(args.blocks or (bench.blocks if args.size == "paper" else (4, 8)))
            if family not in data:   # one dataset per family, enough rows for each block
              need = max(c.batch_size, *blocks)
              data[family] = write_dataset(c, bench.tokenizer, args.size, need,
                                           os.path.join(tmp, family))
            c.input.data_dir = data[family]
            peak = flops.peak_flops(kind, dtype)
            rows.append(measure_train(family, c, budget, peak) if what == "train" else
                        measure_score(family, c, blocks, budget, peak))
          except Exception as e:  # pylint: disable=broad-except
            rows.append(Row(family, what, dtype, error=_error(e)))
          print(format_rows(rows[-1:], header=False), flush=True)
  return rows


def _num(x: float, fmt: str) -> str:
  return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def _duration(seconds: float | None) -> str:
  if seconds is None or not math.isfinite(seconds):
    return "-"
  h, rest = divmod(int(round(seconds)), 3600)
  return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


COLUMNS = ("family", "measurement", "dtype", "s/call", "compile s", "GFLOP", "TFLOP/s", "MFU",
           "XLA GiB", "dev peak GiB", "pairs/s", *CORPORA, "error")


def format_rows(rows: list[Row], header: bool = True) -> str:
  """The table (one line per row; the corpus columns as h:mm:ss on one device)."""
  from hvt_jax import flops  # pylint: disable=g-import-not-at-top
  lines = []
  for r in rows:
    gflop = ("≥" if r.flops_lower_bound else "") + _num(r.flops / 1e9, ".4g")
    lines.append((r.family, r.what, r.dtype, _num(r.seconds, ".4g"),
                  _num(r.compile_seconds, ".1f"), gflop, _num(r.tflops_per_sec, ".3g"),
                  "-" if r.error else flops.format_mfu(r.mfu), _num(r.xla_gib, ".3g"),
                  _num(r.device_peak_gib, ".3g"), _num(r.pairs_per_sec, ".4g"),
                  *(_duration(r.corpus_seconds.get(k)) for k in CORPORA), r.error))
  if header:
    lines.insert(0, COLUMNS)
  widths = [max(len(str(line[i])) for line in lines) for i in range(len(COLUMNS))]
  return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
                   for line in lines)


def main(argv: list[str] | None = None) -> int:
  args = _parse(argv)
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  print(f"jax {jax.__version__}: {len(devices)} x {devices[0].device_kind} "
        f"({devices[0].platform}); size={args.size}, budget {args.budget_minutes} min",
        flush=True)
  rows = run(args)
  print("\n" + format_rows(rows))
  print("s/call: median seconds per call; GFLOP: XLA's count per call (≥: with a while loop, "
        "counted once); MFU: against the device kind's peak (n/a: unknown peak); corpus "
        "columns: score-only time on one device.")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
  return 0 if any(not r.error for r in rows) else 1


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")   # tf.data only: the accelerators are JAX's
  sys.exit(main())
