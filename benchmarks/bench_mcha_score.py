"""MCHA's local alignment (Eq. 3-8) at corpus scale: the fast path vs the direct formula.

Paper sizes: d_uni 1024, l = 30 words, n = 7 experts, K = 3 steps. The *direct* path is
Eq. 3-8 as printed, run per (text, video) pair: F_g, F_o applied to the concatenation
[w_i, a_i] (a [l, 2d] x [2d, d] matmul each, every step). The *fast* path is
``MCHA.local_score`` on the one-sided encodings (``encode_query``/``encode_candidate``):
the word half of F_g/F_o at step 1 and the video half applied to V_rep are computed once per
text / video; per pair remain the α-mixing and, from step 2 on, the word half.

Printed: FLOPs of one Q x N block from XLA's cost analysis (``compiled.cost_analysis()``;
compiled only, not run) at the given size (200 x 200 by default), measured pairs/s on a
smaller block (timing 40k direct pairs would take minutes on 2 cores), and the
extrapolation to 1k x 1k, for both ``lam_word_states`` ("updated": Eq. 8 as printed, K-1
per-pair word projections; "input": IMRAM's states, K-2).

Then, caption padding cut per block (``scorer.TokenTrim``, the retrieval evaluator's
``trim_tokens``): captions of 2 + Poisson(``--mean-words``) tokens (at least 3) padded to
l, ranked against videos by ``scorer.rank_corpus`` with the fast path, before (padded) and
after (each query block cut to its longest caption, rounded up to 8; queries sorted by
length): XLA's FLOPs of the pass (cost analysis of each block shape x the blocks run), the
measured pairs/s of both runs (after a warm-up run each, same inputs, same process) and
the largest score difference (ranks and top-10 must be identical).

    python benchmarks/bench_mcha_score.py [--size 200] [--time-block 16 32] [--reps 3]
        [--trim-queries 64] [--trim-videos 32] [--trim-block 16 32] [--mean-words 9]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hvt_jax import losses, sharding
from hvt_jax.evaluation import scorer
from hvt_jax.models import text
from hvt_jax.families.mcha import model as mcha


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", type=int, default=200, help="Q = N for the FLOP count")
  p.add_argument("--time-block", type=int, nargs=2, default=[16, 32], help="Bq Bc timed")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--d", type=int, default=1024)
  p.add_argument("--words", type=int, default=30)
  p.add_argument("--experts", type=int, default=7)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--trim-queries", type=int, default=64, help="captions ranked (trim part)")
  p.add_argument("--trim-videos", type=int, default=32)
  p.add_argument("--trim-block", type=int, nargs=2, default=[16, 32],
                 help="query_block cand_block of the trim part")
  p.add_argument("--mean-words", type=float, default=9.0, help="mean real tokens - 2")
  return p.parse_args()


def direct_lam(words, wmask, rep, avail, wg, bg, wo, bo, steps, lam=9.0, eps=1e-8,
               states="updated"):
  """Eq. 3-8 for one pair: words [l, d], rep [n, d], wg/wo [2d, d] (concatenated F)."""
  unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  w, total = words, 0.0
  for _ in range(steps):
    s = unit(w) @ unit(rep).T
    r = jnp.where(wmask[:, None], jax.nn.relu(s), 0.0)
    sbar = r / (jnp.sqrt(jnp.sum(r * r, axis=0, keepdims=True)) + eps)
    alpha = jax.nn.softmax(jnp.where(avail[None], lam * sbar, -1e30), axis=-1)
    a = alpha @ rep
    wa = jnp.concatenate([w, a], axis=-1)
    g = jax.nn.sigmoid(wa @ wg + bg)
    o = jnp.tanh(wa @ wo + bo)
    new = g * w + (1.0 - g) * o
    state = new if states == "updated" else w
    total += jnp.sum(jnp.where(wmask, jnp.sum(unit(state) * unit(a), -1), 0.0))
    w = new
  return total


def main():
  args = _parse()
  d, l, n = args.d, args.words, args.experts
  tower = text.TextConfig(**{k: v for k, v in text.RUNLOCAL.items() if k != "checkpoint"},
                          vocab_size=64)
  rng = np.random.default_rng(0)
  print(f"devices: {jax.devices()}; d={d} l={l} n={n} K={args.steps}")
  for states in ("updated", "input"):
    cfg = mcha.MCHAConfig(experts=tuple(f"e{j}" for j in range(n)), expert_dims=(8,) * n,
                          text=tower, d_uni=d, num_layers=1, num_heads=4, mlp_dim=64,
                          hrm=False, score="local", lam_steps=args.steps,
                          lam_word_states=states)
    model = nnx.eval_shape(lambda: mcha.MCHA(cfg, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.03, x.shape), x.dtype), params)
    gw, ga = params["gate_w"]["kernel"][...], params["gate_a"]["kernel"][...]
    fw, fa = params["fuse_w"]["kernel"][...], params["fuse_a"]["kernel"][...]
    wg, wo = jnp.concatenate([gw, ga]), jnp.concatenate([fw, fa])
    bg, bo = params["gate_w"]["bias"][...], params["fuse_w"]["bias"][...]

    def encodings(q, c):
      words = jnp.asarray(rng.normal(size=(q, l, d)), jnp.float32)
      wmask = jnp.ones((q, l), bool)
      rep = jnp.asarray(rng.normal(size=(c, n, d)), jnp.float32)
      avail = jnp.ones((c, n), bool)
      return words, wmask, rep, avail

    def fast(p, words, wmask, rep, avail):
      m = nnx.merge(graphdef, p)
      qe = {"words": words, "word_mask": wmask, "gate_w": m.gate_w(words),
            "fuse_w": m.fuse_w(words)}
      ce = {"rep": rep, "rep_unit": losses.unit(rep), "avail": avail,
            "gate_v": m.gate_a(rep), "fuse_v": m.fuse_a(rep)}
      return m.local_score(qe, ce)

    def fast_pairs(p, qe, ce):
      return nnx.merge(graphdef, p).local_score(qe, ce)

    def direct(words, wmask, rep, avail):
      one = lambda w, m, r, a: direct_lam(w, m, r, a, wg, bg, wo, bo, args.steps,
                                          states=states)
      over_c = jax.vmap(one, in_axes=(None, None, 0, 0))
      return jax.vmap(over_c, in_axes=(0, 0, None, None))(words, wmask, rep, avail)

    size = args.size
    enc = encodings(size, size)
    pm = nnx.merge(graphdef, params)
    qe = {"words": enc[0], "word_mask": enc[1], "gate_w": pm.gate_w(enc[0]),
          "fuse_w": pm.fuse_w(enc[0])}
    ce = {"rep": enc[2], "rep_unit": losses.unit(enc[2]), "avail": enc[3],
          "gate_v": pm.gate_a(enc[2]), "fuse_v": pm.fuse_a(enc[2])}
    flops = {
        "fast (pairwise part)": jax.jit(fast_pairs).lower(params, qe, ce).compile()
        .cost_analysis()["flops"],
        "fast (incl. one-sided)": jax.jit(fast).lower(params, *enc).compile()
        .cost_analysis()["flops"],
        "direct": jax.jit(direct).lower(*enc).compile().cost_analysis()["flops"]}
    bq, bc = args.time_block
    small = encodings(bq, bc)
    rates = {}
    with jax.default_matmul_precision("highest"):
      for name, fn, fargs in (("fast (incl. one-sided)", jax.jit(fast), (params, *small)),
                              ("direct", jax.jit(direct), small)):
        jax.block_until_ready(fn(*fargs))   # compile
        t = time.perf_counter()
        for _ in range(args.reps):
          jax.block_until_ready(fn(*fargs))
        rates[name] = args.reps * bq * bc / (time.perf_counter() - t)
      got = np.asarray(jax.jit(fast)(params, *small))
      want = np.asarray(jax.jit(direct)(*small))
    err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
    print(f"\nlam_word_states={states!r}: fast vs direct max rel. diff {err:.1e}")
    pairs = size * size
    print(f"  FLOPs at {size}x{size} ({pairs} pairs), per pair, and 1k x 1k extrapolated:")
    for name, f in flops.items():
      print(f"    {name:24s} {f:.3e}  {f / pairs:.3e}/pair  1k x 1k: {f / pairs * 1e6:.2e}")
    print(f"    direct / fast (incl. one-sided): "
          f"{flops['direct'] / flops['fast (incl. one-sided)']:.2f}x fewer FLOPs")
    for name, r in rates.items():
      print(f"  {name:24s} {r:9.1f} pairs/s ({bq}x{bc} block)  1k x 1k: {1e6 / r:8.1f} s")
    trim_gain(args, graphdef, params, rng)


def trim_gain(args, graphdef, params, rng):
  """Padded vs cut captions through ``scorer.rank_corpus`` (module docstring)."""
  d, l, n = args.d, args.words, args.experts
  nq, nv = args.trim_queries, args.trim_videos
  qb, cb = args.trim_block
  m = nnx.merge(graphdef, params)
  tokens = np.clip(2 + rng.poisson(args.mean_words, nq), 3, l)
  pos = np.arange(l)[None]
  wmask = (pos > 0) & (pos < tokens[:, None] - 1)          # LAM words: no [CLS], [SEP]
  words = np.where(wmask[..., None], rng.normal(size=(nq, l, d)), 0.0).astype(np.float32)
  query = {"words": words, "word_mask": wmask,
           "gate_w": np.asarray(m.gate_w(words)), "fuse_w": np.asarray(m.fuse_w(words))}
  rep = jnp.asarray(rng.normal(size=(nv, n, d)), jnp.float32)
  cand = jax.device_get({"rep": rep, "rep_unit": losses.unit(rep),
                         "avail": jnp.ones((nv, n), bool), "gate_v": m.gate_a(rep),
                         "fuse_v": m.fuse_a(rep)})
  trim = scorer.TokenTrim("word_mask", ("words", "gate_w", "fuse_w"))

  def score(q, c, p):
    return nnx.merge(graphdef, p).local_score(q, c)

  # FLOPs: each query block's shape x the candidate blocks it meets.
  lengths = trim.lengths(query)
  ordered = np.sort(lengths)
  widths = [min(l, -(-int(ordered[i:i + qb].max()) // 8) * 8) for i in range(0, nq, qb)]
  cost = {}
  for w in set(widths) | {l}:
    q = trim.cut(jax.tree.map(lambda x: x[:qb], query), w)
    c = jax.tree.map(lambda x: x[:cb], cand)
    cost[w] = jax.jit(score).lower(q, c, params).compile().cost_analysis()["flops"]
  cand_blocks = -(-nv // cb)
  flops = {"padded": len(widths) * cand_blocks * cost[l],
           "cut": sum(cost[w] for w in widths) * cand_blocks}
  mesh = sharding.make_mesh(num_devices=1)
  runs, rates = {}, {}
  with jax.default_matmul_precision("highest"), jax.set_mesh(mesh):
    for name, t in (("padded", None), ("cut", trim)):
      kw = dict(mesh=mesh, params=params, top_k=min(10, nv), query_block=qb, cand_block=cb,
                trim=t)
      scorer.rank_corpus(query, cand, np.arange(nq) % nv, score, **kw)   # compiles
      start = time.perf_counter()
      runs[name] = scorer.rank_corpus(query, cand, np.arange(nq) % nv, score, **kw)
      rates[name] = nq * nv / (time.perf_counter() - start)
  a, b = runs["padded"], runs["cut"]
  same = (np.array_equal(a.ranks, b.ranks) and np.array_equal(a.top_indices, b.top_indices))
  print(f"  captions cut per block ({nq} x {nv}, blocks {qb} x {cb}; real tokens mean "
        f"{tokens.mean():.1f}, max {tokens.max()}, padded to {l}; block widths {widths}):")
  for name in ("padded", "cut"):
    print(f"    {name:7s} {flops[name]:.3e} FLOP ({flops[name] / (nq * nv):.3e}/pair)  "
          f"{rates[name]:8.1f} pairs/s")
  print(f"    cut / padded: {flops['padded'] / flops['cut']:.2f}x fewer FLOPs, "
        f"{rates['cut'] / rates['padded']:.2f}x pairs/s; ranks and top-10 identical: {same}; "
        f"max |score diff| {np.abs(a.top_scores - b.top_scores).max():.1e}")


if __name__ == "__main__":
  main()
