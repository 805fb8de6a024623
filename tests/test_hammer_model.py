"""HAMMER/FLAT: Eq. 10-12's factorisation, the losses against a NumPy transcription, the
prediction functions (score = the training path's VR logits, deterministic per pair;
localize's constraints), negative sampling, and training through hvt_jax.train (loss goes
down, 1 vs 8 devices, exact resume)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs.hammer import activitynet
from hvt_jax import train
from hvt_jax.input import pipeline
from hvt_jax.families.hammer import model as hammer
from tests import tiny_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("tiny_hammer")
  tiny_data.write(str(out), num_train=24, num_val=4, modality="i3d", val_split="val_1",
                  tokenizer="wordpiece")
  return str(out)


def _config(data_dir, **kw):
  c = activitynet.get_config("runlocal")
  c.input.data_dir = data_dir
  c.evals = {}
  # Constant schedule: the resume test changes num_train_steps.
  c.schedule.name = "constant"
  c.schedule.learning_rate = 1e-3
  c.model.max_moment_frames = 3
  c.update_from_flattened_dict(kw)
  return c


def _batch(c):
  b = next(pipeline.train_dataset(c, 0).as_numpy_iterator())
  return {k: jnp.asarray(v) for k, v in b.items()
          if k not in pipeline.get_view("hammer").host_only}


def _model(c, name="hammer"):
  _, meta = pipeline.dataset_info(c)
  cls = {"hammer": hammer.HAMMER, "flat": hammer.FLAT}[name]
  return cls.create(c, meta, rngs=nnx.Rngs(0))


SUB_Q, SUB_V = np.array([5, 2]), np.array([5, 2, 7])


@pytest.fixture(scope="module")
def run(data_dir):
  """One jitted program: the training forward + loss, the evaluation forward and every
  prediction function of a tiny HAMMER on one batch (one compile for all tests)."""
  c = _config(data_dir)
  model, batch = _model(c), _batch(c)
  graphdef, params = nnx.split(model)

  @jax.jit
  def fn(params, batch):
    m = nnx.merge(graphdef, params)
    out = m(batch, train=True, rngs=jax.random.key(3))
    loss, terms = m.loss(out, batch, c.loss)
    q, v = m.encode_query(batch), m.encode_candidate(batch)
    sub = lambda tree, idx: jax.tree.map(lambda x: x[idx], tree)
    return dict(train=out, loss=loss, terms=terms, eval=m(batch, train=False),
                scores=m.score(q, v), sub_scores=m.score(sub(q, SUB_Q), sub(v, SUB_V)),
                localize=m.localize(q, v, 6), logprobs=m.moment_logprobs(q, v),
                pair=m.pair(q, v), frame_seconds=v["frame_seconds"],
                duration=v["duration"])

  return c, model, batch, jax.tree.map(np.asarray, fn(params, batch))


def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_hierarchical_factorisation_sums_to_a_distribution(data_dir, run):
  c, model, batch, r = run
  out = r["pair"]
  fm = np.asarray(batch["frame_mask"])
  m = c.model.clip_length
  clip_p = np.exp(out["clip_logprob"][..., 0])                      # p(c_k | v, h)
  np.testing.assert_allclose(clip_p.sum(1), 1.0, rtol=1e-5)
  clip_valid = fm.reshape(fm.shape[0], -1, m).any(-1)
  assert (clip_p[~clip_valid] < 1e-6).all() and (~clip_valid).any()
  # Eq. 10: the labels of frame t share p(c_k): Σ_y p(y_t) = p(c_k(t)) in [0, 1], so over
  # the clips and labels of one in-clip offset the probabilities sum to 1.
  p = np.exp(out["tl"])
  np.testing.assert_allclose(p.sum(-1), np.repeat(clip_p, m, axis=1), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(p.sum(-1).reshape(len(p), -1, m).sum(1)[:, 0], 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["start"][fm], out["tl"][..., 1][fm])
  # The per-boundary option: start and end are distributions over the video's frames.
  out_b = hammer.tl_logprobs(jnp.asarray(out["frame_logits"]),
                             jnp.asarray(out["clip_logits"]), jnp.asarray(fm), m,
                             "boundary")
  for key in ("start", "end"):
    np.testing.assert_allclose(np.exp(np.asarray(out_b[key])).sum(1), 1.0, rtol=1e-5)
    assert np.isneginf(np.asarray(out_b[key])[~fm]).all()
  # FLAT: no clip factor: B/E/O is a distribution per frame.
  flat = _model(c, "flat")
  out_f = jax.jit(lambda b: flat.pair(flat.encode_query(b), flat.encode_candidate(b)))(batch)
  np.testing.assert_allclose(np.exp(np.asarray(out_f["tl"])).sum(-1), 1.0, rtol=1e-5)


def _numpy_loss(out, batch, m, boundary=False):
  """Eq. 9-14 transcribed from the raw head logits."""
  b = {k: np.asarray(v) for k, v in batch.items()}
  vr_logits = np.where(out["vr_valid"], out["vr_logits"], -1e9)
  vr = -_log_softmax(vr_logits, 1)[:, 0].mean()
  fm = b["frame_mask"]
  clip_lp = _log_softmax(out["clip_logits"], 1)                     # Eq. 11 over clips
  if not boundary:
    lp = _log_softmax(out["frame_logits"], -1) + np.repeat(clip_lp[..., :1], m, 1)
    ll = np.take_along_axis(lp, b["labels"][..., None], -1)[..., 0]
    tl = -(ll * fm).sum(1).mean()                                   # Eq. 6, Σ over frames
  else:
    per = []
    for i in range(len(fm)):
      total = 0.0
      for col, head, t in ((1, 0, b["start_frame"][i]), (2, -1, b["end_frame"][i])):
        k = t // m
        logits = out["frame_logits"][i, k * m:(k + 1) * m, col]
        logits = np.where(fm[i, k * m:(k + 1) * m], logits, -np.inf)
        total += clip_lp[i, k, head] + logits[t - k * m] - np.log(np.exp(logits).sum())
      per.append(-total)
    tl = np.mean(per)
  w, targets = out["mlm_weights"], out["mlm_targets"]
  ce = lambda lg, t: -np.take_along_axis(_log_softmax(lg, -1), t[..., None], -1)[..., 0]
  clip_ok = fm.reshape(len(fm), -1, m).any(-1)
  wf = w[:, None] * clip_ok[..., None]
  fm_loss = (ce(out["mlm_frame_logits"], np.broadcast_to(targets[:, None], wf.shape))
             * wf).sum() / wf.sum()
  cm_loss = (ce(out["mlm_clip_logits"], targets) * w).sum() / w.sum()
  total = 1.0 * vr + 5.0 * tl + 0.1 * (fm_loss + cm_loss)
  return total, dict(vr=vr, tl=tl, mlm_frame=fm_loss, mlm_clip=cm_loss)


def test_losses_match_a_numpy_transcription(run):
  c, model, batch, r = run
  out, m = r["train"], c.model.clip_length
  want, want_terms = _numpy_loss(out, batch, m)
  assert set(r["terms"]) == set(want_terms)
  for k, v in want_terms.items():
    np.testing.assert_allclose(r["terms"][k], v, rtol=2e-5, err_msg=k)
  np.testing.assert_allclose(r["loss"], want, rtol=2e-5)
  # The per-boundary TL option through the same loss function.
  boundary = dict(out, **hammer.tl_logprobs(
      jnp.asarray(out["frame_logits"]), jnp.asarray(out["clip_logits"]),
      batch["frame_mask"], m, "boundary"))
  loss, terms = hammer.hammer_loss(boundary, batch, c.loss,
                                   dataclasses.replace(model.c, tl_head="boundary"))
  want, want_terms = _numpy_loss(out, batch, m, boundary=True)
  np.testing.assert_allclose(float(terms["tl"]), want_terms["tl"], rtol=2e-5)
  np.testing.assert_allclose(float(loss), want, rtol=2e-5)
  # MLM: BERT's masking picked at most mlm_max_predictions real tokens per query.
  w = out["mlm_weights"]
  assert w.shape[1] == c.model.mlm_max_predictions and w.sum() > 0
  assert np.all(out["mlm_targets"][w > 0] >= 5)                    # never a special id


def test_negatives_come_from_other_videos_of_the_global_batch():
  vi = jnp.array([0, 0, 1, 2, 3, 3, 4, 5])
  real = jnp.array([True] * 7 + [False])
  cols, valid = (np.asarray(x) for x in hammer.sample_negatives(
      vi, real, 4, jax.random.key(0)))
  vi = np.asarray(vi)
  assert cols.shape == (8, 5) and (cols[:, 0] == np.arange(8)).all()
  for i in range(8):
    neg = cols[i, 1:]
    assert len(set(neg)) == 4 and (neg != i).all()
    np.testing.assert_array_equal(valid[i, 1:], (vi[neg] != vi[i]) & (neg != 7))
  # Every row is drawn exactly k times (balanced: see the next test).
  np.testing.assert_array_equal(np.bincount(cols[:, 1:].ravel(), minlength=8), 4)
  cols2, _ = hammer.sample_negatives(jnp.asarray(vi), real, 4, jax.random.key(1))
  assert not np.array_equal(cols, np.asarray(cols2))                   # the key draws
  cols, valid = (np.asarray(x) for x in hammer.sample_negatives(
      jnp.asarray(vi), real, 4, jax.random.key(0), "all"))
  assert cols.shape == (8, 9)
  np.testing.assert_array_equal(valid[:, 1:],
                                (vi[None] != vi[:, None]) & np.asarray(real)[None])


@pytest.mark.parametrize("mode", ["sample", "all"])
def test_vr_loss_puts_no_gradient_on_a_query_independent_score(mode):
  """At uniform scores the VR loss does not move a video's query-independent score: each
  video is one query's positive and, in total, as many queries' negatives (the cause of VR
  staying at log(1 + k) on the moments demo with independently drawn negatives)."""
  b, k = 32, 3
  vi = jnp.arange(b)
  batch = {"labels": jnp.zeros((b, 4), jnp.int32), "frame_mask": jnp.ones((b, 4), bool),
           "example_mask": jnp.ones((b,), bool)}
  c = hammer.HammerConfig(tower=None, video_dim=1, subtitle_dim=0, max_frames=4,
                          clip_length=4)
  cfg = ml_collections.ConfigDict({"weights": {"vr": 1.0, "tl": 0.0, "mlm": 0.0}})
  for seed in range(3):
    cols, valid = hammer.sample_negatives(vi, batch["example_mask"], k,
                                          jax.random.key(seed), mode)

    def vr_loss(video_score):                      # f(v, h) = s(v): no query dependence
      out = {"vr_logits": video_score[cols], "vr_valid": valid,
             "tl": jnp.zeros((b, 4, 3))}
      return hammer.hammer_loss(out, batch, cfg, c)[1]["vr"]

    grad = np.asarray(jax.grad(vr_loss)(jnp.zeros(b)))
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_score_is_the_training_vr_logit_and_deterministic_per_pair(run):
  _, _, _, r = run
  scores, out = r["scores"], r["eval"]
  np.testing.assert_allclose(out["vr_logits"],
                             np.take_along_axis(scores, out["negatives"], 1),
                             rtol=1e-5, atol=1e-6)
  # Another block: the same pairs in other positions give the same scores.
  np.testing.assert_allclose(r["sub_scores"], scores[np.ix_(SUB_Q, SUB_V)], rtol=1e-6,
                             atol=1e-6)
  assert len(np.unique(scores)) > 1


def test_localize_respects_order_and_max_length(run):
  _, _, _, r = run
  got, lp = r["localize"], r["logprobs"]
  delta, dur = r["frame_seconds"], r["duration"]
  f = lp["start"].shape[1]
  for i in range(got.shape[0]):
    # Brute force over (s, e): e > s (Eq. 5), e - s + 1 <= 3, valid frames only.
    cand = sorted(((lp["start"][i, s] + lp["end"][i, e], s, e)
                   for s in range(f) for e in range(s + 1, min(s + 3, f))
                   if np.isfinite(lp["start"][i, s] + lp["end"][i, e])), reverse=True)[:6]
    np.testing.assert_allclose(got[i, :, 2], [x[0] for x in cand], rtol=1e-5)
    for (score, s, e), row in zip(cand, got[i]):
      if sum(np.isclose(score, x[0], rtol=1e-6) for x in cand) > 1:
        continue                                             # a tie may swap two moments
      np.testing.assert_allclose(row[:2], np.clip([s * delta[i], (e + 1) * delta[i]], 0,
                                                  dur[i]), rtol=1e-5)
    assert (got[i, :, 1] > got[i, :, 0]).all()
    assert (got[i, :, 1] - got[i, :, 0] <= 3 * delta[i] + 1e-4).all()


def _steps(c, n, init=None):
  """n train steps on the first batch through the trainer's setup, init (or ``init``, a
  host copy of another run's initial state, placed with this mesh's shardings) and step.

  Returns:
    (the initial state on the host, the metrics of each step).
  """
  s = train.setup(c)
  state = (train.init_state(s) if init is None
           else jax.device_put(init, s.state_shardings))
  init = jax.device_get(state)               # before the step donates the buffers
  step_fn = train.make_train_step(s)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                   pipeline.get_view("hammer")))
  logs = []
  with jax.set_mesh(s.mesh):
    for _ in range(n):
      state, metrics = step_fn(state, batch)
      logs.append(jax.device_get(metrics))
  return init, logs


def test_same_steps_on_1_and_8_devices_and_the_loss_goes_down(data_dir):
  """Two steps (dropout, masks and negatives drawn from the global batch) agree on 1 and 8
  devices: the losses and gradient norms of step 1, and of step 2 (after an update).

  The parameters themselves are not compared: Adam's first step is lr·sign(g), and some
  gradients are 0 up to rounding (softmax ignores the attention key bias, and Ψ's softmaxes
  over clips and over videos ignore a shift shared by all clips), so their sign is noise.
  The 8-device run starts from the 1-device run's initial state (the trainer's init on
  both meshes is compared for HSE in test_train.py; one init compile fewer here).
  """
  init, logs1 = _steps(_config(data_dir, mesh_devices=1), 2)
  _, logs = _steps(_config(data_dir), 6, init)
  assert jax.device_count() == 8 and logs1[0]["loss"] > 0
  for m1, m8 in zip(logs1, logs):
    for k in m1:
      rtol = 5e-5 if k.startswith("loss") else 5e-4
      np.testing.assert_allclose(m8[k], m1[k], rtol=rtol, atol=1e-6, err_msg=k)
  # Training on one batch: every term is logged and the loss falls.
  loss = [float(m["loss"]) for m in logs]
  assert {"loss/vr", "loss/tl", "loss/mlm_frame", "loss/mlm_clip"} <= set(logs[0])
  assert np.mean(loss[-2:]) < 0.9 * np.mean(loss[:2]), loss


@pytest.mark.parametrize("overrides", [
    {"model.frame_scope": "video", "model.clip_query": "frame",
     "model.query_stacks": "shared", "model.share_encoders": True, "model.clip_position": False,
     "model.negative_mode": "all", "model.masked_query_for_vr_tl": False,
     "model.mask_scheme": "mask_all", "model.mlm_clip": False},
    {"model.name": "flat", "model.flat_vr_head": "max_frame"},
    {"model.name": "flat", "model.flat_vr_head": "tcls", "model.tl_head": "boundary"},
], ids=lambda o: ",".join(f"{k.split('.')[-1]}={v}" for k, v in o.items()))
def test_every_option_traces(data_dir, overrides):
  """Each config option builds and traces the training loss and the prediction functions
  (shapes only: no compile)."""
  c = _config(data_dir, **overrides)
  # An abstract model: nothing is initialised or compiled.
  model, batch = nnx.eval_shape(lambda: _model(c, c.model.name)), _batch(c)
  graphdef, params = nnx.split(model)

  def fn(params, batch):
    m = nnx.merge(graphdef, params)
    loss, terms = m.loss(m(batch, train=True, rngs=jax.random.key(0)), batch, c.loss)
    q, v = m.encode_query(batch), m.encode_candidate(batch)
    return loss, terms, m.score(q, v), m.localize(q, v, 4)

  loss, terms, scores, moments = jax.eval_shape(fn, params, batch)
  assert loss.shape == () and scores.shape == (8, 8) and moments.shape == (8, 4, 3)
  assert ("mlm_clip" in terms) == (c.model.name == "hammer" and c.model.mlm_clip)


_NORMAL = ("kernel", "position", "clip_cls", "tl_frame", "tl_clip", "vr", "word")


def test_init_std_reaches_every_random_layer(data_dir):
  """config.model.init_std sets the normal initialiser of every random HAMMER kernel,
  embedding and head; the tower keeps its own ``init_std``, which is also HAMMER's when
  config.model.init_std is 0 (Ψ's query layers, ``clip_text``, are the tower's kind)."""
  c = _config(data_dir, **{"model.init_std": 0.2})
  c.model.text.init_std = 0.06
  model = _model(c)
  assert dataclasses.replace(model.c, init_std=0.0).std == 0.06
  state = nnx.to_flat_state(nnx.state(model, nnx.Param))
  stds = {path: float(np.std(np.asarray(v.value))) for path, v in state
          if str(path[-1]).endswith(_NORMAL)}
  for tower, want in ((True, 0.06), (False, 0.2)):
    group = {p: s for p, s in stds.items() if (p[0] in ("text", "clip_text")) == tower}
    assert len(group) > 10
    # Every tensor (some have only 32 values: a loose band that still excludes 0.02, 0.06
    # and 0.2 of the other groups) and the pooled std (tight).
    bad = {p: s for p, s in group.items() if not 0.6 * want < s < 1.4 * want}
    assert not bad, (want, bad)
    pooled = np.concatenate([np.asarray(v.value).ravel() for p, v in state if p in group])
    assert abs(np.std(pooled) / want - 1) < 0.05


def test_co_attention_attends_both_ways_from_the_inputs():
  """layers.CoAttention (the cross-modal layer): x' = Block_x(x, kv=y), y' = Block_y(y,
  kv=x) — both from the layer's inputs (ViLBERT), with key padding masks."""
  from hvt_jax.models import layers  # pylint: disable=g-import-not-at-top
  cx = layers.TransformerConfig(embed_dim=8, num_heads=2, mlp_dim=16)
  cy = layers.TransformerConfig(embed_dim=12, num_heads=3, mlp_dim=16)
  co = layers.CoAttention(cx, cy, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  x, y = jnp.asarray(rng.normal(size=(2, 5, 8))), jnp.asarray(rng.normal(size=(2, 4, 12)))
  xm, ym = jnp.arange(5)[None] < jnp.array([[5], [3]]), jnp.arange(4)[None] < 2
  ym = jnp.broadcast_to(ym, (2, 4))

  @nnx.jit     # one compile, not one per eager op
  def calls(co, x, y, xm, ym):
    return (co(x, y, xm, ym, train=False), co.x_block(x, ym, train=False, kv=y),
            co.y_block(y, xm, train=False, kv=x),
            co(x, y.at[:, 2:].set(9.0), xm, ym, train=False)[0])

  (gx, gy), x_only, y_only, gx2 = calls(co, x, y, xm, ym)
  np.testing.assert_allclose(gx, x_only, rtol=1e-6)
  np.testing.assert_allclose(gy, y_only, rtol=1e-6)
  assert co.x_block.attention.key.kernel.shape == (12, 2, 4)      # keys read y's width
  # Padded keys do not matter: changing y where ym is False leaves x' unchanged.
  np.testing.assert_allclose(gx2, gx, rtol=1e-6)
  with pytest.raises(ValueError, match="explicit PRNG key"):
    co(x, y, xm, ym, train=True)
