"""MCHA's caption padding cut per block of captions (``scorer.TokenTrim``): same ranks and
top-K, scores within float32 reassociation (the local score's sums over words and its
per-word matmuls run over a shorter axis), and bit-identical for the holistic score
(no token axis). The MCHA configs' evaluator with both: tests/test_mcha.py."""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import mcha as mcha_configs
from hvt_jax import sharding
from hvt_jax.evaluation import corpus, scorer
from hvt_jax.families.mcha import model as mcha
from hvt_jax.models import base, text

EXPERTS, DIMS = ("a", "b", "c"), (5, 7, 3)
Q, L, N, F = 24, 30, 16, 6


def _encodings(states: str, score: str):
  tower = text.TextConfig(**{k: v for k, v in text.RUNLOCAL.items() if k != "checkpoint"},
                          vocab_size=50)
  cfg = mcha.MCHAConfig(experts=EXPERTS, expert_dims=DIMS, text=tower, d_uni=16,
                        num_heads=2, mlp_dim=32, score=score, score_local_weight=1.0,
                        lam_word_states=states)
  graphdef, params = nnx.split(mcha.MCHA(cfg, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 11, Q)      # captions of 1-8 words padded to 30 tokens
  lengths[7] = L
  texts = {"tokens": rng.integers(5, 50, (Q, L)).astype(np.int32),
           "token_mask": np.arange(L)[None] < lengths[:, None]}
  videos = {"expert_mask": np.ones((N, 3), bool)}
  videos["expert_mask"][1, 1] = False
  for e, d in zip(EXPERTS, DIMS):
    videos[f"{e}_features"] = rng.normal(size=(N, F, d)).astype(np.float32)
    videos[f"{e}_mask"] = np.arange(F)[None] < rng.integers(1, F + 1, size=(N, 1))
    videos[f"{e}_time"] = rng.integers(1, 40, (N, F)).astype(np.int32)
    videos[f"{e}_pool"] = rng.normal(size=(N, d)).astype(np.float32)
  preds = base.PredictFns(graphdef, mcha.MCHA.PREDICT_FNS)
  query = jax.device_get(jax.jit(preds["encode_query"])(params, texts))
  cand = jax.device_get(jax.jit(preds["encode_candidate"])(params, videos))
  return preds, params, query, cand, lengths


@pytest.mark.parametrize("states, score, devices", [
    ("input", "sum", (1,)), ("updated", "local", (1,)), ("input", "holistic", (8,))])
def test_trimmed_captions_rank_as_padded(states, score, devices):
  preds, params, query, cand, lengths = _encodings(states, score)
  trim = scorer.TokenTrim(mcha_configs.TRIM_TOKENS[0], mcha_configs.TRIM_TOKENS[1:])
  # LAM words: the real tokens but [CLS] and [SEP].
  np.testing.assert_array_equal(trim.lengths(query), lengths - 1)
  fn = corpus.score_fn(preds["score"], False)
  targets = np.arange(Q) % N
  for d in devices:
    mesh = sharding.make_mesh(num_devices=d)
    kw = dict(mesh=mesh, params=params, top_k=5, query_block=2, cand_block=8)
    with jax.set_mesh(mesh):
      full = scorer.rank_corpus(query, cand, targets, fn, **kw)
      cut = scorer.rank_corpus(query, cand, targets, fn, trim=trim, **kw)
    np.testing.assert_array_equal(cut.ranks, full.ranks)
    np.testing.assert_array_equal(cut.top_indices, full.top_indices)
    if score == "holistic":
      np.testing.assert_array_equal(cut.top_scores, full.top_scores)
    else:   # measured: at most 2.2e-6 on scores up to ~40 (a few float32 ulp)
      np.testing.assert_allclose(cut.top_scores, full.top_scores, rtol=1e-6, atol=1e-6)
  # The padding matters nowhere: a block cut to 8 tokens scores its short captions as the
  # full width does.
  short = lengths - 1 <= 8
  got = np.asarray(jax.jit(preds["score"])(params, trim.cut(query, 8), cand))
  want = np.asarray(jax.jit(preds["score"])(params, query, cand))
  np.testing.assert_allclose(got[short], want[short], rtol=1e-6, atol=1e-6)
