"""Layers shared by the model families, on flax.nnx's library layers where one fits.

From the library: ``Linear`` (``nnx.Linear``), the attention projections
(``nnx.LinearGeneral``), ``LayerNorm`` (``nnx.LayerNorm``), ``dropout`` (``nnx.Dropout``),
attention without dropout on its probabilities (``jax.nn.dot_product_attention``: XLA's fused
attention on GPUs/TPUs) and the ``LSTM`` (``nnx.RNN`` over ``nnx.OptimizedLSTMCell``).
Written here, because no library layer does the same: the GRU (PyTorch's gate equations, a
dynamic trip count and a custom VJP), attention *with* dropout on its probabilities (BERT's
``attention_probs_dropout_prob``), masked max pooling, and the transformer blocks that
compose the layers.

Parameters carry *logical* axis names (``nnx.with_partitioning``, ``partitioned`` below, or
``param``); the trainer maps them to mesh axes with ``config.sharding_rules`` (see
``hvt_jax.sharding``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]
ZEROS: Initializer = nnx.initializers.zeros_init()
ONES: Initializer = nnx.initializers.ones_init()


def param(value: jax.Array, names: tuple[str | None, ...]) -> nnx.Param:
  """A parameter annotated with logical axis names (mapped by config.sharding_rules)."""
  # eager_sharding=False: models are built under jax.jit/eval_shape without a mesh context;
  # the trainer places parameters from their logical names.
  return nnx.Param(value, eager_sharding=False, sharding_names=names)


def partitioned(init: Initializer, names: tuple[str | None, ...]) -> Initializer:
  """``init`` whose parameter carries logical axis names (``param``'s, for library layers)."""
  return nnx.with_partitioning(init, names, eager_sharding=False)


def _matmul_dtype(arrays: tuple[Any, Any, Any], *, dtype: Any) -> tuple[Any, Any, Any]:
  """``promote_dtype`` of the library layers: inputs and kernel in the matmul dtype, the bias
  as stored (float32); with ``preferred_element_type=float32`` the accumulation and output
  stay float32 whatever the matmul dtype."""
  x, kernel, bias = arrays
  return jnp.asarray(x).astype(dtype), kernel.astype(dtype), bias


class Linear(nnx.Linear):
  """y = x W + b (``nnx.Linear``) with logical axis names and an explicit initialiser.

  Parameters: kernel [in, out] (``names``), bias [out] (``names[1]``; zeros).
  """

  def __init__(self, in_dim: int, out_dim: int, names: tuple[str | None, str | None], *,
               init: Initializer, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, use_bias: bool = True):
    """Builds the layer.

    Args:
      in_dim, out_dim: feature sizes.
      names: logical axis names of the kernel, e.g. ``("embed", "mlp")``.
      init: the kernel's initialiser, e.g. ``jax.nn.initializers.normal(0.02)`` (BERT's
        ``initializer_range``) or ``jax.nn.initializers.lecun_normal()``.
      rngs: parameter initialisation.
      dtype: dtype of the matmul inputs (float32 or bfloat16); accumulation, bias and
        output stay float32.
      param_dtype: dtype of the parameters.
      use_bias: add the bias.
    """
    super().__init__(in_dim, out_dim, use_bias=use_bias, dtype=jnp.dtype(dtype),
                     param_dtype=param_dtype, kernel_init=partitioned(init, names),
                     bias_init=partitioned(ZEROS, names[1:]), promote_dtype=_matmul_dtype,
                     preferred_element_type=jnp.float32, rngs=rngs)


def masked_max(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Channel-wise max over the valid steps (the HSE sequence embedding, supp. "Training Details").

  Args:
    x: [..., T, D] float array, e.g. GRU outputs.
    mask: [..., T] bool array, valid steps.

  Returns:
    [..., D] float array; rows without any valid step give 0 (not -inf), with zero gradient.
  """
  x = jnp.asarray(x)
  mask = jnp.asarray(mask).astype(bool)
  if mask.shape != x.shape[:-1]:
    raise ValueError(f"layers.masked_max: mask {mask.shape} does not match x {x.shape}[:-1]")
  neg_inf = jnp.array(-jnp.inf, dtype=x.dtype)
  out = jnp.max(jnp.where(mask[..., None], x, neg_inf), axis=-2)
  return jnp.where(jnp.any(mask, axis=-1)[..., None], out, jnp.zeros((), x.dtype))


def xavier_gate_blocks(key: jax.Array, in_dim: int, hidden: int,
                       num_gates: int = 3) -> jax.Array:
  """Xavier-uniform initialised per gate block, as the HSE authors' code does.

  Returns:
    [in_dim, num_gates, hidden] float32; each [in_dim, hidden] block has its own fan.
  """
  init = jax.nn.initializers.xavier_uniform()
  keys = jax.random.split(key, num_gates)
  return jnp.stack([init(k, (in_dim, hidden), jnp.float32) for k in keys], axis=1)


def _gates(xp, h, w_h, b_h, dtype):
  """One GRU step's gates from projected inputs xp [B, 3, H] and state h [B, H]."""
  hp = jnp.einsum("bh,hgk->bgk", h.astype(dtype), w_h.astype(dtype),
                  preferred_element_type=jnp.float32) + b_h
  r = jax.nn.sigmoid(xp[:, 0] + hp[:, 0])
  z = jax.nn.sigmoid(xp[:, 1] + hp[:, 1])
  n = jnp.tanh(xp[:, 2] + r * hp[:, 2])
  return r, z, n, hp[:, 2]


def _lengths(mask_tb: jax.Array) -> jax.Array:
  """[B] int32: 1 + each row's last valid step (0 if none); holes before it keep the state."""
  t = mask_tb.shape[0]
  return jnp.max(jnp.where(mask_tb, jnp.arange(1, t + 1, dtype=jnp.int32)[:, None], 0),
                 axis=0)


# Rows per chunk of the GRU (``gru``): a multiple of 8 that keeps the per-step
# [rows, H] x [H, 3H] matmul efficient on CPUs (measured in docs/benchmarks.md).
CHUNK_ROWS = 64


def gru(x: jax.Array, mask_bt: jax.Array, h0_bh: jax.Array, w_i: jax.Array, b_i: jax.Array,
        w_h: jax.Array, b_h: jax.Array, dtype: Any = jnp.float32,
        chunk_rows: int = CHUNK_ROWS) -> tuple[jax.Array, jax.Array]:
  """A GRU over right-padded rows with PyTorch's gate equations (see ``GRU``).

  The rows are sorted by length (longest first) and run in chunks of ``chunk_rows`` rows;
  each chunk's input projection and recurrence stop at the chunk's last valid step, and
  chunks of only empty rows (e.g. clip slots a video does not have) are skipped: the work
  follows the valid steps, as PyTorch's packed sequences, with static shapes. Rows are only
  sorted when there is more than one chunk. Under a multi-device mesh (the rows sharded over
  devices, where a global sort would move them between devices) or with ``chunk_rows=0``
  the rows run as one unsorted chunk through ``gru_recurrence``, the loops stopping at the
  batch's last valid step; the numerics of the two paths differ in the last bits (matmul
  layouts).

  Args:
    x: [B, T, D] inputs of every step, or [B, D] one input for every step (decoders).
    mask_bt: [B, T] bool, True for valid steps (right padding; a hole before a row's last
      valid step keeps the state).
    h0_bh: [B, H] float32 initial state.
    w_i: [D, 3, H] input weights; b_i: [3, H] input bias (gates r, z, n).
    w_h: [H, 3, H] recurrent weights; b_h: [3, H] recurrent bias.
    dtype: matmul dtype (float32, or bfloat16 for speed); accumulation is float32.
    chunk_rows: rows per chunk (0 = one chunk of all rows, unsorted, ``gru_recurrence``).

  Returns:
    (outputs [B, T, H] float32, final state [B, H]); outputs past a row's last valid step
    repeat its final state, and a row without valid steps keeps h0.
  """
  rows = h0_bh.shape[0]
  x, mask_bt, h0_bh = jnp.asarray(x), jnp.asarray(mask_bt, bool), jnp.asarray(h0_bh, jnp.float32)
  if not chunk_rows or jax.sharding.get_abstract_mesh().size > 1:
    # One einsum to time-major projections: XLA picks the layout (with rows sharded over
    # devices, the row-major projection of ``_project`` deadlocked XLA:CPU's in-process
    # collectives in a train step with FSDP rules, tests/test_train.py).
    xp = jnp.einsum("b...d,dgh->...bgh", x.astype(dtype), w_i.astype(dtype),
                    preferred_element_type=jnp.float32) + b_i
    if x.ndim == 2:
      xp = jnp.broadcast_to(xp[None], (mask_bt.shape[1],) + xp.shape)
    out, last = gru_recurrence(xp, mask_bt.T, h0_bh, w_h, b_h, dtype)
    return jnp.swapaxes(out, 0, 1), last
  if rows <= chunk_rows:                                   # one chunk: nothing to sort
    return _gru_rows(x, mask_bt, h0_bh, w_i, b_i, w_h, b_h, dtype, rows)
  padded = -(-rows // chunk_rows) * chunk_rows

  def pad(a):
    return jnp.pad(a, [(0, padded - rows)] + [(0, 0)] * (a.ndim - 1))

  x, mask_bt, h0_bh = pad(x), pad(mask_bt), pad(h0_bh)
  order = jnp.argsort(-_lengths(mask_bt.T), stable=True)   # longest first, empty rows last
  inverse = jnp.argsort(order)
  out, last = _gru_rows(x[order], mask_bt[order], h0_bh[order], w_i, b_i, w_h, b_h, dtype,
                        chunk_rows)
  return out[inverse][:rows], last[inverse][:rows]


def _forward_step(xp_t, state, mask_t, w_h, b_h, dtype):
  """One forward step: (new state [B, H], the values the backward keeps: state, r, z, n and
  h W_hn + b_hn)."""
  r, z, n, hn = _gates(xp_t, state, w_h, b_h, dtype)
  new = jnp.where(mask_t[:, None], (1.0 - z) * n + z * state, state)
  return new, (new, r, z, n, hn)


def _backward_step(dh, d_out_t, mask_t, h_prev_t, gates_t, w_hh, dtype):
  """One backward step: (d state before the step [B, H], d gate pre-activations
  [B, 3, H]); ``w_hh`` is the recurrent weight as [H, 3H]. The state gradient is computed
  as (W_hh d^T)^T: one matmul with a [H, B] output, no transposed copy of the weight (about
  3 % of the HSE step against d [B, 3H] x W_hh^T, docs/benchmarks.md)."""
  r_t, z_t, n_t, hn_t = gates_t
  m = mask_t[:, None]
  g = dh + d_out_t
  g_new = jnp.where(m, g, 0.0)
  da_n = g_new * (1.0 - z_t) * (1.0 - n_t * n_t)
  da_z = g_new * (h_prev_t - n_t) * z_t * (1.0 - z_t)
  da_r = da_n * hn_t * r_t * (1.0 - r_t)
  d_hp = jnp.concatenate([da_r, da_z, da_n * r_t], axis=1)               # [B, 3H]
  dh_prev = (g_new * z_t + jnp.where(m, 0.0, g)
             + jax.lax.dot_general(w_hh, d_hp.astype(dtype), (((1,), (1,)), ((), ())),
                                   preferred_element_type=jnp.float32).T)
  return dh_prev, jnp.stack([da_r, da_z, da_n], axis=1)


def _recurrent_grads(d_xp, r, h_prev, dtype):
  """d W_h [H, 3, H] and d b_h [3, H] from the gate gradients [T, B, 3, H] (the recurrent
  pre-activation gradients: those of the inputs, the n gate's times r)."""
  d_hp = jnp.concatenate([d_xp[:, :, :2], d_xp[:, :, 2:] * r[:, :, None]], axis=2)
  d_w_h = jnp.einsum("tbh,tbgk->hgk", h_prev.astype(dtype), d_hp.astype(dtype),
                     preferred_element_type=jnp.float32)
  return d_w_h, jnp.sum(d_hp, axis=(0, 1))


def _valid(lengths, t_max):
  """[T, B, 1] bool: step t is at most the row's last valid step."""
  return (jnp.arange(t_max, dtype=lengths.dtype)[:, None] < lengths[None])[..., None]


def gru_recurrence(xp_tbgh: jax.Array, mask_tb: jax.Array, h0_bh: jax.Array,
                   w_h: jax.Array, b_h: jax.Array,
                   dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
  """The sequential part of a GRU over projected inputs, all rows in one chunk.

  ``gru``'s path for rows sharded over devices (or ``chunk_rows=0``). The loops stop at
  the batch's last valid step; a custom VJP keeps only the state matmul in the backward
  loop and computes the recurrent weight gradient after it as one [H, T·B] x [T·B, 3H]
  matmul; the backward stores one [T, B, 3, H] buffer.

  Args:
    xp_tbgh: [T, B, 3, H] input projections x W_i + b_i (gates r, z, n), float32.
    mask_tb: [T, B] bool; padded steps keep the state (right padding).
    h0_bh: [B, H] initial state.
    w_h: [H, 3, H] recurrent weights; b_h: [3, H] recurrent bias.
    dtype: matmul dtype (float32, or bfloat16 for speed); accumulation is float32.

  Returns:
    (outputs [T, B, H], final state [B, H]); outputs at padded steps repeat the state.
  """
  return _gru_recurrence(xp_tbgh, mask_tb, h0_bh.astype(jnp.float32), w_h, b_h, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gru_recurrence(xp, mask, h0, w_h, b_h, dtype):
  return _gru_recurrence_fwd(xp, mask, h0, w_h, b_h, dtype)[0]


def _gru_recurrence_fwd(xp, mask, h0, w_h, b_h, dtype):
  t_max, (b, h) = xp.shape[0], h0.shape
  lengths = _lengths(mask)

  def body(t, carry):
    state, bufs = carry
    new, values = _forward_step(xp[t], state, mask[t], w_h, b_h, dtype)
    return new, tuple(buf.at[t].set(v) for buf, v in zip(bufs, values))

  zeros = tuple(jnp.zeros((t_max, b, h), jnp.float32) for _ in range(5))
  state, (out, r, z, n, hn) = jax.lax.fori_loop(0, jnp.max(lengths), body, (h0, zeros))
  # Past its length a row's output is its final state (steps there keep or skip it).
  out = jnp.where(_valid(lengths, t_max), out, state[None])
  h_prev = jnp.concatenate([h0[None], out[:-1]], axis=0)
  return (out, state), (lengths, mask, h_prev, w_h, (r, z, n, hn))


def _gru_recurrence_bwd(dtype, res, cotangents):
  lengths, mask, h_prev, w_h, gates = res
  t_max, b, h = h_prev.shape
  d_out, d_last = (c.astype(jnp.float32) for c in cotangents)
  valid = _valid(lengths, t_max)
  dh = d_last + jnp.sum(jnp.where(valid, 0.0, d_out), axis=0)   # outputs past the length
  d_out = jnp.where(valid, d_out, 0.0)
  w_hh = w_h.reshape(h, 3 * h).astype(dtype)                             # [H, 3H]
  steps = jnp.max(lengths)

  def body(i, carry):
    dh, d_xp = carry
    t = steps - 1 - i
    dh, d = _backward_step(dh, d_out[t], mask[t], h_prev[t], tuple(g[t] for g in gates),
                           w_hh, dtype)
    return dh, d_xp.at[t].set(d)

  dh, d_xp = jax.lax.fori_loop(0, steps, body,
                               (dh, jnp.zeros((t_max, b, 3, h), jnp.float32)))
  d_w_h, d_b_h = _recurrent_grads(d_xp, gates[0], h_prev, dtype)
  return d_xp, None, dh, d_w_h.astype(w_h.dtype), d_b_h


_gru_recurrence.defvjp(_gru_recurrence_fwd, _gru_recurrence_bwd)


def _project(x, w_i, dtype):
  """Input projections: [m, T, D] -> time-major [T, m, 3, H]; [m, D] -> [m, 3, H].

  The inputs are made time-major first, so that the projection is a plain row-major
  [T·m, D] x [D, 3H] matmul whose output is already the recurrence's layout."""
  d, _, h = w_i.shape
  w = w_i.reshape(d, 3 * h).astype(dtype)
  if x.ndim == 2:
    return jnp.dot(x.astype(dtype), w, preferred_element_type=jnp.float32).reshape(-1, 3, h)
  m, t = x.shape[:2]
  x_tm = jnp.swapaxes(x, 0, 1).reshape(t * m, d).astype(dtype)
  return jnp.dot(x_tm, w, preferred_element_type=jnp.float32).reshape(t, m, 3, h)


def _chunk_lengths(mask_bt, m):
  """Per row 1 + its last valid step [B]; per chunk of m rows the longest [B / m]; the
  number of leading chunks with a valid step (the rows are sorted, longest first)."""
  lengths = _lengths(mask_bt.T)
  chunk_len = jnp.max(lengths.reshape(-1, m), axis=1)
  return lengths, chunk_len, jnp.sum(chunk_len > 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _gru_rows(x, mask_bt, h0, w_i, b_i, w_h, b_h, dtype, m):
  """``gru`` on one device: rows sorted longest first in chunks of m rows (or all rows as
  one unsorted chunk, m = rows), as a custom VJP: per chunk the ``gru_recurrence`` steps,
  with the chunk's input projection inside (so that empty chunks cost nothing) and its
  weight gradients as large matmuls after its backward loop."""
  return _gru_rows_forward(x, mask_bt, h0, w_i, b_i, w_h, b_h, dtype, m)[0]


def _gru_rows_forward(x, mask_bt, h0, w_i, b_i, w_h, b_h, dtype, m):
  rows, t_max = mask_bt.shape
  h = h0.shape[1]
  mask_tb = mask_bt.T
  lengths, chunk_len, n_chunks = _chunk_lengths(mask_bt, m)

  def chunk(c, carry):
    state, bufs = carry
    r0 = c * m
    xp = _project(jax.lax.dynamic_slice_in_dim(x, r0, m, axis=0), w_i, dtype)
    mask_c = jax.lax.dynamic_slice_in_dim(mask_tb, r0, m, axis=1)

    def step(t, carry):
      s, bufs = carry
      new, values = _forward_step((xp[t] if xp.ndim == 4 else xp) + b_i, s, mask_c[t],
                                  w_h, b_h, dtype)
      return new, tuple(jax.lax.dynamic_update_slice(buf, v[None], (t, r0, 0))
                        for buf, v in zip(bufs, values))

    s, bufs = jax.lax.fori_loop(0, chunk_len[c], step,
                                (jax.lax.dynamic_slice_in_dim(state, r0, m), bufs))
    return jax.lax.dynamic_update_slice_in_dim(state, s, r0, axis=0), bufs

  zeros = tuple(jnp.zeros((t_max, rows, h), jnp.float32) for _ in range(5))
  state, (out, r, z, n, hn) = jax.lax.fori_loop(0, n_chunks, chunk, (h0, zeros))
  out = jnp.where(_valid(lengths, t_max), out, state[None])
  return (jnp.swapaxes(out, 0, 1), state), (out, (r, z, n, hn))


def _gru_rows_fwd(x, mask_bt, h0, w_i, b_i, w_h, b_h, dtype, m):
  outputs, (out, gates) = _gru_rows_forward(x, mask_bt, h0, w_i, b_i, w_h, b_h, dtype, m)
  return outputs, (x, mask_bt, h0, w_i, w_h, out, gates)


def _gru_rows_bwd(dtype, m, res, cotangents):
  x, mask_bt, h0, w_i, w_h, out, gates = res
  t_max, rows, h = out.shape
  d = w_i.shape[0]
  lengths, chunk_len, n_chunks = _chunk_lengths(mask_bt, m)
  mask_tb = mask_bt.T
  d_out, d_last = (jnp.swapaxes(cotangents[0], 0, 1).astype(jnp.float32),
                   cotangents[1].astype(jnp.float32))
  valid = _valid(lengths, t_max)
  dh = d_last + jnp.sum(jnp.where(valid, 0.0, d_out), axis=0)   # outputs past the length
  d_out = jnp.where(valid, d_out, 0.0)
  h_prev = jnp.concatenate([h0[None], out[:-1]], axis=0)
  w_hh = w_h.reshape(h, 3 * h).astype(dtype)                             # [H, 3H]
  w_i_t = jnp.transpose(w_i.reshape(d, 3 * h)).astype(dtype)              # [3H, D]

  def chunk(c, carry):
    dh_all, d_x, grads = carry
    r0 = c * m
    gates_c, (hp_c, dout_c, mask_c) = (
        tuple(jax.lax.dynamic_slice_in_dim(a, r0, m, axis=1) for a in arrays)
        for arrays in (gates, (h_prev, d_out, mask_tb)))
    steps = chunk_len[c]

    def step(i, carry):
      dh, d_xp = carry
      t = steps - 1 - i
      dh, dg = _backward_step(dh, dout_c[t], mask_c[t], hp_c[t],
                              tuple(g[t] for g in gates_c), w_hh, dtype)
      return dh, d_xp.at[t].set(dg)

    dh_c, d_xp = jax.lax.fori_loop(
        0, steps, step, (jax.lax.dynamic_slice_in_dim(dh_all, r0, m),
                         jnp.zeros((t_max, m, 3, h), jnp.float32)))
    d_w_h, d_b_h = _recurrent_grads(d_xp, gates_c[0], hp_c, dtype)
    x_c = jax.lax.dynamic_slice_in_dim(x, r0, m, axis=0)
    if x.ndim == 2:                                        # one input for every step
      d_xp_in, x_in = jnp.sum(d_xp, axis=0).reshape(m, 3 * h), x_c
    else:
      d_xp_in = d_xp.reshape(t_max * m, 3 * h)
      x_in = jnp.swapaxes(x_c, 0, 1).reshape(t_max * m, d)
    d_w_i = jnp.dot(x_in.T.astype(dtype), d_xp_in.astype(dtype),
                    preferred_element_type=jnp.float32).reshape(d, 3, h)
    d_x_c = jnp.dot(d_xp_in.astype(dtype), w_i_t, preferred_element_type=jnp.float32)
    if x.ndim == 3:
      d_x_c = jnp.swapaxes(d_x_c.reshape(t_max, m, d), 0, 1)
    new = (d_w_i, jnp.sum(d_xp, axis=(0, 1)), d_w_h, d_b_h)
    return (jax.lax.dynamic_update_slice_in_dim(dh_all, dh_c, r0, axis=0),
            jax.lax.dynamic_update_slice_in_dim(d_x, d_x_c, r0, axis=0),
            tuple(a + b for a, b in zip(grads, new)))

  grads = (jnp.zeros((d, 3, h), jnp.float32), jnp.zeros((3, h), jnp.float32),
           jnp.zeros((h, 3, h), jnp.float32), jnp.zeros((3, h), jnp.float32))
  dh, d_x, (d_w_i, d_b_i, d_w_h, d_b_h) = jax.lax.fori_loop(
      0, n_chunks, chunk, (dh, jnp.zeros(x.shape, jnp.float32), grads))
  return (d_x.astype(x.dtype), None, dh, d_w_i.astype(w_i.dtype), d_b_i,
          d_w_h.astype(w_h.dtype), d_b_h)


_gru_rows.defvjp(_gru_rows_fwd, _gru_rows_bwd)


class GRU(nnx.Module):
  """One-layer unidirectional GRU with PyTorch's gate equations.

    r = σ(x W_ir + b_ir + h W_hr + b_hr),  z = σ(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn)),  h' = (1 - z) ⊙ n + z ⊙ h

  Runs ``gru``: rows sorted by length in chunks of ``chunk_rows``, the input projections of a
  chunk's steps one matmul outside its recurrent loop, which only does the [rows, hidden] x
  [hidden, 3 hidden] recurrent matmul.
  """

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs,
               dtype: jnp.dtype = jnp.float32, chunk_rows: int = CHUNK_ROWS):
    self.in_dim, self.hidden, self.dtype, self.chunk_rows = in_dim, hidden, dtype, chunk_rows
    self.w_i = param(xavier_gate_blocks(rngs.params(), in_dim, hidden),
                      ("embed", None, "hidden"))
    self.w_h = param(xavier_gate_blocks(rngs.params(), hidden, hidden),
                      ("hidden_in", None, "hidden"))
    self.b_i = param(jnp.zeros((3, hidden)), (None, "hidden"))
    self.b_h = param(jnp.zeros((3, hidden)), (None, "hidden"))

  def _run(self, x, mask_bt, h0_bh):
    return gru(x, mask_bt, h0_bh, self.w_i[...], self.b_i[...], self.w_h[...], self.b_h[...],
               self.dtype, self.chunk_rows)

  def __call__(self, x_btd: jax.Array, mask_bt: jax.Array | None = None,
               h0_bh: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Encodes a batch of sequences.

    Args:
      x_btd: [batch, time, in_dim] inputs.
      mask_bt: [batch, time] bool, True for valid steps (right padding); None = all valid.
      h0_bh: [batch, hidden] initial state; zeros when None.

    Returns:
      outputs [batch, time, hidden] (values at padded steps repeat the last valid state)
      and the final state [batch, hidden].
    """
    batch, steps = x_btd.shape[:2]
    if mask_bt is None:
      mask_bt = jnp.ones((batch, steps), bool)
    if h0_bh is None:
      h0_bh = jnp.zeros((batch, self.hidden), jnp.float32)
    return self._run(x_btd, mask_bt, h0_bh)

  def decode(self, parent_bd: jax.Array, num_steps: int,
             mask_bt: jax.Array | None = None) -> jax.Array:
    """Decoder use: the parent vector is the input at every step, h0 = 0.

    The input projection is computed once per row ([batch, 3, hidden]) and used at every
    step.

    Args:
      parent_bd: [batch, in_dim] parent vectors.
      num_steps: decoded steps T.
      mask_bt: [batch, T] bool, the steps whose outputs are used (right padding), e.g. the
        children's mask: the recurrence stops at each row's last (as PyTorch's packed
        decoders); None = all steps.

    Returns:
      [batch, num_steps, hidden] hidden states (the reconstructions); past a row's mask
      they repeat its last valid state.
    """
    batch = parent_bd.shape[0]
    if mask_bt is None:
      mask_bt = jnp.ones((batch, num_steps), bool)
    outputs, _ = self._run(parent_bd, mask_bt,
                           jnp.zeros((batch, self.hidden), jnp.float32))
    return outputs


class GRUEncoder(nnx.Module):
  """GRU whose embedding is the channel-wise max over the valid outputs (HSE supp. §1)."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs,
               dtype: jnp.dtype = jnp.float32):
    self.gru = GRU(in_dim, hidden, rngs=rngs, dtype=dtype)

  def __call__(self, x_btd: jax.Array, mask_bt: jax.Array,
               h0_bh: jax.Array | None = None) -> jax.Array:
    """Returns the [batch, hidden] max-pooled embedding (0 for an all-padding row)."""
    outputs, _ = self.gru(x_btd, mask_bt, h0_bh)
    return masked_max(outputs, mask_bt)

  def encode_nested(self, x_bntd: jax.Array, mask_bnt: jax.Array) -> jax.Array:
    """Encodes [batch, n, time, dim] sub-sequences (clips / sentences) -> [batch, n, hidden]."""
    b, n = x_bntd.shape[:2]
    flat = self(x_bntd.reshape((b * n,) + x_bntd.shape[2:]),
                mask_bnt.reshape(b * n, -1))
    return flat.reshape(b, n, -1)


LSTMState = tuple[tuple[jax.Array, jax.Array], ...]


class LSTM(nnx.Module):
  """A stack of unidirectional LSTM layers with PyTorch's gate equations (order i, f, g, o):

    i = σ(x W_ii + h W_hi + b_i), f = σ(x W_if + h W_hf + b_f), g = tanh(x W_ig + h W_hg + b_g)
    o = σ(x W_io + h W_ho + b_o), c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c')

  Each layer is ``nnx.RNN`` over an ``nnx.OptimizedLSTMCell`` (flax's gate order and
  equations are PyTorch's; its one bias is PyTorch's b_ih + b_hh). Layer l > 0 reads layer
  l-1's h'. ``step`` runs the cells for one time step, so the caption decoder's
  teacher-forced pass (``__call__``) and its beam search run the same arithmetic. Weights
  uniform in ±1/sqrt(hidden) and the bias the sum of two such draws (PyTorch's ``nn.LSTM``
  initialisation).

  Parameters of layer l: ``layers/<l>/cell/dense_i/kernel`` [in, 4H] ("embed" or
  "hidden_in", "hidden"), ``.../dense_h/kernel`` [H, 4H] ("hidden_in", "hidden"),
  ``.../dense_h/bias`` [4H] ("hidden",); the 4H axis holds the gates i, f, g, o in blocks.
  """

  def __init__(self, in_dim: int, hidden: int, num_layers: int, *, rngs: nnx.Rngs):
    self.hidden, self.num_layers = hidden, num_layers
    bound = hidden ** -0.5

    def uniform(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -bound, bound)

    def torch_bias(key, shape, dtype=jnp.float32):
      return sum(uniform(k, shape, dtype) for k in jax.random.split(key))

    def cell(l):
      return nnx.OptimizedLSTMCell(
          in_dim if l == 0 else hidden, hidden,
          kernel_init=partitioned(uniform, ("embed" if l == 0 else "hidden_in", "hidden")),
          recurrent_kernel_init=partitioned(uniform, ("hidden_in", "hidden")),
          bias_init=partitioned(torch_bias, ("hidden",)), rngs=rngs)

    # rngs=False: no carry RNG stream is stored (modules hold no RNG state; the carry is
    # always given).
    self.layers = nnx.List([nnx.RNN(cell(l), return_carry=True, rngs=False)
                            for l in range(num_layers)])

  def initial_state(self, batch: int) -> LSTMState:
    """Zero (c, h) per layer (flax's carry order), each [batch, hidden] float32."""
    zeros = jnp.zeros((batch, self.hidden), jnp.float32)
    return tuple((zeros, zeros) for _ in range(self.num_layers))

  def step(self, state: LSTMState, x_bd: jax.Array) -> tuple[LSTMState, jax.Array]:
    """One time step: (state, input [B, in_dim]) -> (new state, top layer's h' [B, H])."""
    new, inp = [], x_bd.astype(jnp.float32)
    for layer, carry in zip(self.layers, state):
      carry, inp = layer.cell(carry, inp)
      new.append(carry)
    return tuple(new), inp

  def __call__(self, x_btd: jax.Array, state: LSTMState | None = None
               ) -> tuple[jax.Array, LSTMState]:
    """Runs the layers over time: [B, T, in_dim] -> (top-layer outputs [B, T, H], state)."""
    state = self.initial_state(x_btd.shape[0]) if state is None else state
    new, out = [], x_btd.astype(jnp.float32)
    for layer, carry in zip(self.layers, state):
      carry, out = layer(out, initial_carry=carry)
      new.append(carry)
    return out, tuple(new)


# ---------------------------------------------------------------------------------------
# Transformer layers (BERT text tower, HAMMER's cross-modal transformers, MCHA).
#
# Randomness is threaded, not stored (as in the flax examples, e.g. gemma): modules hold no
# RNG state; ``__call__`` takes ``train`` and an explicit ``jax.random.key`` and derives one
# key per dropout site from it, so a per-step key from (seed, step) reproduces a run and a
# pure ``jax.value_and_grad`` over ``nnx.split(model, nnx.Param, ...)`` needs nothing else.
# ---------------------------------------------------------------------------------------


ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters of one transformer layer (BERT defaults where BERT has one).

  Attributes:
    embed_dim: width of the residual stream (BERT-base 768, MCHA d_uni 1024).
    num_heads: attention heads (BERT-base 12, MCHA 4).
    mlp_dim: hidden width of the MLP (BERT "intermediate_size": 3072, MCHA 3072).
    head_dim: per-head width; None = embed_dim // num_heads (must divide then).
    kv_dim: width of the key/value input for cross-attention; None = embed_dim.
    dropout_rate: BERT ``hidden_dropout_prob``: dropout on the attention output projection
      and on the MLP output, each before its residual add (BERT 0.1, MCHA 0.1).
    attention_dropout_rate: BERT ``attention_probs_dropout_prob``: dropout on the
      attention probabilities (BERT 0.1).
    pre_ln: False = post-LN as BERT / Vaswani et al. (x = LN(x + sublayer(x)));
      True = pre-LN (x = x + sublayer(LN(x))); a pre-LN stack ends with a final LN.
    layer_norm_eps: LayerNorm epsilon (BERT 1e-12; PyTorch's default 1e-5).
    activation: "gelu" (exact, erf: BERT / HF ``hidden_act="gelu"``), "gelu_tanh" (the tanh
      approximation) or "relu" (Vaswani et al.).
    dtype: dtype of the matmul inputs ("float32" or "bfloat16"); accumulation, softmax,
      LayerNorm and the residual stream stay float32.
    param_dtype: dtype of the parameters (float32).
    init_std: std of the normal initialiser of every kernel (BERT ``initializer_range``
      0.02); biases start at 0, LayerNorm scale at 1 and bias at 0.

  Raises:
    ValueError: on non-positive sizes, rates outside [0, 1), an unknown activation or a
      head_dim that cannot be derived.
  """
  embed_dim: int
  num_heads: int
  mlp_dim: int
  head_dim: int | None = None
  kv_dim: int | None = None
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  pre_ln: bool = False
  layer_norm_eps: float = 1e-12
  activation: str = "gelu"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  init_std: float = 0.02

  def __post_init__(self):
    for name in ("embed_dim", "num_heads", "mlp_dim"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"TransformerConfig.{name} must be > 0, got {getattr(self, name)}")
    for name in ("head_dim", "kv_dim"):
      value = getattr(self, name)
      if value is not None and int(value) <= 0:
        raise ValueError(f"TransformerConfig.{name} must be > 0 or None, got {value}")
    if self.head_dim is None and self.embed_dim % self.num_heads:
      raise ValueError(f"TransformerConfig.embed_dim={self.embed_dim} is not divisible by "
                       f"num_heads={self.num_heads}; set head_dim explicitly")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"TransformerConfig.{name} must be in [0, 1), "
                         f"got {getattr(self, name)}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"TransformerConfig.activation={self.activation!r} unknown; "
                       f"valid: {ACTIVATIONS}")
    if self.layer_norm_eps <= 0:
      raise ValueError(f"TransformerConfig.layer_norm_eps must be > 0, got "
                       f"{self.layer_norm_eps}")

  @property
  def head_size(self) -> int:
    """Per-head width: ``head_dim`` or embed_dim // num_heads."""
    return self.head_dim or self.embed_dim // self.num_heads

  @property
  def needs_key(self) -> bool:
    """Whether ``train=True`` draws random numbers (some dropout rate is > 0)."""
    return self.dropout_rate > 0 or self.attention_dropout_rate > 0


def normal(key: jax.Array, shape: tuple[int, ...], std: float,
           dtype: Any = jnp.float32) -> jax.Array:
  """N(0, std²) of ``shape``: BERT's initialiser of kernels and embeddings."""
  return std * jax.random.normal(key, shape, dtype)


def check_dropout_key(rngs: Any, train: bool, needed: bool, where: str) -> jax.Array | None:
  """Validates the explicit dropout key of a ``__call__``.

  Args:
    rngs: a ``jax.random.key(...)`` (typed) or legacy ``jax.random.PRNGKey(...)`` uint32
      key, or None.
    train: the call's ``train`` flag.
    needed: whether the layer has any dropout rate > 0.
    where: the class name, for the error message.

  Returns:
    The key to draw from, or None when no randomness is needed (eval, or rates all 0).

  Raises:
    TypeError: an ``nnx.Rngs`` object was passed (modules hold no RNG state here).
    ValueError: train=True with dropout > 0 and no key.
  """
  if isinstance(rngs, nnx.Rngs):
    raise TypeError(f"{where}: rngs must be a jax.random.key (e.g. rngs.dropout() or "
                    "jax.random.fold_in(key, step)), not an nnx.Rngs object")
  if not train or not needed:
    return None
  if rngs is None:
    raise ValueError(f"{where}: train=True with dropout > 0 needs an explicit PRNG key: "
                     "pass rngs=jax.random.key(...) (or train=False for evaluation)")
  return rngs


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """``nnx.Dropout`` under this module's explicit-key contract (inverted dropout: zeroes with
  probability ``rate`` and scales kept values by 1/(1-rate)).

  Args:
    x: any-shape float array.
    rate: drop probability in [0, 1).
    key: PRNG key; None (evaluation) or rate 0 returns ``x`` unchanged.

  Returns:
    An array of x's shape and dtype.
  """
  return nnx.Dropout(rate)(x, deterministic=key is None, rngs=key)


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
  """ANDs attention masks of different ranks into one [B, Lq, Lk] (or [B, 1, Lk]) bool mask.

  Args:
    *masks: each None, a key padding mask [B, Lk] (True = valid key) or a full mask
      [B, Lq, Lk] (True = query may attend to key).

  Returns:
    [B, Lq, Lk] bool ([B, 1, Lk] when only padding masks were given), or None if all are
    None.
  """
  out = None
  for mask in masks:
    if mask is None:
      continue
    mask = jnp.asarray(mask).astype(bool)
    mask = mask[:, None, :] if mask.ndim == 2 else mask
    out = mask if out is None else jnp.logical_and(out, mask)
  return out


def _attention_bias_mask(mask: jax.Array | None, b: int, lq: int, lk: int) -> jax.Array | None:
  """Normalises a call's mask to a bool [B, 1 | H, Lq | 1, Lk] broadcastable to the logits."""
  if mask is None:
    return None
  mask = jnp.asarray(mask).astype(bool)
  if mask.ndim == 2:
    expected, mask = (b, lk), mask[:, None, None, :]
  elif mask.ndim == 3:
    expected, mask = (b, lq, lk), mask[:, None]
  elif mask.ndim == 4:
    expected = (b, mask.shape[1], lq, lk)
  else:
    raise ValueError(f"attention mask must be [B, Lk], [B, Lq, Lk] or [B, H, Lq, Lk]; got "
                     f"shape {mask.shape}")
  if mask.shape[0] != b or mask.shape[-1] != lk or mask.shape[-2] not in (1, lq):
    raise ValueError(f"attention mask of shape {mask.shape} does not match batch {b}, "
                     f"query length {lq}, key length {lk} (expected {expected})")
  return mask


class LayerNorm(nnx.LayerNorm):
  """``nnx.LayerNorm`` over the last axis with BERT's / PyTorch's equations, in float32:

    y = (x - mean(x)) / sqrt(var(x) + eps) * scale + bias,   var = mean((x - mean(x))²)

  ``eps`` is passed explicitly (BERT 1e-12; flax's default is 1e-6) and the variance is the
  two-pass one (``use_fast_variance=False``; flax's default E[x²] - E[x]² loses digits when
  |mean| >> std). Parameters: scale [dim] (ones), bias [dim] (zeros), both ("embed",).
  """

  def __init__(self, dim: int, *, eps: float = 1e-12, param_dtype: Any = jnp.float32):
    # The initialisers are constants: a local Rngs leaves the caller's key stream alone.
    super().__init__(dim, epsilon=float(eps), dtype=jnp.float32, param_dtype=param_dtype,
                     use_fast_variance=False, scale_init=partitioned(ONES, ("embed",)),
                     bias_init=partitioned(ZEROS, ("embed",)), rngs=nnx.Rngs(0))


class Attention(nnx.Module):
  """Multi-head scaled dot-product attention (Vaswani et al. 2017, Eq. 1; BERT's layout).

  Self-attention when ``kv`` is None, cross-attention (queries from ``x``, keys and values
  from ``kv``) otherwise: HAMMER's cross-modal layers, MCHA-style query-to-expert attention.
  Without dropout on the probabilities (evaluation, or a rate of 0) the core is
  ``jax.nn.dot_product_attention`` (XLA's fused attention on GPUs/TPUs); with it, the
  softmax and dropout are written out here.

  Submodules (``nnx.LinearGeneral``; H heads, D head_dim, E embed, K kv_dim; logical axes in
  brackets): ``query`` kernel [E, H, D] ("embed", "heads", "kv"), bias [H, D] ("heads",
  "kv"); ``key`` / ``value`` kernel [K, H, D], bias [H, D]; ``out`` kernel [H, D, E]
  ("heads", "kv", "embed"), bias [E] ("embed",).
  Hugging Face BERT stores linears as ``weight`` [out, in] with ``y = x W^T + b`` and splits
  heads as ``view(..., H, D)`` of the output features, so
    query/kernel = query.weight.T.reshape(E, H, D), query/bias = query.bias.reshape(H, D)
    out/kernel = attention.output.dense.weight.T.reshape(H, D, E)
  (``hvt_jax.models.text.hf_layout`` maps a Hugging Face checkpoint onto it).
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    c = config
    self.num_heads, self.head_dim = c.num_heads, c.head_size
    self.dtype = jnp.dtype(c.dtype)
    self.dropout_rate = float(c.attention_dropout_rate)
    e, k, h, d = c.embed_dim, c.kv_dim or c.embed_dim, c.num_heads, c.head_size
    dense = functools.partial(nnx.LinearGeneral, dtype=self.dtype, param_dtype=c.param_dtype,
                              promote_dtype=_matmul_dtype, preferred_element_type=jnp.float32,
                              rngs=rngs)
    init = jax.nn.initializers.normal(c.init_std)
    heads_in = dict(kernel_init=partitioned(init, ("embed", "heads", "kv")),
                    bias_init=partitioned(ZEROS, ("heads", "kv")))
    self.query = dense(e, (h, d), **heads_in)
    self.key = dense(k, (h, d), **heads_in)
    self.value = dense(k, (h, d), **heads_in)
    self.out = dense((h, d), e, axis=(-2, -1),
                     kernel_init=partitioned(init, ("heads", "kv", "embed")),
                     bias_init=partitioned(ZEROS, ("embed",)))

  def __call__(self, x_bqe: jax.Array, kv_bke: jax.Array | None = None,
               mask: jax.Array | None = None, *,
               probs_key: jax.Array | None = None) -> jax.Array:
    """Attends from ``x`` to ``kv`` (or to ``x`` itself).

    Args:
      x_bqe: [B, Lq, E] queries' input.
      kv_bke: [B, Lk, K] keys'/values' input; None = self-attention (kv = x).
      mask: None, [B, Lk] key padding mask, [B, Lq, Lk] or [B, H | 1, Lq, Lk]; bool, True =
        may attend. A query row with no valid key attends uniformly (finite, not NaN).
      probs_key: PRNG key for dropout on the attention probabilities; None = no dropout.

    Returns:
      [B, Lq, E] float32: the attention output after the output projection (+ bias).

    Raises:
      ValueError: a mask whose shape does not match the inputs.
    """
    kv_bke = x_bqe if kv_bke is None else kv_bke
    b, lq, lk = x_bqe.shape[0], x_bqe.shape[1], kv_bke.shape[1]
    mask = _attention_bias_mask(mask, b, lq, lk)
    q, k, v = self.query(x_bqe), self.key(kv_bke), self.value(kv_bke)   # [B, L, H, D] f32
    if probs_key is None or self.dropout_rate == 0.0:
      # Masked logits are a large finite negative: a row without valid keys is uniform.
      ctx = jax.nn.dot_product_attention(*(t.astype(self.dtype) for t in (q, k, v)),
                                         mask=mask)
    else:
      ctx = self._attend_with_dropout(q, k, v, mask, probs_key)
    return self.out(ctx)

  def _attend_with_dropout(self, q, k, v, mask, probs_key):
    """softmax(Q K^T / sqrt(D)) with dropout on the probabilities, times V: [B, Lq, H, D]."""
    # Scaling q before QK^T equals BERT's scaling of the scores (one fewer [B,H,Lq,Lk] op).
    q = q * (self.head_dim ** -0.5)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(self.dtype), k.astype(self.dtype),
                        preferred_element_type=jnp.float32)
    if mask is not None:
      # A finite minimum (not -inf) keeps rows without any valid key finite.
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = dropout(jax.nn.softmax(logits, axis=-1), self.dropout_rate, probs_key)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v.astype(self.dtype),
                      preferred_element_type=jnp.float32)


class Mlp(nnx.Module):
  """Position-wise feed-forward: act(x W_in + b_in) W_out + b_out (BERT intermediate/output).

  Submodules (``Linear``): ``fc_in`` kernel [E, M] ("embed", "mlp"), bias [M] ("mlp",);
  ``fc_out`` kernel [M, E] ("mlp", "embed"), bias [E] ("embed",). HF BERT: fc_in/kernel =
  intermediate.dense.weight.T, fc_out/kernel = output.dense.weight.T.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    c = config
    e, m = c.embed_dim, c.mlp_dim
    self.activation = c.activation
    dense = functools.partial(Linear, init=jax.nn.initializers.normal(c.init_std),
                              dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
    self.fc_in = dense(e, m, ("embed", "mlp"))
    self.fc_out = dense(m, e, ("mlp", "embed"))

  def __call__(self, x_ble: jax.Array) -> jax.Array:
    """[B, L, E] -> [B, L, E] float32."""
    h = self.fc_in(x_ble)
    if self.activation == "relu":
      h = jax.nn.relu(h)
    else:
      h = jax.nn.gelu(h, approximate=self.activation == "gelu_tanh")
    return self.fc_out(h)


class TransformerBlock(nnx.Module):
  """One transformer layer: (self- or cross-) attention + MLP, post-LN (BERT) or pre-LN.

  post-LN (``pre_ln=False``; BERT, Devlin et al. 2019 / HF ``BertLayer``):
    h = LN_attn(x + Drop(Attn(x, kv)));  y = LN_mlp(h + Drop(MLP(h)))
  pre-LN (``pre_ln=True``; Xiong et al. 2020):
    h = x + Drop(Attn(LN_attn(x), kv));  y = h + Drop(MLP(LN_mlp(h)))
  where Attn applies attention-probability dropout inside (``attention_dropout_rate``) and
  Drop is BERT's hidden dropout (``dropout_rate``). For cross-attention ``kv`` is used as
  given in both variants (not normalised here): pass an encoder's (final-LN'd) output.

  Submodules: ``attention`` (Attention), ``attention_norm``, ``mlp`` (Mlp), ``mlp_norm``.
  HF BERT (post-LN): attention_norm = attention.output.LayerNorm, mlp_norm =
  output.LayerNorm (``hvt_jax.models.text`` imports checkpoints).
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.attention = Attention(config, rngs=rngs)
    self.attention_norm = LayerNorm(config.embed_dim, eps=config.layer_norm_eps,
                                    param_dtype=config.param_dtype)
    self.mlp = Mlp(config, rngs=rngs)
    self.mlp_norm = LayerNorm(config.embed_dim, eps=config.layer_norm_eps,
                              param_dtype=config.param_dtype)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool,
               rngs: jax.Array | None = None, kv: jax.Array | None = None) -> jax.Array:
    """Applies the layer.

    Args:
      x: [B, Lq, E] input (any float dtype; the residual stream is float32).
      mask: None, [B, Lk] key padding mask (True = valid), [B, Lq, Lk] or [B, H | 1, Lq, Lk]
        bool (see ``combine_masks``). Outputs at padded *query* positions are computed but
        meaningless; mask them downstream.
      train: True applies dropout (needs ``rngs`` when a rate is > 0); False is
        deterministic and ignores ``rngs``.
      rngs: a ``jax.random.key``; the three dropout sites (attention probabilities,
        attention output, MLP output) use ``jax.random.split(rngs, 3)``, so the same key
        gives the same masks.
      kv: [B, Lk, kv_dim] key/value input for cross-attention; None = self-attention.

    Returns:
      [B, Lq, E] float32.

    Raises:
      ValueError: train=True with dropout > 0 and no key; a mismatched mask.
      TypeError: an ``nnx.Rngs`` object as ``rngs``.
    """
    c = self.config
    key = check_dropout_key(rngs, train, c.needs_key, type(self).__name__)
    probs_key = attn_key = mlp_key = None
    if key is not None:
      probs_key, attn_key, mlp_key = jax.random.split(key, 3)
    x = x.astype(jnp.float32)
    if c.pre_ln:
      h = x + dropout(self.attention(self.attention_norm(x), kv, mask, probs_key=probs_key),
                      c.dropout_rate, attn_key)
      return h + dropout(self.mlp(self.mlp_norm(h)), c.dropout_rate, mlp_key)
    h = self.attention_norm(
        x + dropout(self.attention(x, kv, mask, probs_key=probs_key), c.dropout_rate, attn_key))
    return self.mlp_norm(h + dropout(self.mlp(h), c.dropout_rate, mlp_key))

  def cross_pairs(self, x: jax.Array, kv: jax.Array, kv_mask: jax.Array, *,
                  train: bool = False) -> jax.Array:
    """The cross-attention layer (``__call__`` with ``kv``, evaluation) over a broadcast grid.

    The leading axes of ``x``, ``kv`` and ``kv_mask`` broadcast against each other (NumPy
    rules), e.g. x [1, Bc, R, E] (per video) and kv [Bq, 1, Lk, K] (per query) give every
    (query, video) pair's rows [Bq, Bc, R, E]. Each projection runs on its own side's shape
    (the query projection once per x row, the key/value projections once per kv row), and
    the logits and context are einsums over the grid: nothing is tiled. The arithmetic is
    ``__call__``'s (matmul inputs in the config dtype, float32 accumulation, softmax,
    LayerNorms and the residual stream; ``jax.nn.dot_product_attention``'s scale and
    masking), so the outputs equal ``__call__`` on the tiled inputs up to float
    reassociation.

    Args:
      x: [..., R, E] the attending rows.
      kv: [..., Lk, kv_dim] keys'/values' input.
      kv_mask: [..., Lk] bool key padding mask (True = valid); a row without a valid key
        attends uniformly, as in ``__call__``.
      train: must be False (no dropout here: evaluation only).

    Returns:
      [broadcast(...), R, E] float32.

    Raises:
      ValueError: train=True.
    """
    if train:
      raise ValueError("TransformerBlock.cross_pairs is evaluation-only (no dropout): "
                       "call the block itself to train")
    c, att = self.config, self.attention
    x = x.astype(jnp.float32)
    rows = self.attention_norm(x) if c.pre_ln else x
    q, k, v = (t.astype(att.dtype) for t in (att.query(rows), att.key(kv), att.value(kv)))
    # jax.nn.dot_product_attention's XLA arithmetic, with broadcast leading axes.
    logits = jnp.einsum("...rhd,...lhd->...hrl", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(att.head_dim ** -0.5)
    big_negative = -0.7 * float(jnp.finfo(jnp.float32).max)
    logits = jnp.where(kv_mask.astype(bool)[..., None, None, :], logits, big_negative)
    probs = jax.nn.softmax(logits, axis=-1).astype(att.dtype)
    attended = att.out(jnp.einsum("...hrl,...lhd->...rhd", probs, v))
    if c.pre_ln:
      h = x + attended
      return h + self.mlp(self.mlp_norm(h))
    h = self.attention_norm(x + attended)
    return self.mlp_norm(h + self.mlp(h))


class TransformerStack(nnx.Module):
  """``num_layers`` TransformerBlocks with the same config (+ a final LN when pre-LN).

  Layer i draws its dropout from ``jax.random.fold_in(rngs, i)``. Blocks live in
  ``self.layers`` (an ``nnx.List``), so parameter paths are ``layers/<i>/...``.
  """

  def __init__(self, config: TransformerConfig, num_layers: int, *, rngs: nnx.Rngs,
               final_norm: bool | None = None):
    """Builds the stack.

    Args:
      config: each layer's config.
      num_layers: number of blocks (HAMMER text branch 5, MCHA 2, BERT-base 12).
      rngs: parameter initialisation only.
      final_norm: LayerNorm after the last block; None = ``config.pre_ln`` (pre-LN stacks
        need it, post-LN stacks already end normalised).

    Raises:
      ValueError: num_layers < 1.
    """
    if num_layers < 1:
      raise ValueError(f"TransformerStack needs num_layers >= 1, got {num_layers}")
    self.config = config
    self.layers = nnx.List([TransformerBlock(config, rngs=rngs) for _ in range(num_layers)])
    use_final = config.pre_ln if final_norm is None else final_norm
    self.final_norm = (LayerNorm(config.embed_dim, eps=config.layer_norm_eps,
                                 param_dtype=config.param_dtype) if use_final else None)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool,
               rngs: jax.Array | None = None, kv: jax.Array | None = None) -> jax.Array:
    """[B, Lq, E] -> [B, Lq, E] float32; arguments as ``TransformerBlock.__call__``."""
    key = check_dropout_key(rngs, train, self.config.needs_key, type(self).__name__)
    for i, layer in enumerate(self.layers):
      x = layer(x, mask, train=train, kv=kv,
                rngs=None if key is None else jax.random.fold_in(key, i))
    return x if self.final_norm is None else self.final_norm(x)


class CoAttention(nnx.Module):
  """A co-attentional transformer layer (ViLBERT, Lu et al. 2019, Fig. 2b): two streams
  attend to each other at the same time, each through its own ``TransformerBlock`` with
  cross-attention (queries from its own stream, keys/values from the other's *input*).

    x' = Block_x(x, kv=y, mask=y_mask);   y' = Block_y(y, kv=x, mask=x_mask)

  HAMMER's cross-modal layer (visual attends to the query, the query attends to the
  visual stream). Parameters: ``x_block`` / ``y_block`` with the logical axes of
  ``TransformerBlock`` (their key/value kernels read the other stream's width).
  """

  def __init__(self, x_config: TransformerConfig, y_config: TransformerConfig, *,
               rngs: nnx.Rngs):
    """Builds the two blocks.

    Args:
      x_config, y_config: each stream's layer config; ``kv_dim`` is set here to the other
        stream's ``embed_dim`` (any value given is replaced).
      rngs: parameter initialisation only.
    """
    self.x_block = TransformerBlock(dataclasses.replace(x_config, kv_dim=y_config.embed_dim),
                                    rngs=rngs)
    self.y_block = TransformerBlock(dataclasses.replace(y_config, kv_dim=x_config.embed_dim),
                                    rngs=rngs)

  def __call__(self, x: jax.Array, y: jax.Array, x_mask: jax.Array | None,
               y_mask: jax.Array | None, *, train: bool,
               rngs: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Cross-attends both ways.

    Args:
      x: [B, Lx, Ex]; y: [B, Ly, Ey].
      x_mask, y_mask: [B, Lx] / [B, Ly] bool key padding masks (True = valid) or None.
      train: dropout on (needs ``rngs`` when a rate is > 0).
      rngs: a ``jax.random.key``; the blocks use ``jax.random.split(rngs)``.

    Returns:
      (x' [B, Lx, Ex], y' [B, Ly, Ey]) float32.
    """
    kx = ky = None
    if train and rngs is not None:
      kx, ky = jax.random.split(rngs)
    return (self.x_block(x, y_mask, train=train, rngs=kx, kv=y),
            self.y_block(y, x_mask, train=train, rngs=ky, kv=x))
