"""Model tests: GRU against a numpy reference of PyTorch's equations, HSE/FSE wiring."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from hvt_jax import families
from hvt_jax.models import layers


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_gru(x, mask, h0, w_i, w_h, b_i, b_h):
  """Step-by-step PyTorch GRU; padded steps keep the state."""
  b, t, _ = x.shape
  h = h0.astype(np.float64)
  outs = np.zeros((b, t, h.shape[1]))
  for step in range(t):
    xp = np.einsum("bd,dgh->bgh", x[:, step], w_i) + b_i
    hp = np.einsum("bh,hgk->bgk", h, w_h) + b_h
    r = _sigmoid(xp[:, 0] + hp[:, 0])
    z = _sigmoid(xp[:, 1] + hp[:, 1])
    n = np.tanh(xp[:, 2] + r * hp[:, 2])
    new = (1 - z) * n + z * h
    h = np.where(mask[:, step, None], new, h)
    outs[:, step] = h
  return outs, h


def test_gru_matches_numpy_reference():
  rng = np.random.default_rng(0)
  gru = layers.GRU(5, 7, rngs=nnx.Rngs(1))
  gru.b_i[...] = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)
  gru.b_h[...] = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)
  x = rng.normal(size=(3, 6, 5)).astype(np.float32)
  mask = np.arange(6)[None] < np.array([6, 3, 1])[:, None]
  h0 = rng.normal(size=(3, 7)).astype(np.float32)
  out, last = gru(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(h0))
  ref_out, ref_last = numpy_gru(x, mask, h0, *(np.asarray(p[...], np.float64) for p in
                                               (gru.w_i, gru.w_h, gru.b_i, gru.b_h)))
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  # The final state is the last *valid* step's, not the last padded one.
  np.testing.assert_allclose(last, ref_last, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(last[1], ref_out[1, 2], rtol=1e-5, atol=1e-5)


def test_gru_decode_feeds_parent_every_step_from_zero_state():
  rng = np.random.default_rng(1)
  gru = layers.GRU(4, 3, rngs=nnx.Rngs(0))
  parent = rng.normal(size=(2, 4)).astype(np.float32)
  got = gru.decode(jnp.asarray(parent), 5)
  x = np.repeat(parent[:, None], 5, axis=1)
  ref, _ = numpy_gru(x, np.ones((2, 5), bool), np.zeros((2, 3)),
                     *(np.asarray(p[...], np.float64) for p in
                       (gru.w_i, gru.w_h, gru.b_i, gru.b_h)))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_xavier_per_gate_block_and_zero_bias():
  gru = layers.GRU(100, 400, rngs=nnx.Rngs(0))
  limit = np.sqrt(6.0 / (100 + 400))  # per [in, hidden] block, not per [in, 3 hidden]
  w = np.asarray(gru.w_i[...])
  assert w.shape == (100, 3, 400)
  assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
  assert not np.any(np.asarray(gru.b_i[...])) and not np.any(np.asarray(gru.b_h[...]))


def test_encoder_embedding_is_max_over_valid_outputs():
  enc = layers.GRUEncoder(3, 4, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 3)), jnp.float32)
  mask = jnp.asarray(np.arange(5)[None] < np.array([5, 2])[:, None])
  out, _ = enc.gru(x, mask)
  emb = enc(x, mask)
  np.testing.assert_allclose(emb[0], np.max(out[0], axis=0), rtol=1e-6)
  np.testing.assert_allclose(emb[1], np.max(out[1, :2], axis=0), rtol=1e-6)


def _tiny_config(name="hse", context_init=True, normalize=False):
  c = ml_collections.ConfigDict()
  c.model = dict(name=name, hidden=8, word_dim=6, context_init=context_init,
                 reconstruction=name == "hse", dtype="float32",
                 word_vectors="none", normalize_embeddings=normalize)
  c.input = dict(modality="frames")
  hse_model = name == "hse"
  c.loss = dict(margin=0.2, hardest_negative=False, normalize="pairs", cluster=True,
                cluster_bidirectional=False, low="strong" if hse_model else "none",
                context_weight=1.0 if context_init and hse_model else 0.0,
                tau=5e-4 if hse_model else 0.0, tau_low=1e-4, recon_distance="l2",
                recon_reduce="mean")
  return c


def _batch(rng, b=3, c=2, f=4, fv=6, d=5, s=2, l=3, lp=5, vocab=11):
  clip_mask = np.ones((b, c), bool)
  clip_mask[0, 1] = False
  return {
      "clip_frames": rng.normal(size=(b, c, f, d)).astype(np.float32),
      "clip_frame_mask": np.ones((b, c, f), bool) & clip_mask[..., None],
      "clip_mask": clip_mask,
      "video_frames": rng.normal(size=(b, fv, d)).astype(np.float32),
      "video_frame_mask": np.ones((b, fv), bool),
      "sentence_tokens": rng.integers(1, vocab, size=(b, s, l)).astype(np.int32),
      "sentence_token_mask": np.ones((b, s, l), bool),
      "sentence_mask": clip_mask.copy(),
      "paragraph_tokens": rng.integers(1, vocab, size=(b, lp)).astype(np.int32),
      "paragraph_token_mask": np.ones((b, lp), bool),
      "example_mask": np.ones((b,), bool),
  }


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match="unknown model 'hsee'; valid: ") as err:
    families.model_class("hsee")
  assert str(err.value).endswith(str(families.model_names()))
  assert {"hse", "fse", "hammer", "flat", "mcha", "text_mlm"} <= set(families.model_names())


def test_hse_context_initialises_high_level_and_padding_is_ignored():
  meta = {"modalities": {"frames": 5}, "vocab_size": 11}
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  # Default (released code): raw embeddings everywhere, the context is h0 as it comes.
  raw = families.create_model(_tiny_config(), meta, rngs=nnx.Rngs(0))
  out = raw(batch)
  ctx = raw.video_low(batch["video_frames"], batch["video_frame_mask"])
  np.testing.assert_allclose(out["video_context"], ctx, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["video"], raw.video_high(out["clips"], batch["clip_mask"], ctx),
                             rtol=1e-5, atol=1e-6)
  assert np.abs(np.linalg.norm(out["clips"], axis=-1)[batch["clip_mask"]] - 1).max() > 1e-2
  # normalize_embeddings=True: the high-level GRU starts from the (normalised) embedding of
  # the whole video and reads the normalised clip embeddings; all embeddings have unit norm.
  m = families.create_model(_tiny_config(normalize=True), meta, rngs=nnx.Rngs(0))
  out = m(batch)
  def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
  ctx = unit(m.video_low(batch["video_frames"], batch["video_frame_mask"]))
  np.testing.assert_allclose(out["video_context"], ctx, rtol=1e-5, atol=1e-6)
  expected_video = unit(m.video_high(out["clips"], batch["clip_mask"], ctx))
  np.testing.assert_allclose(out["video"], expected_video, rtol=1e-5, atol=1e-6)
  valid = batch["clip_mask"]
  np.testing.assert_allclose(np.linalg.norm(out["clips"], axis=-1)[valid], 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out["clips_hat"], axis=-1), 1.0, rtol=1e-5)
  no_ctx = families.create_model(_tiny_config(context_init=False, normalize=True), meta,
                               rngs=nnx.Rngs(0))
  assert not np.allclose(no_ctx.embed(batch)["video"], out["video"])
  # Padded clip content does not change any output or the loss.
  batch2 = dict(batch, clip_frames=batch["clip_frames"].copy())
  batch2["clip_frames"][0, 1] = 1e3
  out2 = m(batch2)
  np.testing.assert_allclose(out2["video"], out["video"], rtol=1e-6)
  cfg = _tiny_config().loss
  l1, terms = m.loss(out, batch, cfg)
  l2, _ = m.loss(out2, batch2, cfg)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  assert set(terms) == {"match_high", "cluster_high", "match_context", "match_low",
                        "cluster_low", "recon_high", "recon_low"}
  np.testing.assert_allclose(l1, sum(terms.values()), rtol=1e-6)


@pytest.mark.parametrize("low,tau,expected", [
    ("none", 0.0, {"match_high", "cluster_high", "match_context"}),
    ("weak", 0.0, {"match_high", "cluster_high", "match_context", "match_low",
                   "cluster_low"}),
])
def test_loss_terms_follow_ablation_switches(low, tau, expected):
  meta = {"modalities": {"frames": 5}, "vocab_size": 11}
  batch = _batch(np.random.default_rng(0))
  m = families.create_model(_tiny_config(), meta, rngs=nnx.Rngs(0))
  cfg = _tiny_config().loss
  cfg.low, cfg.tau = low, tau
  _, terms = m.loss(m(batch), batch, cfg)
  assert set(terms) == expected


def test_fse_uses_only_flat_inputs():
  meta = {"modalities": {"frames": 5}, "vocab_size": 11}
  batch = _batch(np.random.default_rng(0))
  m = families.create_model(_tiny_config("fse"), meta, rngs=nnx.Rngs(0))
  out = m(batch)
  batch2 = dict(batch, clip_frames=batch["clip_frames"] + 5.0)
  np.testing.assert_allclose(m(batch2)["video"], out["video"])
  _, terms = m.loss(out, batch, _tiny_config("fse").loss)
  assert set(terms) == {"match_high", "cluster_high"}


def _autodiff_gru(x, mask_bt, h0, w_i, b_i, w_h, b_h):
  """Reference: the same GRU differentiated by JAX through lax.scan over all steps."""
  xp = jnp.einsum("b...d,dgh->b...gh", x, w_i) + b_i
  xp = jnp.swapaxes(xp, 0, 1) if x.ndim == 3 else jnp.broadcast_to(
      xp[None], (mask_bt.shape[1],) + xp.shape)

  def step(h, inputs):
    x, m = inputs
    r, z, n, _ = layers._gates(x, h, w_h, b_h, jnp.float32)
    h_new = jnp.where(m[:, None], (1.0 - z) * n + z * h, h)
    return h_new, h_new

  h_last, out = jax.lax.scan(step, h0, (xp, mask_bt.T))
  return jnp.swapaxes(out, 0, 1), h_last


@pytest.mark.parametrize("lengths,inputs,chunk_rows", [
    ([5, 3, 1, 4], "sequence", 0), ([3, 2, 0, 1], "sequence", 0),
    ([0, 0, 0, 0], "sequence", 0), ([3, 2, 0, 1], "constant", 0),
    ([5, 3, 1, 4], "sequence", 64), ([3, 2, 0, 1], "constant", 64),
    ("mixed", "sequence", 0), ("mixed", "sequence", 8), ("mixed", "constant", 8)])
def test_gru_custom_vjp_matches_autodiff(lengths, inputs, chunk_rows):
  # [3, 2, 0, 1]: the last two steps are padding everywhere and are skipped. "mixed": 43
  # rows of random lengths, incl. empty rows, rows as long as the batch and a hole (a padded
  # step before a valid one keeps the state): outputs past a row's length are its final
  # state, forward and backward. chunk_rows=0 runs gru_recurrence; 64 (the default) runs
  # the 4 rows as one unsorted chunk of the chunked path; chunk_rows=8 sorts the 43 rows by
  # length into 6 chunks (the last one padded), the empty ones skipped; "constant" is the
  # decoders' input.
  rng = np.random.default_rng(3)
  t, b, h, d = 5, 4, 6, 3
  if lengths == "mixed":
    b = 43
    lengths = rng.integers(0, t + 1, size=b)
    lengths[:3] = [t, 0, t]
    lengths[-12:] = 0
  mask = np.arange(t)[None] < np.array(lengths)[:, None]
  if b == 43:
    mask[0, 2] = False
  mask = jnp.asarray(mask)
  x = jnp.asarray(rng.normal(size=(b, t, d) if inputs == "sequence" else (b, d)), jnp.float32)
  h0 = jnp.asarray(rng.normal(size=(b, h)), jnp.float32)
  params = [jnp.asarray(rng.normal(size=shape) * 0.5, jnp.float32)
            for shape in ((d, 3, h), (3, h), (h, 3, h), (3, h))]
  w_out = jnp.asarray(rng.normal(size=(b, t, h)), jnp.float32)
  w_last = jnp.asarray(rng.normal(size=(b, h)), jnp.float32)

  def objective(fn):
    def f(x, h0, *params):
      out, last = fn(x, mask, h0, *params)
      return jnp.sum(out * w_out) + jnp.sum(jnp.sin(last) * w_last)
    return f

  def ours_fn(*args):
    return layers.gru(*args, chunk_rows=chunk_rows)

  argnums = tuple(range(6))
  ours = jax.grad(objective(ours_fn), argnums=argnums)(x, h0, *params)
  ref = jax.grad(objective(_autodiff_gru), argnums=argnums)(x, h0, *params)
  for a, r in zip(ours, ref):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)
  for a, r in zip(ours_fn(x, mask, h0, *params), _autodiff_gru(x, mask, h0, *params)):
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
  # Under jit the trip counts are traced values.
  jit_out = jax.jit(ours_fn)(x, mask, h0, *params)
  np.testing.assert_allclose(jit_out[0], _autodiff_gru(x, mask, h0, *params)[0],
                             rtol=1e-5, atol=1e-6)


def test_gru_rows_sharded_over_devices_run_as_one_chunk():
  # Under a mesh of 8 devices the 48 rows (sharded over "data") are neither sorted nor
  # chunked: same values and gradients as the sorted 8-row chunks on one device.
  rng = np.random.default_rng(7)
  b, t, h, d = 48, 5, 6, 3
  mask = jnp.asarray(np.arange(t)[None] < rng.integers(0, t + 1, size=b)[:, None])
  x = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
  h0 = jnp.zeros((b, h), jnp.float32)
  params = [jnp.asarray(rng.normal(size=shape) * 0.5, jnp.float32)
            for shape in ((d, 3, h), (3, h), (h, 3, h), (3, h))]

  def loss(x, *params):
    out, last = layers.gru(x, mask, h0, *params, chunk_rows=8)
    return jnp.sum(out ** 2) + jnp.sum(last), out

  one = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 3), has_aux=True))(x, *params)
  mesh = jax.make_mesh((8,), ("data",), devices=jax.devices()[:8],
                       axis_types=(jax.sharding.AxisType.Auto,))    # as the trainer's mesh
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  with jax.set_mesh(mesh):
    lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 3), has_aux=True)).lower(
        jax.device_put(x, rows), *params)
    assert "stablehlo.sort" not in lowered.as_text()
    eight = lowered.compile()(jax.device_put(x, rows), *params)
  for a, r in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
  assert "stablehlo.sort" in jax.jit(loss).lower(x, *params).as_text()


def test_gru_decode_mask_stops_each_row_and_keeps_valid_steps():
  rng = np.random.default_rng(5)
  gru = layers.GRU(4, 3, rngs=nnx.Rngs(0))
  parent = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  mask = jnp.asarray(np.arange(5)[None] < np.array([5, 2, 0])[:, None])
  full = gru.decode(parent, 5)
  got = gru.decode(parent, 5, mask)
  np.testing.assert_allclose(got[0], full[0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got[1, :2], full[1, :2], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got[1, 2:], np.broadcast_to(full[1, 1], (3, 3)), rtol=1e-6)
  np.testing.assert_array_equal(got[2], np.zeros((5, 3)))


def test_reconstruction_reduce_option_changes_scale():
  meta = {"modalities": {"frames": 5}, "vocab_size": 11}
  batch = _batch(np.random.default_rng(0))
  m = families.create_model(_tiny_config(), meta, rngs=nnx.Rngs(0))
  out = m(batch)
  cfg = _tiny_config().loss
  _, mean_terms = m.loss(out, batch, cfg)
  cfg.recon_reduce = "sum"
  _, sum_terms = m.loss(out, batch, cfg)
  # 5 valid clips + 5 valid sentences: the sum of each pair of terms is 5x the mean.
  np.testing.assert_allclose(sum_terms["recon_high"], 5 * mean_terms["recon_high"], rtol=1e-5)


@pytest.mark.parametrize("dropped", ["match_high", "cluster_high", "match_low", "cluster_low"])
def test_loss_weights_drop_single_terms(dropped):
  meta = {"modalities": {"frames": 5}, "vocab_size": 11}
  batch = _batch(np.random.default_rng(0))
  m = families.create_model(_tiny_config(), meta, rngs=nnx.Rngs(0))
  out = m(batch)
  cfg = _tiny_config().loss
  total, terms = m.loss(out, batch, cfg)
  cfg.weights = {dropped: 0.0}
  total2, terms2 = m.loss(out, batch, cfg)
  assert set(terms) - set(terms2) == {dropped}
  np.testing.assert_allclose(total2, total - terms[dropped], rtol=1e-5)


@pytest.mark.parametrize("change,match", [
    (dict(model=dict(context_init=False)), "context_weight > 0 needs"),
    (dict(model=dict(reconstruction=False)), "tau > 0 needs"),
    (dict(input=dict(clip_source="uniform")), "uniform proposals"),
    (dict(loss=dict(weights=dict(match_hgh=0.0))), "unknown terms"),
])
def test_inconsistent_options_are_rejected(change, match):
  c = _tiny_config()
  for group, values in change.items():
    c[group].update(values)
  with pytest.raises(ValueError, match=match):
    families.create_model(c, {"modalities": {"frames": 5}, "vocab_size": 11},
                        rngs=nnx.Rngs(0))


def _released_contrastive(im, s, margin=0.2):
  """CMHSE ``ContrastiveLoss(norm=True)`` (loss.py at e007cfe), rows already normalised."""
  scores = im @ s.T
  d = np.diag(scores)
  cost_s = np.clip(margin + scores - d[:, None], 0, None)
  cost_im = np.clip(margin + scores - d[None, :], 0, None)
  np.fill_diagonal(cost_s, 0)
  np.fill_diagonal(cost_im, 0)
  return (cost_s.sum() + cost_im.sum()) / (im.shape[0] * s.shape[0])


def _released_euclidean(a, b):
  """CMHSE ``EuclideanLoss(norm=True)`` (decoder/loss.py at e007cfe): mean row L2 norm."""
  return np.sqrt(((a - b) ** 2).sum(axis=1)).mean()


def test_default_loss_is_the_released_train_emb_with_norm():
  """The shipped defaults compose Eq. 11 as the released ``VSE.train_emb`` with the README's
  flags (--low_level_loss --reconstruct_loss --lowest_reconstruct_loss --norm): F.normalize
  only on the loss inputs, cluster terms (L(x, x) + L(y, y)) / 2, reconstructions averaged
  over rows, unnormalised targets."""
  from configs.hse import demo as hse_demo  # pylint: disable=g-import-not-at-top
  c = hse_demo.get_config("runlocal")
  meta = {"modalities": {"frames": 5}, "vocab_size": 11}
  batch = _batch(np.random.default_rng(3), b=4)
  m = families.create_model(c, meta, rngs=nnx.Rngs(0))
  out = {k: np.asarray(v, np.float64) for k, v in m(batch).items()}
  total, terms = m.loss({k: jnp.asarray(v, jnp.float32) for k, v in out.items()}, batch, c.loss)
  # Raw embeddings: the encoders do not normalise (their F.normalize lines are commented out).
  assert abs(np.linalg.norm(out["clips"][0, 0]) - 1.0) > 1e-3
  n = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  valid = batch["clip_mask"]
  clips, sents = out["clips"][valid], out["sentences"][valid]
  v, p = out["video"], out["paragraph"]
  want = (_released_contrastive(n(v), n(p))
          + _released_contrastive(n(out["video_context"]), n(out["paragraph_context"]))
          + (_released_contrastive(n(v), n(v)) + _released_contrastive(n(p), n(p))) / 2
          + _released_contrastive(n(clips), n(sents))
          + (_released_contrastive(n(clips), n(clips))
             + _released_contrastive(n(sents), n(sents))) / 2)
  recon = (_released_euclidean(out["clips_hat"][valid], clips)
           + _released_euclidean(out["sentences_hat"][valid], sents))
  frames = batch["clip_frame_mask"] & valid[..., None]
  words = batch["sentence_token_mask"] & valid[..., None]
  lowest = (_released_euclidean(out["frames_hat"][frames], batch["clip_frames"][frames])
            + _released_euclidean(out["words_hat"][words], out["words"][words]))
  want += 5e-4 * recon + 1e-4 * lowest
  np.testing.assert_allclose(float(total), want, rtol=2e-5)
  np.testing.assert_allclose(float(terms["recon_high"]), 5e-4 * recon, rtol=2e-5)
