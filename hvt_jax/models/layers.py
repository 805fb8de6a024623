"""Layers shared by the model families: a GRU encoder/decoder and pooling.

Parameters carry *logical* axis names (``sharding_names`` metadata); the trainer maps them
to mesh axes with ``config.sharding_rules`` (see ``hvt_jax.sharding``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hvt_jax import losses


def param(value: jax.Array, names: tuple[str | None, ...]) -> nnx.Param:
  """A parameter annotated with logical axis names (mapped by config.sharding_rules)."""
  # eager_sharding=False: models are built under jax.jit/eval_shape without a mesh context;
  # the trainer places parameters from their logical names.
  return nnx.Param(value, eager_sharding=False, sharding_names=names)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def gru_recurrence(xp_tbgh: jax.Array, mask_tb: jax.Array, h0_bh: jax.Array,
                   w_h: jax.Array, b_h: jax.Array,
                   dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
  """The sequential part of a GRU: PyTorch's gate equations over projected inputs.

  Two things make it cheaper than ``lax.scan`` + autodiff:
    * the loops stop at the batch's last valid step (a dynamic trip count): steps where
      every sequence is padding cost nothing, forward or backward;
    * a custom VJP keeps only the [B, H] x [H, 3H] state matmul inside the backward loop
      and computes the recurrent weight gradient afterwards as one [H, T·B] x [T·B, 3H]
      matmul, instead of T small accumulating matmuls.

  Args:
    xp_tbgh: [T, B, 3, H] input projections incl. input bias (gates r, z, n).
    mask_tb: [T, B] bool; padded steps keep the state (right padding).
    h0_bh: [B, H] initial state.
    w_h: [H, 3, H] recurrent weights; b_h: [3, H] recurrent bias.
    dtype: matmul dtype (float32, or bfloat16 for speed); accumulation is float32.

  Returns:
    (outputs [T, B, H], final state [B, H]); outputs at padded steps repeat the state.
  """
  return _gru_forward(xp_tbgh, mask_tb, h0_bh, w_h, b_h, dtype)[0]


def _active_steps(mask_tb: jax.Array) -> jax.Array:
  """1 + the last time step at which any sequence is valid (0 if none)."""
  t = mask_tb.shape[0]
  return jnp.max(jnp.where(jnp.any(mask_tb, axis=1), jnp.arange(1, t + 1), 0))


def _gru_forward(xp, mask, h0, w_h, b_h, dtype):
  t_max, (b, h) = xp.shape[0], h0.shape
  steps = _active_steps(mask)

  def body(t, carry):
    state, bufs = carry
    r, z, n, hn = _gates(xp[t], state, w_h, b_h, dtype)
    new = jnp.where(mask[t][:, None], (1.0 - z) * n + z * state, state)
    return new, tuple(buf.at[t].set(v) for buf, v in zip(bufs, (new, r, z, n, hn)))

  zeros = tuple(jnp.zeros((t_max, b, h), jnp.float32) for _ in range(5))
  h_last, (out, r, z, n, hn) = jax.lax.fori_loop(0, steps, body,
                                                 (h0.astype(jnp.float32), zeros))
  # Steps after the last valid one were skipped: every sequence just carries its state.
  out = jnp.where((jnp.arange(t_max) < steps)[:, None, None], out, h_last[None])
  return (out, h_last), (r, z, n, hn)


def _gru_fwd(xp, mask, h0, w_h, b_h, dtype):
  (out, h_last), gates = _gru_forward(xp, mask, h0, w_h, b_h, dtype)
  h_prev = jnp.concatenate([h0[None].astype(jnp.float32), out[:-1]], axis=0)
  return (out, h_last), (mask, h_prev, w_h, gates)


def _gru_bwd(dtype, res, cotangents):
  mask, h_prev, w_h, (r, z, n, hn) = res
  d_out, d_last = cotangents
  t_max = mask.shape[0]
  steps = _active_steps(mask)
  w_h_t = w_h.astype(dtype)
  # Outputs after the last active step all equal the final state.
  skipped = (jnp.arange(t_max) >= steps)[:, None, None]
  dh = d_last.astype(jnp.float32) + jnp.sum(jnp.where(skipped, d_out, 0.0), axis=0)

  def body(i, carry):
    dh, d_xp, d_hp = carry
    t = steps - 1 - i
    m, r_t, z_t, n_t, hn_t = mask[t][:, None], r[t], z[t], n[t], hn[t]
    g = dh + d_out[t]
    g_new = jnp.where(m, g, 0.0)
    da_n = g_new * (1.0 - z_t) * (1.0 - n_t * n_t)
    da_z = g_new * (h_prev[t] - n_t) * z_t * (1.0 - z_t)
    da_r = da_n * hn_t * r_t * (1.0 - r_t)
    hp_t = jnp.stack([da_r, da_z, da_n * r_t], axis=1)                   # [B, 3, H]
    dh_prev = (g_new * z_t + jnp.where(m, 0.0, g)
               + jnp.einsum("bgk,hgk->bh", hp_t.astype(dtype), w_h_t,
                            preferred_element_type=jnp.float32))
    return (dh_prev, d_xp.at[t].set(jnp.stack([da_r, da_z, da_n], axis=1)),
            d_hp.at[t].set(hp_t))

  zeros = jnp.zeros(h_prev.shape[:2] + (3, h_prev.shape[2]), jnp.float32)
  dh0, d_xp, d_hp = jax.lax.fori_loop(0, steps, body, (dh, zeros, zeros))
  d_w_h = jnp.einsum("tbh,tbgk->hgk", h_prev.astype(dtype), d_hp.astype(dtype),
                     preferred_element_type=jnp.float32).astype(w_h.dtype)
  d_b_h = jnp.sum(d_hp, axis=(0, 1))
  return d_xp, None, dh0, d_w_h, d_b_h


gru_recurrence.defvjp(_gru_fwd, _gru_bwd)


class GRU(nnx.Module):
  """One-layer unidirectional GRU with PyTorch's gate equations.

    r = σ(x W_ir + b_ir + h W_hr + b_hr),  z = σ(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn)),  h' = (1 - z) ⊙ n + z ⊙ h

  The input projections of all time steps are one matmul hoisted out of the recurrent
  scan; the scan only does the [batch, hidden] x [hidden, 3 hidden] recurrent matmul.
  """

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs,
               dtype: jnp.dtype = jnp.float32):
    self.in_dim, self.hidden, self.dtype = in_dim, hidden, dtype
    self.w_i = param(xavier_gate_blocks(rngs.params(), in_dim, hidden),
                      ("embed", None, "hidden"))
    self.w_h = param(xavier_gate_blocks(rngs.params(), hidden, hidden),
                      ("hidden_in", None, "hidden"))
    self.b_i = param(jnp.zeros((3, hidden)), (None, "hidden"))
    self.b_h = param(jnp.zeros((3, hidden)), (None, "hidden"))

  def _scan(self, xp_tbgh: jax.Array, mask_bt: jax.Array | None,
            h0_bh: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Runs the recurrence over time-major projected inputs [T, B, 3, H]."""
    t, b = xp_tbgh.shape[:2]
    mask_tb = (jnp.ones((t, b), bool) if mask_bt is None
               else jnp.swapaxes(mask_bt, 0, 1).astype(bool))
    out_tbh, h_last = gru_recurrence(xp_tbgh, mask_tb, h0_bh, self.w_h[...], self.b_h[...],
                                     self.dtype)
    return jnp.swapaxes(out_tbh, 0, 1), h_last

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
    batch = x_btd.shape[0]
    # One matmul for the input projections of every step: [T, B, 3, H].
    xp = jnp.einsum("btd,dgh->tbgh", x_btd.astype(self.dtype),
                    self.w_i[...].astype(self.dtype),
                    preferred_element_type=jnp.float32) + self.b_i[...]
    if h0_bh is None:
      h0_bh = jnp.zeros((batch, self.hidden), jnp.float32)
    return self._scan(xp, mask_bt, h0_bh.astype(jnp.float32))

  def decode(self, parent_bd: jax.Array, num_steps: int) -> jax.Array:
    """Decoder use: the parent vector is the input at every step, h0 = 0.

    The input projection is computed once ([batch, 3, hidden]) and broadcast over time.

    Returns:
      [batch, num_steps, hidden] hidden states (the reconstructions).
    """
    xp = jnp.einsum("bd,dgh->bgh", parent_bd.astype(self.dtype),
                    self.w_i[...].astype(self.dtype),
                    preferred_element_type=jnp.float32) + self.b_i[...]
    xp = jnp.broadcast_to(xp[None], (num_steps,) + xp.shape)
    h0 = jnp.zeros((parent_bd.shape[0], self.hidden), jnp.float32)
    outputs, _ = self._scan(xp, None, h0)
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
    return losses.masked_max(outputs, mask_bt)

  def encode_nested(self, x_bntd: jax.Array, mask_bnt: jax.Array) -> jax.Array:
    """Encodes [batch, n, time, dim] sub-sequences (clips / sentences) -> [batch, n, hidden]."""
    b, n = x_bntd.shape[:2]
    flat = self(x_bntd.reshape((b * n,) + x_bntd.shape[2:]),
                mask_bnt.reshape(b * n, -1))
    return flat.reshape(b, n, -1)
