"""Small pure TF ops shared by the view builders: frame selection, padding, masks."""

from __future__ import annotations

import tensorflow as tf


def pad_to(x: tf.Tensor, shape: list[int], value=0) -> tf.Tensor:
  """Truncates and right-pads ``x`` to a static ``shape`` (entries None keep that dim)."""
  x = x[tuple(slice(0, s) if s is not None else slice(None) for s in shape)]
  paddings = [[0, (s - tf.shape(x)[i]) if s is not None else 0]
              for i, s in enumerate(shape)]
  x = tf.pad(x, paddings, constant_values=value)
  return tf.ensure_shape(x, shape)


def uniform_indices(start: tf.Tensor, end: tf.Tensor, max_len: int) -> tuple[tf.Tensor,
                                                                              tf.Tensor]:
  """Indices of at most ``max_len`` rows uniformly subsampled from [start, end] inclusive.

  Args:
    start, end: [N] int32 inclusive row ranges (end >= start).
    max_len: static cap on the rows kept per range.

  Returns:
    ([N, max_len] int32 indices (0 where padded), [N, max_len] bool mask).
  """
  n = end - start + 1
  k = tf.minimum(n, max_len)
  j = tf.range(max_len)[None, :]
  # floor(j * n / k) spreads k picks evenly over the n rows (all rows when n <= max_len).
  offset = (j * n[:, None]) // tf.maximum(k[:, None], 1)
  mask = j < k[:, None]
  idx = tf.where(mask, start[:, None] + offset, 0)
  return idx, mask


def segment_rows(segments: tf.Tensor, duration: tf.Tensor, num_rows: tf.Tensor,
                 rule: str = "authors") -> tuple[tf.Tensor, tf.Tensor]:
  """Maps (start, end) seconds to inclusive feature-row ranges.

  ``rule="authors"`` (HSE code): rows floor(t0/dur*T) ... ceil(t1/dur*T), clipped to the
  last row. ``rule="center"``: the rows whose centre lies in [t0, t1] (at least one row).

  Args:
    segments: [S, 2] float seconds. duration: scalar seconds. num_rows: scalar T.

  Returns:
    ([S] start rows, [S] end rows), int32, inclusive, 0 <= start <= end <= T - 1.
  """
  t = tf.cast(num_rows, tf.float32)
  rel = segments / tf.maximum(duration, 1e-6) * t
  if rule == "authors":
    start = tf.math.floor(rel[:, 0])
    end = tf.math.ceil(rel[:, 1])
  elif rule == "center":
    start = tf.math.ceil(rel[:, 0] - 0.5)
    end = tf.math.floor(rel[:, 1] - 0.5)
  else:
    raise ValueError(f"unknown clip rule {rule!r}; valid: 'authors', 'center'")
  last = tf.cast(num_rows - 1, tf.float32)
  start = tf.clip_by_value(start, 0.0, last)
  end = tf.clip_by_value(tf.maximum(end, start), start, last)
  return tf.cast(start, tf.int32), tf.cast(end, tf.int32)


def uniform_segments(duration: tf.Tensor, k: int) -> tf.Tensor:
  """K non-overlapping equal-length proposals over [0, duration] (HSE Table 4): [K, 2]."""
  edges = tf.linspace(0.0, 1.0, k + 1) * duration
  return tf.stack([edges[:-1], edges[1:]], axis=1)
