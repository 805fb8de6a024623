"""Transformer layers: numpy references of the BERT (post-LN) and pre-LN equations, masks,
the explicit-key dropout contract, logical axis names, gradients over split params, bf16."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hvt_jax import sharding
from hvt_jax.models import layers

E, H, M = 16, 4, 32            # embed, heads, mlp: small enough to run eagerly on CPU


def _config(**kw) -> layers.TransformerConfig:
  return layers.TransformerConfig(**{"embed_dim": E, "num_heads": H, "mlp_dim": M, **kw})


def _block(seed: int = 0, **kw) -> layers.TransformerBlock:
  return layers.TransformerBlock(_config(**kw), rngs=nnx.Rngs(seed))


def _inputs(seed: int, b: int = 2, length: int = 6, dim: int = E) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, length, dim)), jnp.float32)


# ------------------------------------------------------------------ numpy reference (float64)

_erf = np.vectorize(math.erf)


def _np_layer_norm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_gelu(x):
  return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _np_attention(xq, xkv, w, mask, num_heads):
  """softmax(Q K^T / sqrt(d) + mask) V, output projection; HF layout W [out, in]."""
  b, lq, _ = xq.shape
  lk = xkv.shape[1]
  q = xq @ w["q_w"].T + w["q_b"]
  k = xkv @ w["k_w"].T + w["k_b"]
  v = xkv @ w["v_w"].T + w["v_b"]
  d = q.shape[-1] // num_heads
  split = lambda t, n: t.reshape(b, n, num_heads, d).transpose(0, 2, 1, 3)   # [B, H, L, D]
  scores = split(q, lq) @ split(k, lk).transpose(0, 1, 3, 2) / math.sqrt(d)
  if mask is not None:
    mask = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
    scores = scores + np.where(mask, 0.0, -1e9)          # additive mask, as BERT
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  ctx = (probs @ split(v, lk)).transpose(0, 2, 1, 3).reshape(b, lq, num_heads * d)
  return ctx @ w["o_w"].T + w["o_b"]


def _np_bert_layer(x, w, mask, num_heads, eps, kv=None, pre_ln=False):
  """BERT's layer equations (post-LN), or the pre-LN variant, in float64.

  Self-attention attends to the (normalised, when pre-LN) input; cross-attention to ``kv``
  as given.
  """
  mlp = lambda h: _np_gelu(h @ w["i_w"].T + w["i_b"]) @ w["f_w"].T + w["f_b"]
  ln1 = lambda t: _np_layer_norm(t, w["ln1_g"], w["ln1_b"], eps)
  ln2 = lambda t: _np_layer_norm(t, w["ln2_g"], w["ln2_b"], eps)
  if pre_ln:
    h = x + _np_attention(ln1(x), ln1(x) if kv is None else kv, w, mask, num_heads)
    return h + mlp(ln2(h))
  h = ln1(x + _np_attention(x, x if kv is None else kv, w, mask, num_heads))
  return ln2(h + mlp(h))


def _load_hf_layer(block, weights, prefix=""):
  """One HF BertLayer ([out, in] linears, gamma/beta or weight/bias norms) into a post-LN
  block: the reference layout for these tests (the library's importer is text.hf_layout)."""
  c = block.config
  if c.pre_ln:
    raise ValueError("_load_hf_layer: BERT layers are post-LN; build the block with "
                     "pre_ln=False")
  e, h, d = c.embed_dim, c.num_heads, c.head_size

  def get(name):
    for candidate in (name, name.replace(".weight", ".gamma").replace(".bias", ".beta")):
      if prefix + candidate in weights:
        return jnp.asarray(weights[prefix + candidate], jnp.float32)
    raise KeyError(f"_load_hf_layer: {prefix + name!r} not in the checkpoint")

  def put(var, value, source):
    if var[...].shape != value.shape:
      raise ValueError(f"_load_hf_layer: {prefix + source} gives shape {value.shape}, the "
                       f"block expects {var[...].shape}")
    var[...] = value.astype(var[...].dtype)

  att = block.attention
  for name in ("query", "key", "value"):
    src = f"attention.self.{name}"
    put(getattr(att, name).kernel, get(src + ".weight").T.reshape(-1, h, d), src)
    put(getattr(att, name).bias, get(src + ".bias").reshape(h, d), src)
  put(att.out.kernel, get("attention.output.dense.weight").T.reshape(h, d, e),
      "attention.output.dense")
  put(att.out.bias, get("attention.output.dense.bias"), "attention.output.dense")
  for norm, src in ((block.attention_norm, "attention.output.LayerNorm"),
                    (block.mlp_norm, "output.LayerNorm")):
    put(norm.scale, get(src + ".weight"), src)
    put(norm.bias, get(src + ".bias"), src)
  put(block.mlp.fc_in.kernel, get("intermediate.dense.weight").T, "intermediate.dense")
  put(block.mlp.fc_in.bias, get("intermediate.dense.bias"), "intermediate.dense")
  put(block.mlp.fc_out.kernel, get("output.dense.weight").T, "output.dense")
  put(block.mlp.fc_out.bias, get("output.dense.bias"), "output.dense")


def _hf_weights(seed, embed=E, mlp=M, kv_dim=None):
  """Random BERT-layer weights in Hugging Face's naming and [out, in] layout."""
  rng = np.random.default_rng(seed)
  kv_dim = kv_dim or embed
  n = lambda *s: rng.normal(scale=0.3, size=s)
  w = dict(q_w=n(embed, embed), q_b=n(embed), k_w=n(embed, kv_dim), k_b=n(embed),
           v_w=n(embed, kv_dim), v_b=n(embed), o_w=n(embed, embed), o_b=n(embed),
           ln1_g=1 + n(embed), ln1_b=n(embed), i_w=n(mlp, embed), i_b=n(mlp),
           f_w=n(embed, mlp), f_b=n(embed), ln2_g=1 + n(embed), ln2_b=n(embed))
  names = dict(q="attention.self.query", k="attention.self.key", v="attention.self.value",
               o="attention.output.dense", i="intermediate.dense", f="output.dense")
  hf = {}
  for short, long in names.items():
    hf[f"encoder.layer.0.{long}.weight"] = w[f"{short}_w"].astype(np.float32)
    hf[f"encoder.layer.0.{long}.bias"] = w[f"{short}_b"].astype(np.float32)
  # Old TF-converted checkpoints name the LayerNorm parameters gamma/beta: test both.
  hf["encoder.layer.0.attention.output.LayerNorm.gamma"] = w["ln1_g"].astype(np.float32)
  hf["encoder.layer.0.attention.output.LayerNorm.beta"] = w["ln1_b"].astype(np.float32)
  hf["encoder.layer.0.output.LayerNorm.weight"] = w["ln2_g"].astype(np.float32)
  hf["encoder.layer.0.output.LayerNorm.bias"] = w["ln2_b"].astype(np.float32)
  # The reference computes from exactly the float32 values the block receives.
  return {k: v.astype(np.float32).astype(np.float64) for k, v in w.items()}, hf


def _padding(lengths, length):
  return jnp.asarray(np.arange(length)[None] < np.asarray(lengths)[:, None])


# ------------------------------------------------------------------------------------ tests


def test_output_shapes_self_and_cross_attention_and_stack():
  x = _inputs(0, b=3, length=5)
  assert _block()(x, train=False).shape == (3, 5, E)
  cross = _block(kv_dim=12)
  kv = _inputs(1, b=3, length=9, dim=12)
  out = cross(x, _padding([9, 4, 1], 9), train=False, kv=kv)
  assert out.shape == (3, 5, E) and out.dtype == jnp.float32
  stack = layers.TransformerStack(_config(pre_ln=True), 3, rngs=nnx.Rngs(0))
  assert stack(x, train=True, rngs=jax.random.key(0)).shape == (3, 5, E)
  assert stack.final_norm is not None
  assert layers.TransformerStack(_config(), 2, rngs=nnx.Rngs(0)).final_norm is None


def test_post_ln_matches_numpy_bert_layer_with_hf_weights():
  w, hf = _hf_weights(0)
  block = _block(layer_norm_eps=1e-12)
  _load_hf_layer(block, hf, "encoder.layer.0.")
  x = _inputs(1, b=3, length=7)
  mask = _padding([7, 4, 1], 7)
  got = block(x, mask, train=False)
  ref = _np_bert_layer(np.asarray(x, np.float64), w, np.asarray(mask), H, 1e-12)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # Exact (erf) GELU is the default; the tanh approximation is measurably different.
  approx = _block(activation="gelu_tanh")
  _load_hf_layer(approx, hf, "encoder.layer.0.")
  assert float(jnp.max(jnp.abs(approx(x, mask, train=False) - got))) > 1e-5


def test_pre_ln_matches_numpy_and_differs_from_post_ln():
  w, hf = _hf_weights(2)
  post = _block()
  _load_hf_layer(post, hf, "encoder.layer.0.")
  pre = _block(pre_ln=True)
  # Same weights in a pre-LN block: copy the post-LN block's parameter state over.
  nnx.update(pre, nnx.state(post, nnx.Param))
  x = _inputs(3)
  mask = _padding([6, 3], 6)
  got = pre(x, mask, train=False)
  ref = _np_bert_layer(np.asarray(x, np.float64), w, np.asarray(mask), H, 1e-12, pre_ln=True)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(got - post(x, mask, train=False)))) > 1e-2


def test_cross_attention_matches_numpy_with_lk_different_from_lq():
  w, hf = _hf_weights(4, kv_dim=12)
  block = _block(kv_dim=12)
  _load_hf_layer(block, hf, "encoder.layer.0.")
  x, kv = _inputs(5, length=3), _inputs(6, length=8, dim=12)
  kv_mask = _padding([8, 5], 8)
  got = block(x, kv_mask, train=False, kv=kv)
  assert got.shape == (2, 3, E)
  ref = _np_bert_layer(np.asarray(x, np.float64), w, np.asarray(kv_mask), H, 1e-12,
                       kv=np.asarray(kv, np.float64))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # A full [B, Lq, Lk] mask equal to the padding mask gives the same result.
  full = jnp.broadcast_to(kv_mask[:, None, :], (2, 3, 8))
  np.testing.assert_allclose(block(x, full, train=False, kv=kv), got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_padded_key_values_do_not_change_valid_outputs(pre_ln):
  block = _block(pre_ln=pre_ln)
  lengths = [6, 2]
  mask = _padding(lengths, 6)
  x = _inputs(7)
  noise = _inputs(8) * 100.0
  x2 = jnp.where(mask[..., None], x, noise)                 # only padded positions change
  out1, out2 = block(x, mask, train=False), block(x2, mask, train=False)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(out1)[valid], np.asarray(out2)[valid], rtol=1e-5,
                             atol=1e-5)
  # Without the mask, the same change does leak into the valid positions.
  leak = block(x, None, train=False) - block(x2, None, train=False)
  assert float(jnp.max(jnp.abs(np.asarray(leak)[valid]))) > 1e-3


def test_causal_full_mask_combined_with_padding():
  block = _block()
  length = 5
  causal = jnp.tril(jnp.ones((length, length), bool))[None].repeat(2, axis=0)
  pad = _padding([5, 3], length)
  mask = layers.combine_masks(pad, causal, None)
  assert mask.shape == (2, length, length) and layers.combine_masks(None) is None
  x = _inputs(9, length=length)
  x2 = x.at[:, 3:].set(50.0)                                # the "future" of positions 0..2
  np.testing.assert_allclose(block(x, mask, train=False)[:, :3],
                             block(x2, mask, train=False)[:, :3], rtol=1e-5, atol=1e-5)
  # A query row with no valid key stays finite.
  none_valid = jnp.zeros((2, length), bool)
  assert bool(jnp.all(jnp.isfinite(block(x, none_valid, train=False))))
  with pytest.raises(ValueError, match="mask"):
    block(x, jnp.ones((2, length + 1), bool), train=False)


def test_eval_is_deterministic_and_ignores_the_key():
  block = _block(dropout_rate=0.5, attention_dropout_rate=0.5)
  x = _inputs(10)
  a = block(x, train=False)
  b = block(x, train=False, rngs=jax.random.key(1))
  c = block(x, train=False, rngs=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(b, c)


def test_train_dropout_is_a_function_of_the_key():
  block = _block(dropout_rate=0.3, attention_dropout_rate=0.3)
  x = _inputs(11)
  k1, k2 = jax.random.key(1), jax.random.key(2)
  a1, a2, b = (block(x, train=True, rngs=k) for k in (k1, k1, k2))
  np.testing.assert_array_equal(a1, a2)
  assert float(jnp.max(jnp.abs(a1 - b))) > 1e-3
  assert float(jnp.max(jnp.abs(a1 - block(x, train=False)))) > 1e-3
  # Legacy uint32 keys work too; each dropout site alone changes the output.
  assert block(x, train=True, rngs=jax.random.PRNGKey(0)).shape == x.shape
  for rates in ((0.3, 0.0), (0.0, 0.3)):
    only = _block(dropout_rate=rates[0], attention_dropout_rate=rates[1])
    assert float(jnp.max(jnp.abs(only(x, train=True, rngs=k1) - only(x, train=False)))) > 0


def test_zero_dropout_train_equals_eval_without_a_key():
  block = _block(dropout_rate=0.0, attention_dropout_rate=0.0)
  x = _inputs(12)
  np.testing.assert_array_equal(block(x, train=True), block(x, train=False))
  np.testing.assert_array_equal(block(x, train=True, rngs=jax.random.key(3)),
                                block(x, train=False))


def test_training_attention_path_equals_the_fused_evaluation_path():
  """With dropout on the probabilities the softmax is written out (training); without, it is
  jax.nn.dot_product_attention (evaluation). When nothing is dropped they agree, masks and
  rows without any valid key included."""
  att = layers.Attention(_config(kv_dim=12, attention_dropout_rate=1e-9), rngs=nnx.Rngs(0))
  x, kv = _inputs(30, length=4), _inputs(31, length=7, dim=12)
  for mask in (None, _padding([7, 3], 7), jnp.zeros((2, 7), bool),
               jnp.tril(jnp.ones((4, 7), bool))[None].repeat(2, axis=0)):
    fused = att(x, kv, mask)
    written_out = att(x, kv, mask, probs_key=jax.random.key(0))
    np.testing.assert_allclose(written_out, fused, rtol=1e-6, atol=1e-6)


def test_missing_or_wrong_key_raises():
  x = _inputs(13)
  for module in (_block(), layers.TransformerStack(_config(), 2, rngs=nnx.Rngs(0))):
    with pytest.raises(ValueError, match="explicit PRNG key"):
      module(x, train=True)
    with pytest.raises(TypeError, match="jax.random.key"):
      module(x, train=True, rngs=nnx.Rngs(0))


def test_stack_layers_use_folded_keys():
  cfg = _config(dropout_rate=0.2, attention_dropout_rate=0.2)
  stack = layers.TransformerStack(cfg, 2, rngs=nnx.Rngs(5))
  x, key, mask = _inputs(14), jax.random.key(7), _padding([6, 4], 6)
  manual = x
  for i, layer in enumerate(stack.layers):
    manual = layer(manual, mask, train=True, rngs=jax.random.fold_in(key, i))
  np.testing.assert_array_equal(stack(x, mask, train=True, rngs=key), manual)


EXPECTED_AXES = {    # by the parameter's last two path entries
    ("query", "kernel"): ("embed", "heads", "kv"), ("key", "kernel"): ("embed", "heads", "kv"),
    ("value", "kernel"): ("embed", "heads", "kv"), ("query", "bias"): ("heads", "kv"),
    ("key", "bias"): ("heads", "kv"), ("value", "bias"): ("heads", "kv"),
    ("out", "kernel"): ("heads", "kv", "embed"), ("out", "bias"): ("embed",),
    ("fc_in", "kernel"): ("embed", "mlp"), ("fc_in", "bias"): ("mlp",),
    ("fc_out", "kernel"): ("mlp", "embed"), ("fc_out", "bias"): ("embed",),
    ("attention_norm", "scale"): ("embed",), ("attention_norm", "bias"): ("embed",),
    ("mlp_norm", "scale"): ("embed",), ("mlp_norm", "bias"): ("embed",),
    ("final_norm", "scale"): ("embed",), ("final_norm", "bias"): ("embed",),
}


def test_every_param_has_logical_axis_names_and_maps_to_a_mesh():
  stack = layers.TransformerStack(_config(pre_ln=True, kv_dim=12), 2, rngs=nnx.Rngs(0))
  params = nnx.state(stack, nnx.Param)
  flat = nnx.to_flat_state(params)
  assert len(flat) == 2 * 16 + 2                    # 16 per block + the final LayerNorm
  for path, var in flat:
    names = var.get_metadata().get("out_sharding")
    assert names is not None and len(names) == var[...].ndim, (path, names)
    assert all(isinstance(n, str) for n in names), (path, names)
    assert tuple(names) == EXPECTED_AXES[path[-2:]], (path, names)
  # sharding.param_shardings reads them: heads and mlp on "model", the rest replicated.
  mesh = sharding.make_mesh([("data", 4), ("model", 2)])
  rules = (("embed", None), ("heads", "model"), ("kv", None), ("mlp", "model"))
  abstract = nnx.eval_shape(lambda: layers.TransformerStack(_config(pre_ln=True, kv_dim=12), 2,
                                                           rngs=nnx.Rngs(0)))
  _, abstract_params = nnx.split(abstract)          # as train.setup does
  specs = sharding.param_shardings(abstract_params, mesh, rules)
  got = {p: v.value.spec for p, v in nnx.to_flat_state(specs)}
  P = jax.sharding.PartitionSpec
  block0 = ("layers", 0)
  assert got[block0 + ("attention", "query", "kernel")] == P(None, "model", None)
  assert got[block0 + ("attention", "out", "kernel")] == P("model", None, None)
  assert got[block0 + ("mlp", "fc_in", "kernel")] == P(None, "model")
  assert got[block0 + ("mlp", "fc_out", "kernel")] == P("model", None)
  assert got[("final_norm", "scale")] == P(None)


def test_value_and_grad_over_split_params_with_dropout():
  model = layers.TransformerStack(_config(dropout_rate=0.1, attention_dropout_rate=0.1), 2,
                                  rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  assert not jax.tree.leaves(rest)                  # no RNG (or any other) state
  x, mask = _inputs(15), _padding([6, 2], 6)

  @jax.jit
  def loss_and_grad(params, key):
    def loss_fn(p):
      out = nnx.merge(graphdef, p, rest)(x, mask, train=True, rngs=key)
      return jnp.sum(jnp.where(mask[..., None], out, 0.0) ** 2)
    return jax.value_and_grad(loss_fn)(params)

  l1, g1 = loss_and_grad(params, jax.random.key(1))
  l1b, g1b = loss_and_grad(params, jax.random.key(1))
  l2, _ = loss_and_grad(params, jax.random.key(2))
  assert jax.tree.structure(g1) == jax.tree.structure(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(g1))
  assert float(jnp.abs(g1["layers"][0]["attention"]["query"]["kernel"][...]).sum()) > 0
  assert float(l1) == float(l1b) and float(l1) != float(l2)
  np.testing.assert_array_equal(jax.tree.leaves(g1)[0], jax.tree.leaves(g1b)[0])


def test_bfloat16_matmuls_close_to_float32():
  f32, bf16 = _block(3), _block(3, dtype="bfloat16")
  # O(1) weights, so that the attention and MLP branches matter next to the residual.
  _, hf = _hf_weights(0)
  for block in (f32, bf16):
    _load_hf_layer(block, hf, "encoder.layer.0.")
  assert all(v[...].dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  x, mask = _inputs(16), _padding([6, 3], 6)
  a, b = f32(x, mask, train=False), bf16(x, mask, train=False)
  assert b.dtype == jnp.float32
  diff = jnp.abs(a - b)
  assert float(jnp.max(diff)) > 1e-4                      # bf16 really was used
  # bf16 has 8 mantissa bits (~0.4% per rounding); outputs are LayerNormed, O(1).
  assert float(jnp.max(diff)) < 0.1 and float(jnp.mean(diff)) < 0.01
  # And under jit with dropout.
  out = jax.jit(lambda x, k: bf16(x, mask, train=True, rngs=k))(x, jax.random.key(0))
  assert bool(jnp.all(jnp.isfinite(out)))


def test_config_and_loader_errors():
  with pytest.raises(ValueError, match="num_heads"):
    _config(num_heads=5)
  with pytest.raises(ValueError, match="dropout_rate"):
    _config(dropout_rate=1.0)
  with pytest.raises(ValueError, match="activation"):
    _config(activation="swish")
  assert _config(num_heads=5, head_dim=8).head_size == 8

