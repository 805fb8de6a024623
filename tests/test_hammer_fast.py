"""HAMMER/FLAT corpus inference at the FLOP floor (``HAMMER.score`` / ``moment_logprobs``'s
factored path) against the general path (``pair`` on every tiled pair: ``score_general``,
``moment_logprobs_general``), on random weights.

Exact up to float reassociation: every score and start/end log-probability within
``TOL · (1 + |general|)`` (float32; the factored path sums the same products in other
orders), so every ranking (videos per query, moments per pair) is the general path's
wherever neighbouring values differ by more than twice that, and exact duplicates (a
repeated video, a repeated query) tie bit-exactly in the factored path.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.hammer import demo, tvr
from hvt_jax.families.hammer import model as hammer
from hvt_jax.models import layers

TOL = 1e-5
TINY_TEXT = dict(checkpoint="", hidden=32, num_layers=1, num_heads=4, mlp_dim=64,
                 max_positions=64, init_std=0.02, dropout_rate=0.1,
                 attention_dropout_rate=0.1)


def _model(c, dims):
  c.model.mlm_frame = c.model.mlm_clip = False
  meta = {"modalities": dims, "vocab_size": 100}
  cls = hammer.HAMMER if c.model.name == "hammer" else hammer.FLAT
  return cls.create(c, meta, rngs=nnx.Rngs(0))


def _corpus(c, dims, nq, nv, seed=0):
  """Random queries of 3..L words and videos of 1..F frames (the first full, so every
  clip of it is valid; shorter ones have empty clips), ~40 % of the valid frames without a
  subtitle (a zero row, as the view writes it); the last query repeats query 1 and the
  last video video 2."""
  rng = np.random.default_rng(seed)
  f, words = int(c.input.max_frames), int(c.input.max_words)
  tokens = rng.integers(5, 100, (nq, words)).astype(np.int32)
  token_mask = np.arange(words)[None] < rng.integers(3, words + 1, (nq, 1))
  length = rng.integers(1, f + 1, nv)
  length[0] = f
  fm = np.arange(f)[None] < length[:, None]
  vis = sum(dims[m] for m in c.input.modalities)
  videos = {"frames": rng.normal(size=(nv, f, vis)).astype(np.float32) * fm[..., None],
            "frame_mask": fm, "frame_seconds": np.full(nv, 1.5, np.float32),
            "duration": (length * 1.5).astype(np.float32)}
  if c.input.get("subtitle"):
    sub_mask = (rng.random((nv, f)) < 0.6) & fm
    videos.update(subtitle=(rng.normal(size=(nv, f, dims["subtitle"])).astype(np.float32)
                            * sub_mask[..., None]), subtitle_mask=sub_mask)
  queries = {"tokens": tokens, "token_mask": token_mask}
  for tree, src in ((queries, 1), (videos, 2)):
    for k in tree:
      tree[k][-1] = tree[k][src]
  return queries, videos


def _run(c, dims, nq, nv, top_k=5):
  """Both paths on the corpus (one compiled program): scores of every pair, and start/end
  log-probabilities and top moments of nq aligned pairs (query i, video 3i mod nv; the
  last one repeats pair 1 with the repeated query and video)."""
  model = _model(c, dims)
  queries, videos = _corpus(c, dims, nq, nv)
  rows = (3 * np.arange(nq)) % nv
  rows[-1] = nv - 1
  rows[1] = 2
  graphdef, params = nnx.split(model)

  @jax.jit
  def fn(params, queries, videos):
    m = nnx.merge(graphdef, params)
    q, v = m.encode_query(queries), m.encode_candidate(videos)
    va = jax.tree.map(lambda x: x[rows], v)
    lp, lp_general = m.moment_logprobs(q, va), m.moment_logprobs_general(q, va)
    return dict(score=m.score(q, v), score_general=m.score_general(q, v), lp=lp,
                lp_general=lp_general, moments=m.localize(q, va, top_k),
                moments_general=m.top_moments(lp_general, va, top_k))

  return jax.tree.map(np.asarray, fn(params, queries, videos))


def _assert_close(fast, general):
  """|fast - general| <= TOL (1 + |general|); -inf (padding frames) at the same places."""
  assert fast.shape == general.shape and np.isfinite(general).any()
  np.testing.assert_array_equal(np.isneginf(fast), np.isneginf(general))
  ok = np.isfinite(general)
  err = np.abs(fast[ok] - general[ok]) / (1 + np.abs(general[ok]))
  assert err.max() <= TOL, err.max()


def _assert_same_order(fast, general):
  """Per row: whenever two general values differ by more than twice the tolerance, the fast
  values are in the same order (so its ranking and top-K are the general path's up to
  near-ties)."""
  compared = 0
  for f, g in zip(fast, general):
    ok = np.isfinite(g)
    f, g = f[ok], g[ok]
    tol = TOL * (1 + np.abs(g))
    apart = g[:, None] - g[None, :] > tol[:, None] + tol[None, :]
    assert (f[:, None] > f[None, :])[apart].all()
    compared += apart.sum()
  return compared


def _check(r):
  _assert_close(r["score"], r["score_general"])
  assert np.ptp(r["score_general"]) > 100 * TOL           # a ranking to compare
  # (per query: FLAT's "tcls" head without the cross-modal layer is the query's alone)
  _assert_same_order(r["score"], r["score_general"])
  for k in ("start", "end"):
    _assert_close(r["lp"][k], r["lp_general"][k])
    assert _assert_same_order(r["lp"][k], r["lp_general"][k]) > 0
  # Top moments: the same (start, end) wherever the scores are apart, scores within TOL.
  got, want = r["moments"], r["moments_general"]
  _assert_close(got[..., 2], want[..., 2])
  apart = np.abs(np.diff(want[..., 2], axis=1)) > 4 * TOL * (1 + np.abs(want[..., 1:, 2]))
  unique = np.concatenate([apart[:, :1], apart[:, 1:] & apart[:, :-1], apart[:, -1:]], 1)
  np.testing.assert_array_equal(got[..., :2][unique], want[..., :2][unique])
  # Exact duplicates tie bit-exactly: the last query is query 1, the last video video 2,
  # and the last aligned pair repeats pair 1.
  s = r["score"]
  np.testing.assert_array_equal(s[:, -1], s[:, 2])
  np.testing.assert_array_equal(s[-1], s[1])
  for k in ("start", "end"):
    np.testing.assert_array_equal(r["lp"][k][-1], r["lp"][k][1])
  np.testing.assert_array_equal(r["moments"][-1], r["moments"][1])


TVR_DIMS = {"i3d": 1024, "resnet": 2048, "subtitle": 768}


def test_hammer_at_tvr_shapes_equals_the_general_path():
  """TVR's shapes (96 frames in clips of 16, 32 words, I3D+ResNet and ASR streams) with a
  small random tower, 16 queries x 32 videos."""
  c = tvr.get_config("model=hammer")
  c.model.text = dict(TINY_TEXT)
  c.model.init_std = 0.2                  # spread scores: rankings worth comparing
  r = _run(c, TVR_DIMS, 16, 32)
  assert r["score"].shape == (16, 32) and r["lp"]["start"].shape == (16, 96)
  _check(r)


SMALL_DIMS = {"i3d": 6, "resnet": 5, "subtitle": 7}
OPTIONS = [
    ("hammer", {"frame_scope": "video", "share_encoders": True, "asr_missing": "mask",
                "query_stacks": "shared", "clip_position": False}),
    ("hammer", {"cross_modal": False, "tl_head": "boundary"}),
    ("flat", {"flat_vr_head": "cls", "asr_missing": "mask"}),
    ("flat", {"flat_vr_head": "max_frame"}),
    ("flat", {"flat_vr_head": "tcls"}),
    ("flat", {"flat_vr_head": "tcls", "cross_modal": False}),
]


@pytest.mark.parametrize("name,options", OPTIONS,
                         ids=[f"{n}:" + ",".join(f"{k}={v}" for k, v in o.items())
                              for n, o in OPTIONS])
def test_every_option_equals_the_general_path(name, options):
  """Every option that changes what VR / TL read (TVR's runlocal sizes: 16 frames in
  clips of 4, 12 words, both streams), 6 queries x 8 videos."""
  c = tvr.get_config(f"runlocal,model={name}")
  c.model.update(options, init_std=0.2)
  r = _run(c, SMALL_DIMS, 6, 8)
  _check(r)


def test_clip_query_frame_takes_the_general_path_and_says_so(caplog):
  """clip_query="frame" reads every row of Φ's grounded query: ``score`` and
  ``moment_logprobs`` are ``pair``'s (traced only: the same function), and the log says
  why."""
  c = tvr.get_config("runlocal,model=hammer")
  c.model.update(clip_query="frame", query_stacks="shared")
  model = _model(c, SMALL_DIMS)
  queries, videos = _corpus(c, SMALL_DIMS, 2, 3)

  def fns(queries, videos):
    q, v = model.encode_query(queries), model.encode_candidate(videos)
    va = jax.tree.map(lambda x: x[:2], v)
    return (model.score(q, v), model.score_general(q, v), model.moment_logprobs(q, va),
            model.moment_logprobs_general(q, va))

  with caplog.at_level(logging.INFO):
    fast, general, lp, lp_general = jax.make_jaxpr(fns, return_shape=True)(
        queries, videos)[1]
  assert fast == general and lp == lp_general
  said = [rec.getMessage() for rec in caplog.records if "general path" in rec.getMessage()]
  assert len(said) == 2, said
  assert said[0].startswith("HAMMER.score:") and "clip_query='frame'" in said[0]
  assert said[1].startswith("HAMMER.moment_logprobs:")
  c.model.update(clip_query="text", query_stacks="per_encoder")
  assert _model(c, SMALL_DIMS).general_reason is None


def test_demo_model_equals_the_general_path():
  """configs/hammer/demo.py as trained by hvt-demo (width 64, 32 frames in clips of 8)."""
  c = demo.get_config()
  c.model.init_std = 0.2
  r = _run(c, {"frames": 16}, 6, 10)
  _check(r)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_cross_pairs_is_the_block_on_every_tiled_pair(dtype, tol):
  """TransformerBlock.cross_pairs over a (query, video) grid = the block called on each
  pair's rows (post-LN and pre-LN; float32 and bfloat16 matmuls); evaluation only."""
  rng = np.random.default_rng(0)
  for pre_ln in (False, True):
    cfg = layers.TransformerConfig(embed_dim=8, num_heads=2, mlp_dim=16, kv_dim=12,
                                   pre_ln=pre_ln, dtype=dtype, init_std=0.3)
    block = layers.TransformerBlock(cfg, rngs=nnx.Rngs(0))
    x = rng.normal(size=(1, 5, 3, 8)).astype(np.float32)           # per video
    kv = rng.normal(size=(4, 1, 6, 12)).astype(np.float32)         # per query
    mask = np.arange(6)[None, None] < np.array([6, 2, 1, 4])[:, None, None]

    @nnx.jit
    def both(block, x, kv, mask):
      tiled = block(jnp.broadcast_to(x, (4, 5, 3, 8)).reshape(20, 3, 8),
                    jnp.repeat(mask[:, 0], 5, axis=0), train=False,
                    kv=jnp.repeat(kv[:, 0], 5, axis=0))
      return block.cross_pairs(x, kv, mask), tiled.reshape(4, 5, 3, 8)

    got, want = both(block, x, kv, mask)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
  with pytest.raises(ValueError, match="evaluation-only"):
    block.cross_pairs(x, kv, mask, train=True)
