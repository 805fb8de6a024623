"""MCHA: each equation against a NumPy transcription, missing-expert masking, the views, the
retrieval protocol, 1 vs 8 devices, and train + eval through the console scripts.

Budget (cold, no compilation cache): the trainer-level tests share one dataset and one
step per mesh (module fixtures), and the console scripts run on the same 8 simulated
devices with the same config and the session's compilation cache, so they reuse the
programs compiled in process instead of compiling their own."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from flax import nnx

from configs import mcha as mcha_configs
from configs.mcha import demo as demo_config
from hvt_jax import train
from hvt_jax.evaluation import retrieval
from hvt_jax.evaluation import evaluators
from hvt_jax.cli import prepare
from hvt_jax.input import pipeline
from hvt_jax.families.mcha import view as mcha_view
from hvt_jax.models import text
from hvt_jax.families.mcha import model as mcha

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERTS = ("a", "b", "c")
DIMS = (5, 7, 3)


_BASE: list[mcha.MCHA] = []


def _model(**kw) -> mcha.MCHA:
  """The tiny test model with ``kw`` options; they change no parameter, so its weights
  are initialised once per module and copied."""
  if not _BASE:
    tower = text.TextConfig(**{k: v for k, v in text.RUNLOCAL.items() if k != "checkpoint"},
                            vocab_size=50)
    cfg = mcha.MCHAConfig(experts=EXPERTS, expert_dims=DIMS, text=tower, d_uni=16,
                          num_heads=2, mlp_dim=32)
    _BASE.append(mcha.MCHA(cfg, rngs=nnx.Rngs(0)))
  model = nnx.clone(_BASE[0])
  model.cfg = dataclasses.replace(_BASE[0].cfg, **kw)
  return model


def _batch(b=4, f=6, l=9, seed=0) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  batch = {}
  for e, d in zip(EXPERTS, DIMS):
    batch[f"{e}_features"] = rng.normal(size=(b, f, d)).astype(np.float32)
    batch[f"{e}_mask"] = np.arange(f)[None] < rng.integers(1, f + 1, size=(b, 1))
    batch[f"{e}_time"] = rng.integers(1, 40, (b, f)).astype(np.int32)
    batch[f"{e}_pool"] = rng.normal(size=(b, d)).astype(np.float32)
  batch["expert_mask"] = np.ones((b, len(EXPERTS)), bool)
  batch["expert_mask"][1, 1] = batch["expert_mask"][2, 0] = False
  batch["tokens"] = rng.integers(5, 50, (b, l)).astype(np.int32)
  batch["token_mask"] = np.arange(l)[None] < np.asarray([l, 5, 3, 7][:b])[:, None]
  batch["example_mask"] = np.ones(b, bool)
  batch["video_index"] = np.arange(b, dtype=np.int32)
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _encode(model, batch):
  """(encode_query, encode_candidate) as one jitted program (cheaper than op by op)."""
  return jax.jit(lambda b: (model.encode_query(b), model.encode_candidate(b)))(batch)


def _np(x):
  return np.asarray(x, np.float64)


def _cos(x, y):
  return x @ y / (max(np.linalg.norm(x), 1e-12) * max(np.linalg.norm(y), 1e-12))


def numpy_lam(words, rep, avail, wg, bg, wo, bo, *, steps, lam, eps, states, reduce):
  """Eq. 3-8 for one (text, video) pair, as printed (F_g, F_o on the concatenation).

  words [l, d] (valid words only), rep [n, d], avail [n] bool, wg/wo [2d, d], bg/bo [d].
  """
  w, total = words.copy(), 0.0
  for _ in range(steps):
    s = np.array([[_cos(wi, mj) for mj in rep] for wi in w])                  # Eq. 3
    r = np.maximum(s, 0.0)
    sbar = r / (np.sqrt((r ** 2).sum(axis=0, keepdims=True)) + eps)           # Eq. 4
    logits = np.where(avail[None], lam * sbar, -np.inf)
    alpha = np.exp(logits - logits.max(axis=1, keepdims=True))
    alpha /= alpha.sum(axis=1, keepdims=True)                                 # Eq. 5
    a = alpha @ rep
    wa = np.concatenate([w, a], axis=1)
    g = 1.0 / (1.0 + np.exp(-(wa @ wg + bg)))                                 # Eq. 6
    o = np.tanh(wa @ wo + bo)
    new = g * w + (1.0 - g) * o
    state = new if states == "updated" else w
    cos = np.array([_cos(x, y) for x, y in zip(state, a)])                    # Eq. 8
    total += cos.sum() if reduce == "sum" else cos.mean()
    w = new                                                                   # Eq. 7
  return total


def _kernels(model):
  p = lambda lin: _np(lin.kernel[...])
  wg = np.concatenate([p(model.gate_w), p(model.gate_a)])
  wo = np.concatenate([p(model.fuse_w), p(model.fuse_a)])
  return wg, _np(model.gate_w.bias[...]), wo, _np(model.fuse_w.bias[...])


@pytest.mark.parametrize("steps,states,reduce", [(3, "updated", "sum"), (2, "input", "mean"),
                                                 (1, "updated", "mean")])
def test_fast_lam_equals_numpy_eq_3_to_8(steps, states, reduce):
  """The fast pairwise path (one-sided parts hoisted) equals Eq. 3-8 per pair."""
  model = _model(lam_steps=steps, lam_word_states=states, lam_word_reduce=reduce)
  batch = _batch()
  q, c = _encode(model, batch)
  with jax.default_matmul_precision("highest"):
    fast = np.asarray(jax.jit(model.local_score)(q, c))
  wg, bg, wo, bo = _kernels(model)
  wmask = np.asarray(q["word_mask"])
  # [CLS] and [SEP] are not words; row 2 has 3 tokens: [CLS] w [SEP].
  assert wmask.sum(axis=1).tolist() == [7, 3, 1, 5]
  for i in range(4):
    for j in range(4):
      want = numpy_lam(_np(q["words"][i])[wmask[i]], _np(c["rep"][j]),
                       np.asarray(c["avail"][j]), wg, bg, wo, bo, steps=steps, lam=9.0,
                       eps=1e-8, states=states, reduce=reduce)
      np.testing.assert_allclose(fast[i, j], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep_missing", [True, False])
def test_holistic_score_and_gated_embedding_equal_numpy_eq_10_11(keep_missing):
  """Eq. 10 (Miech et al.'s gated embedding unit: no BatchNorm) and S^h = Σ_j w_j cos_j with
  MMT's text-derived weights: kept for a missing expert (``keep_missing_modalities``, MMT's
  default) or zeroed and renormalised over the available ones."""
  model = _model(keep_missing_modalities=keep_missing)
  batch = _batch()
  q, c = _encode(model, batch)
  cls = _np(jax.jit(lambda b: model.text(b["tokens"], b["token_mask"], train=False).cls)(
      batch))
  for j, geu in enumerate(model.text_geu):                                  # Eq. 10 (GEU)
    y = cls @ _np(geu.fc.kernel[...]) + _np(geu.fc.bias[...])
    y = y / (1.0 + np.exp(-(y @ _np(geu.gate.kernel[...]) + _np(geu.gate.bias[...]))))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(q["text_holistic"][:, j], y, rtol=1e-5, atol=1e-6)
  logits = cls @ _np(model.weights_fc.kernel[...]) + _np(model.weights_fc.bias[...])
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  with jax.default_matmul_precision("highest"):
    got = np.asarray(jax.jit(model.holistic_score)(q, c))
  avail = np.asarray(c["avail"])
  assert not avail.all()
  for i in range(4):
    for k in range(4):
      w = probs[i] if keep_missing else probs[i] * avail[k] / (probs[i] * avail[k]).sum()
      want = sum(w[j] * _cos(_np(q["text_holistic"][i, j]), _np(c["holistic"][k, j]))
                 for j in range(3))
      np.testing.assert_allclose(got[i, k], want, rtol=1e-5, atol=1e-6)


def _numpy_hinge(sim, margin, hardest, reduce):
  """Eq. 12 (all negatives) / Eq. 9 (hardest negative) on [B, B], rows texts."""
  b = sim.shape[0]
  terms_t = [[max(0.0, margin - sim[i, i] + sim[i, k]) for k in range(b) if k != i]
             for i in range(b)]                      # text i, negative video k
  terms_v = [[max(0.0, margin - sim[i, i] + sim[k, i]) for k in range(b) if k != i]
             for i in range(b)]                      # video i, negative text k
  if hardest:
    terms_t, terms_v = [[max(t)] for t in terms_t], [[max(t)] for t in terms_v]
  flat = [x for t in terms_t + terms_v for x in t]
  return sum(flat) if reduce == "sum" else sum(flat) / len(flat)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_loss_equals_numpy_eq_9_12_13(reduce):
  rng = np.random.default_rng(1)
  hol, loc = rng.normal(size=(5, 5)), rng.normal(size=(5, 5)) * 3
  cfg = ml_collections.ConfigDict(dict(margin_mar=0.05, margin_tri=0.2, beta=1e-4,
                                       reduce=reduce))
  batch = {"example_mask": jnp.ones(5, bool), "video_index": jnp.arange(5)}
  total, terms = _model().loss({"holistic": jnp.asarray(hol), "local": jnp.asarray(loc)},
                               batch, cfg)
  mar, tri = _numpy_hinge(hol, 0.05, False, reduce), _numpy_hinge(loc, 0.2, True, reduce)
  np.testing.assert_allclose(terms["mar"], mar, rtol=1e-5)
  np.testing.assert_allclose(terms["tri"], tri, rtol=1e-5)
  np.testing.assert_allclose(total, mar + 1e-4 * tri, rtol=1e-5)


@pytest.mark.parametrize("keep_missing", [True, False])
def test_missing_expert_is_masked_everywhere(keep_missing):
  """Video 1 lacks expert "b": whatever its slot holds (zeros, huge values, NaN), its
  scores are bit-identical; that expert's holistic weight is the text's own (MMT's
  ``keep_missing_modalities``, the default) or exactly 0 (``False``)."""
  model = _model(score="sum", score_local_weight=0.5, keep_missing_modalities=keep_missing)
  batch = _batch()
  q = jax.jit(model.encode_query)(batch)
  score = jax.jit(lambda b: model.score(q, model.encode_candidate(b)))
  weight = jax.jit(lambda b: model(b, train=True, rngs=jax.random.key(3))["modality_weights"])
  scores, weights = [], []
  for fill in (0.0, 1e6, np.nan):
    b = dict(batch)
    for key in ("b_features", "b_pool"):
      b[key] = batch[key].at[1].set(fill)
    b["b_mask"] = batch["b_mask"].at[1].set(fill == 0.0)
    scores.append(np.asarray(score(b)))
    weights.append(np.asarray(weight(b)))
  for s in scores[1:]:
    np.testing.assert_array_equal(s[:, 1], scores[0][:, 1])
  assert np.isfinite(scores[0]).all()
  for w in weights:
    missing = np.array([w[1, 1], w[2, 0]])
    assert ((missing > 0) if keep_missing else (missing == 0.0)).all() and (w[0] > 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(w, weights[0])


def _record(num_rows=(10, 4, 0)):
  rng = np.random.default_rng(0)
  ex = {}
  for e, n, d in zip(EXPERTS, num_rows, DIMS):
    r = np.arange(n, dtype=np.float32) * 1.5
    ex[f"features/{e}"] = tf.constant(rng.normal(size=(n, d)).astype(np.float32))
    ex[f"timestamps/{e}"] = tf.constant(np.stack([r, r + 1.5], 1).reshape(n, 2))
  ex["tokens"] = tf.ragged.constant([[7, 8, 9], [10], [11, 12, 13, 14, 15, 16, 17]])
  cfg = ml_collections.ConfigDict(dict(
      experts=EXPERTS, max_feature_tokens=4, untimed_experts=("b",), max_words=6,
      paragraph=False, special_ids=dict(pad=0, cls=2, sep=3)))
  return ex, cfg


def test_views_subsample_pool_time_and_caption():
  ex, cfg = _record()
  feats = ex["features/a"].numpy()
  ev = mcha_view.video_view(ex, cfg)
  # MMT's evaluation rows (base_dataset.py:103-105): a fixed RandomState(0) draw, sorted.
  rows = np.sort(np.random.RandomState(0).choice(10, size=4, replace=False))
  assert rows.tolist() != [0, 2, 5, 7]
  np.testing.assert_array_equal(ev["a_features"], feats[rows])
  np.testing.assert_array_equal(ev["a_pool"], feats.max(axis=0))           # all 10 rows
  np.testing.assert_array_equal(ev["a_time"], np.floor(1.5 * rows + 0.75) + 2)
  np.testing.assert_array_equal(ev["b_features"], ex["features/b"].numpy())  # 4 rows: all
  np.testing.assert_array_equal(ev["b_time"], [1, 1, 1, 1])    # untimed
  even = mcha_view.video_view(ex, ml_collections.ConfigDict({**cfg, "eval_rows": "even"}))
  np.testing.assert_array_equal(even["a_features"], feats[[0, 2, 5, 7]])   # floor(i*10/4)
  np.testing.assert_array_equal(even["a_time"], [2, 5, 10, 13])  # floor(1.5 r + .75) + 2
  assert ev["expert_mask"].numpy().tolist() == [True, True, False]
  assert not ev["c_mask"].numpy().any() and not ev["c_pool"].numpy().any()
  subsets, captions = set(), set()
  for seed in range(12):
    tr = mcha_view.train_view(ex, cfg, tf.constant(seed, tf.int64))
    again = mcha_view.train_view(ex, cfg, tf.constant(seed, tf.int64))
    np.testing.assert_array_equal(tr["a_features"], again["a_features"])
    rows = [int(np.flatnonzero((feats == r).all(1))[0]) for r in tr["a_features"].numpy()]
    assert rows == sorted(rows) and len(set(rows)) == 4
    subsets.add(tuple(rows))
    np.testing.assert_array_equal(tr["a_pool"], feats.max(axis=0))
    tok = tr["tokens"].numpy()
    n = int(tr["token_mask"].numpy().sum())
    assert tok[0] == 2 and tok[n - 1] == 3
    captions.add(tuple(tok[1:n - 1]))
  assert len(subsets) > 3 and captions == {(7, 8, 9), (10,), (11, 12, 13, 14)}
  caps = mcha_view.caption_view(ex, cfg)
  assert caps["caption_index"].numpy().tolist() == [0, 1, 2]
  assert caps["caption_count"].numpy().tolist() == [3, 3, 3]
  assert caps["truncated"].numpy().tolist() == [False, False, True]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """24 train / 8 val demo videos, written through hvt-prepare's parser (in process)."""
  out = tmp_path_factory.mktemp("demo_experts")
  return prepare.prepare(["demo", "--variant", "experts", "--output", str(out),
                          "--num-train", "24", "--num-val", "8"])


def _config(data_dir, **kw):
  c = demo_config.get_config("runlocal")
  c.input.data_dir = data_dir
  c.update_from_flattened_dict(kw)
  return c


@pytest.fixture(scope="module")
def stepped(data_dir):
  """{devices: (setup, state after one train step, step metrics)} on 1 and 8 devices, from
  the same initial state (initialised once, on 8 devices, and copied to 1)."""
  out, init = {}, None
  for devices in (8, 1):
    c = _config(data_dir, mesh_devices=devices)
    s = train.setup(c)
    state = train.init_state(s) if init is None else jax.device_put(init, s.state_shardings)
    if init is None:   # the step donates its input state
      init = jax.device_get(state)
    batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                     pipeline.get_view(c.model.name)))
    with jax.set_mesh(s.mesh):
      state, metrics = train.make_train_step(s)(state, batch)
    out[devices] = (s, state, jax.device_get(metrics))
  return out


def test_training_stream_resumes_at_the_same_examples(data_dir):
  """Captions and feature subsets are drawn from (seed, epoch, record): the stream started
  at step 3 equals the uninterrupted stream's batches from step 3 on (epoch boundary too)."""
  c = _config(data_dir)
  full = list(pipeline.train_dataset(c, 0).take(6).as_numpy_iterator())
  resumed = list(pipeline.train_dataset(c, 3 * c.batch_size).take(3).as_numpy_iterator())
  for a, b in zip(full[3:], resumed):
    for k in ("tokens", "motion_features", "video_index"):
      np.testing.assert_array_equal(a[k], b[k])


def test_same_step_on_1_and_8_devices(stepped):
  (_, s1, m1), (_, s8, m8) = stepped[1], stepped[8]
  assert jax.device_count() == 8 and m1["loss/mar"] > 0 and m1["loss/tri"] > 0
  for k in ("loss", "loss/mar", "loss/tri", "norm/grad"):
    np.testing.assert_allclose(m8[k], m1[k], rtol=2e-4, err_msg=k)
  # Adam normalises tiny gradients: an absolute tolerance of a tenth of the 1e-3 step.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-4),
               jax.device_get(s1["params"]), jax.device_get(s8["params"]))


def _metrics_match(metrics, prefix, dense, targets):
  want = retrieval.metrics_from_ranks(retrieval.ranks(dense, targets))
  for k, v in want.items():
    np.testing.assert_allclose(metrics[f"{prefix}/{k}"], v, err_msg=f"{prefix}/{k}")


def test_pred_chooses_the_prediction_function_that_ranks(stepped):
  """``pred`` names the pairwise score the evaluator ranks with: the holistic (Eq. 10-11)
  or local (Eq. 3-8) part alone gives the ranks of that part's dense matrix, unlike the
  default combined score; a name the model does not have is an error listing those it has."""
  s, state, _ = stepped[8]
  ctx = train.eval_context(s)
  caps, vids, cap_video, _, video_ids, _, _ = _evaluator(ctx, "val").separate(state["params"])
  model = nnx.merge(s.graphdef, state["params"])
  owners = [np.flatnonzero(cap_video == v) for v in range(len(video_ids))]
  ranks = {}
  for pred in ("holistic_score", "local_score"):
    dense = np.asarray(jax.jit(getattr(model, pred))(caps, vids))
    metrics, _ = _evaluator(ctx, "val", pred=pred, query_block=8, cand_block=8).run(state, 0)
    _metrics_match(metrics, "t2v", dense, cap_video)
    _metrics_match(metrics, "v2t", dense.T, owners)
    ranks[pred] = retrieval.ranks(dense, cap_video)
  assert not np.array_equal(ranks["holistic_score"], ranks["local_score"])
  with pytest.raises(ValueError, match=r"no prediction function 'fast_score'; it has \["):
    _evaluator(ctx, "val", pred="fast_score")


def test_without_hrm_the_evaluator_ranks_locally_and_reports_no_weights(data_dir):
  """Table 4's "w/o HRM" (no holistic part, so no modality weights): the MCHA configs'
  evaluator (modality_weights=True) ranks it by the local score and writes no
  modality_weight metrics, rather than failing at the end of training."""
  c = _config(data_dir, **{"model.hrm": False, "model.score": "local", "mesh_devices": 1})
  s = train.setup(c)
  state = train.init_state(s)
  metrics, results = _evaluator(train.eval_context(s), "val", query_block=8,
                                cand_block=8).run(state, 0)
  assert metrics["num_examples"] == 24 and 1.0 <= metrics["t2v/MdR"] <= 8.0
  assert not any(k.startswith("modality_weight/") for k in metrics)
  assert "weights" not in results


def test_evaluator_with_blocks_from_memory_and_cut_captions(data_dir):
  """The MCHA configs' retrieval evaluator (blocks 0: from memory; ``trim_tokens``) gives
  the metrics of fixed blocks on padded captions (the LAM scoring: ``score="sum"``)."""
  c = _config(data_dir, **{"model.score": "sum", "model.score_local_weight": 1.0,
                           "mesh_devices": 1})
  s = train.setup(c)
  state, ctx = train.init_state(s), train.eval_context(s)
  runs = [evaluators.RetrievalEvaluator(
      ctx, "val", prefix="t2v", reverse_prefix="v2t", video_view="video",
      query_view="caption", **options).run(state, 0)[0]
      for options in (dict(query_block=3, cand_block=5),
                      dict(trim_tokens=mcha_configs.TRIM_TOKENS))]
  assert runs[0] == runs[1] and runs[0]["num_examples"] == 24


def test_evaluator_protocol_matches_dense_numpy_ranking(stepped, tmp_path, monkeypatch):
  """t2v over every caption, v2t = best rank among a video's captions, and designated
  captions (caption_index_file) against ranks of the dense score matrix; with designated
  captions only those go through the text tower."""
  s, state, _ = stepped[8]
  ev = _evaluator(train.eval_context(s), "val", query_block=8, cand_block=8)
  caps, vids, cap_video, _, video_ids, _, _ = ev.separate(state["params"])
  model = nnx.merge(s.graphdef, state["params"])
  dense = np.asarray(jax.jit(model.score)(caps, vids))                  # [captions, videos]
  metrics, _ = ev.run(state, 0)
  _metrics_match(metrics, "t2v", dense, cap_video)
  owners = [np.flatnonzero(cap_video == v) for v in range(len(video_ids))]
  _metrics_match(metrics, "v2t", dense.T, owners)
  assert metrics["num_examples"] == 24 and metrics["num_videos"] == 8
  w = [metrics[f"modality_weight/{e}"] for e in s.config.input.experts]
  assert len(w) == 2
  np.testing.assert_allclose(sum(w), 1.0, rtol=1e-5)

  # Designated captions: the text tower sees exactly one caption per video, that one.
  all_tokens = []
  for batch, host in pipeline.iterate(pipeline.eval_dataset(s.config, "val", ev.query_view)[0],
                                      s.mesh, ev.query_view):
    all_tokens.append(np.asarray(batch["tokens"])[host["example_mask"].astype(bool)])
  all_tokens = np.concatenate(all_tokens)
  index = {vid: i % 3 for i, vid in enumerate(video_ids)}
  path = tmp_path / "idx.json"
  path.write_text(json.dumps(index))
  seen = []
  fns = evaluators._jit  # pylint: disable=protected-access

  def recording(encode, side):
    fn = fns(encode, side)
    if side == "candidate":
      return fn

    def captions_recorded(params, batch):
      seen.append(np.asarray(batch["tokens"])[np.asarray(batch["example_mask"])])
      return fn(params, batch)

    return captions_recorded

  monkeypatch.setattr(evaluators, "_jit", recording)
  ev = _evaluator(train.eval_context(s), "val", caption_index_file=str(path),
                  query_block=8, cand_block=8)
  metrics, results = ev.run(state, 0)
  rows = [owners[v][index[vid]] for v, vid in enumerate(video_ids)]
  np.testing.assert_array_equal(np.concatenate(seen), all_tokens[rows])
  assert metrics["num_examples"] == 8
  assert results["ids"]["t2v"][0] == [f"{vid}#{index[vid]}" for vid in video_ids]
  _metrics_match(metrics, "t2v", dense[rows], np.arange(8))
  _metrics_match(metrics, "v2t", dense[rows].T, np.arange(8))
  for bad, match in (({**index, video_ids[0]: 7}, "beyond its captions"),
                     ({k: v for k, v in index.items() if k != video_ids[3]},
                      f"{video_ids[3]}.*no designated caption")):
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=match):
      _evaluator(train.eval_context(s), "val", caption_index_file=str(path),
                 query_block=8, cand_block=8).run(state, 0)


def test_video_without_any_expert_is_left_out(stepped, tmp_path, caplog):
  """A video none of whose experts (those the config reads) has a row: left out as a
  candidate and a query, with its captions; the metrics are those of the split without it."""
  from data_prep import builder, demo_experts  # pylint: disable=g-import-not-at-top
  s, state, _ = stepped[8]
  spec, splits = demo_experts.generate(num_train=24, num_val=8)   # the fixture's dataset
  # Video 2's key expert is scene, which is never missing; the config reads motion, audio.
  empty = dict(splits["val"][2], video_id="no_expert")
  experts = s.config.input.experts
  empty["features"] = {e: np.zeros((0, d), np.float32) if e in experts else x
                       for (e, x), d in zip(empty["features"].items(), spec.modalities.values())}
  empty["timestamps"] = {e: np.zeros((0, 2), np.float32) if e in experts else x
                         for e, x in empty["timestamps"].items()}
  splits["val"].insert(3, empty)
  builder.write_dataset(spec, splits, str(tmp_path), counter=builder.SkipCounter())
  c = s.config.copy_and_resolve_references()
  c.input.data_dir = str(tmp_path)
  with_empty = dataclasses.replace(s, config=c)
  ev = _evaluator(train.eval_context(with_empty), "val", query_block=8, cand_block=8)
  metrics, results = ev.run(state, 0)
  base, _ = _evaluator(train.eval_context(s), "val", query_block=8,
                       cand_block=8).run(state, 0)
  assert metrics.pop("num_empty_videos") == 1 and base.pop("num_empty_videos") == 0
  assert metrics == base and metrics["num_videos"] == 8 and metrics["num_examples"] == 24
  for queries, cands in results["ids"].values():
    assert not any(i.startswith("no_expert") for i in queries + cands)
  assert "no_expert" in caplog.text


def test_train_and_eval_through_console_scripts(data_dir, stepped, tmp_path):
  """hvt-train then hvt-eval on the fixtures' dataset, 8 devices, the same config (after
  ``stepped``, so their programs come from the compilation cache)."""
  del stepped
  bin_dir = pathlib.Path(sys.executable).parent
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")

  def run(*args):
    proc = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr

  workdir = tmp_path / "run"
  config = f"{REPO}/configs/mcha/demo.py:runlocal"
  # One checkpoint (step 4), for hvt-eval: each save costs ~2 s here.
  run("hvt-train", f"--config={config}", f"--workdir={workdir}",
      f"--config.input.data_dir={data_dir}", "--config.checkpoint.every_steps=4")
  metrics_file = workdir / "eval" / "val" / "metrics.json"
  trained = json.loads(metrics_file.read_text())
  metrics_file.unlink()
  out = run("hvt-eval", f"--config={config}", f"--workdir={workdir}",
            f"--config.input.data_dir={data_dir}")
  metrics = json.loads(metrics_file.read_text())
  assert metrics["step"] == 4 and metrics["num_videos"] == 8 and metrics["num_examples"] == 24
  for direction in ("t2v", "v2t"):
    assert 1.0 <= metrics[f"{direction}/MdR"] <= 24.0
    assert metrics[f"{direction}/R@10"] >= metrics[f"{direction}/R@1"]
    assert metrics[f"{direction}/R@1"] == trained[f"{direction}/R@1"]
  assert "t2v/R@1" in out
  weights = json.loads((workdir / "eval" / "val" / "modality_weights.json").read_text())
  assert set(weights) == {"motion", "audio"}


def _evaluator(ctx, split, **options):
  """The retrieval evaluator as the MCHA configs declare it (texts of their own)."""
  return evaluators.RetrievalEvaluator(ctx, split, prefix="t2v", reverse_prefix="v2t",
                                       video_view="video", query_view="caption",
                                       modality_weights=True, **options)
