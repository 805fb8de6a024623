"""Small pure TF ops shared by the view builders: seconds to rows, frame selection, padding.

Every view (HSE today, HAMMER and MCHA next) maps a moment in seconds to feature rows with
``time_to_rows`` over the rows' stored timestamps (``timestamps/<modality>``), and subsamples
long row ranges with ``sample_rows``; the rules are named config options with a stated
default per dataset (``default_clip_rule``).
"""

from __future__ import annotations

import tensorflow as tf

CLIP_RULES = ("authors", "overlap", "center")
ZERO_LENGTH = ("keep", "widen", "skip")
FRAME_SAMPLING = ("authors", "exact")
# The rule each dataset's own reference loader uses; everything else: "authors".
#   didemo: the per-video layout's `times` are inclusive row indices and the HSE authors'
#   `didemo_dev/data.py` (CMHSE@a861130, line 69: `video_feat[start_frame: end_frame+1]`)
#   takes rows s..e; the converter stores [s*dur/L, (e+1)*dur/L] s and
#   row r covers [r*dur/L, (r+1)*dur/L] s, so the rows whose centre lies inside are exactly
#   s..e (the floor/ceil rule would add a row, and float rounding another).
_DATASET_CLIP_RULE = {"didemo": "center"}


def default_clip_rule(dataset_name: str) -> str:
  """The clip rule ``input.clip_rule="auto"`` resolves to for a dataset (metadata "name")."""
  return _DATASET_CLIP_RULE.get(dataset_name, "authors")


def pad_to(x: tf.Tensor, shape: list[int], value=0) -> tf.Tensor:
  """Truncates and right-pads ``x`` to a static ``shape`` (entries None keep that dim)."""
  x = x[tuple(slice(0, s) if s is not None else slice(None) for s in shape)]
  paddings = [[0, (s - tf.shape(x)[i]) if s is not None else 0]
              for i, s in enumerate(shape)]
  x = tf.pad(x, paddings, constant_values=value)
  return tf.ensure_shape(x, shape)


def sample_rows(start: tf.Tensor, end: tf.Tensor, max_len: int,
                rule: str = "authors") -> tuple[tf.Tensor, tf.Tensor]:
  """Indices of at most ``max_len`` rows uniformly subsampled from [start, end] inclusive.

  Ranges of n <= max_len rows keep every row. Longer ones keep max_len rows:
    * ``"authors"`` (released HSE code, CMHSE@a861130 ``activity_net/data.py``:55-57 for clips
      and :62-64 for the whole video, ``didemo_dev/data.py``:72-74):
      ``np.arange(0, n, n / max_len).astype(int)``, i.e. offset j = trunc(j * (n / max_len))
      in float64, so where j*n/max_len is an integer float rounding can land one row lower
      (n = 112, max_len = 80: offset 45 is 62, not 63);
    * ``"exact"``: offset j = floor(j * n / max_len) in integer arithmetic.

  Args:
    start, end: [N] int32 inclusive row ranges; a range with end < start is empty.
    max_len: static cap on the rows kept per range.
    rule: "authors" or "exact".

  Returns:
    ([N, max_len] int32 indices (0 where padded), [N, max_len] bool mask).

  Raises:
    ValueError: unknown rule.
  """
  if rule not in FRAME_SAMPLING:
    raise ValueError(f"unknown frame sampling rule {rule!r}; valid: {FRAME_SAMPLING}")
  n = tf.maximum(end - start + 1, 0)
  k = tf.minimum(n, max_len)
  j = tf.range(max_len)[None, :]
  if rule == "exact":
    offset = (j * n[:, None]) // tf.maximum(k[:, None], 1)
  else:
    # step = n / max_len, correctly rounded: the divisor is k (= max_len wherever the step is
    # used), a run-time value, because Grappler rewrites division by a constant as a
    # multiplication by its reciprocal (112 * 0.0125 = 1.4000000000000001, not 1.4).
    step = tf.cast(n[:, None], tf.float64) / tf.cast(tf.maximum(k[:, None], 1), tf.float64)
    # astype(int) truncates; offsets are >= 0, so floor, and cast the integral result.
    sub = tf.cast(tf.math.floor(tf.cast(j, tf.float64) * step), tf.int32)
    offset = tf.where(n[:, None] > max_len, sub, j)
  mask = j < k[:, None]
  idx = tf.where(mask, start[:, None] + offset, 0)
  return idx, mask


def _count(sorted_values: tf.Tensor, queries: tf.Tensor, side: str) -> tf.Tensor:
  """#values <= q (side="right") or < q (side="left") for each query, int32."""
  return tf.cast(tf.searchsorted(sorted_values, queries, side=side), tf.int32)


def covers_uniformly(timestamps: tf.Tensor, duration: tf.Tensor) -> tf.Tensor:
  """True when row r of T covers [r*dur/T, (r+1)*dur/T] (to 1e-3 of a row, float32 stamps).

  That is how converters time features spread over the whole video (ActivityNet C3D,
  ``data_prep.common.uniform_timestamps``), the layout the released HSE code assumes.
  """
  ts = tf.cast(timestamps, tf.float64)
  dur = tf.cast(duration, tf.float64)
  t = tf.shape(ts)[0]
  step = dur / tf.cast(tf.maximum(t, 1), tf.float64)
  r = tf.cast(tf.range(t), tf.float64)
  expected = tf.stack([r * step, (r + 1.0) * step], axis=1)
  tol = 1e-3 * step + 1e-5 * dur
  return (t > 0) & tf.reduce_all(tf.abs(ts - expected) <= tol)


def time_to_rows(segments: tf.Tensor, timestamps: tf.Tensor, duration: tf.Tensor,
                 rule: str = "authors",
                 zero_length: str = "keep") -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Maps moments in seconds to inclusive feature-row ranges, by the rows' own timestamps.

  Row r covers ``timestamps[r] = [a_r, b_r]`` seconds (rows sorted by time). Rules:
    * ``"authors"`` (released HSE code, CMHSE@a861130 ``activity_net/data.py``:48-53): rows
      floor(t0/dur*T) ... ceil(t1/dur*T) in float64 (end raised to start if below it),
      clipped to the last row; a start past the last row gives no rows (the code's empty
      slice). When the rows do not cover the duration uniformly
      (features shorter than the video, a 1.5 s grid, dropped rows), the same rule in the
      timestamp domain: from the last row starting at or before t0 to the first row starting
      at or after t1 (clipped to the last row); identical to the formula for uniform rows.
      A moment that ends before the first row or starts at or after the last row's end has
      no rows.
    * ``"overlap"``: the rows whose open span (a_r, b_r) meets [t0, t1] (a moment sharing
      only an edge with a row does not take it; a point inside a row takes that row).
    * ``"center"``: the rows whose centre lies in [t0, t1]; a moment inside the rows' span
      that holds no centre gets the one row containing its midpoint.
  ``zero_length`` (t0 == t1, e.g. ActivityNet's [34.77, 34.77] in v_N7ppHQNikv8): "keep"
  applies the rule as is (retrieval: the released code cuts floor..ceil, 1-2 rows),
  "widen" gives the one row containing t0 (a localization target a prediction can reach),
  "skip" gives no rows.

  Args:
    segments: [S, 2] float seconds (start, end); computed in float64.
    timestamps: [T, 2] float seconds covered by each row.
    duration: scalar seconds.
    rule: "authors", "overlap" or "center".
    zero_length: "keep", "widen" or "skip".

  Returns:
    (start [S] int32, end [S] int32, valid [S] bool): inclusive rows, 0 <= start <= end <=
    T - 1 where valid; start = end = 0 where a moment has no rows (callers count those and
    never fill them from another moment).

  Raises:
    ValueError: unknown rule or zero_length option.
  """
  if rule not in CLIP_RULES:
    raise ValueError(f"unknown clip rule {rule!r}; valid: {CLIP_RULES}")
  if zero_length not in ZERO_LENGTH:
    raise ValueError(f"unknown zero_length option {zero_length!r}; valid: {ZERO_LENGTH}")
  seg = tf.reshape(tf.cast(segments, tf.float64), [-1, 2])
  ts = tf.reshape(tf.cast(timestamps, tf.float64), [-1, 2])
  dur = tf.cast(duration, tf.float64)
  t0, t1 = seg[:, 0], seg[:, 1]
  num_rows = tf.shape(ts)[0]
  last = num_rows - 1
  a, b = ts[:, 0], ts[:, 1]
  first_a = tf.reduce_min(tf.concat([a, [tf.float64.max]], 0))
  last_b = tf.reduce_max(tf.concat([b, [tf.float64.min]], 0))
  inside = (t1 >= first_a) & (t0 < last_b)

  if rule == "authors":
    def formula():
      rows = tf.cast(num_rows, tf.float64)
      return (tf.cast(tf.math.floor(t0 / dur * rows), tf.int32),
              tf.cast(tf.math.ceil(t1 / dur * rows), tf.int32))

    def by_timestamps():
      return _count(a, t0, "right") - 1, _count(a, t1, "left")

    start, end = tf.cond(covers_uniformly(ts, dur), formula, by_timestamps)
    start = tf.maximum(start, 0)
    valid = inside & (start <= last)
    end = tf.minimum(tf.maximum(end, start), last)
  elif rule == "overlap":
    start = _count(b, t0, "right")          # first row ending after t0 (b sorted as a)
    end = _count(a, t1, "left") - 1         # last row starting before t1
    valid = start <= end
  else:
    c = (a + b) / 2.0
    start = _count(c, t0, "left")           # first centre >= t0
    end = _count(c, t1, "right") - 1        # last centre <= t1
    mid = tf.clip_by_value(_count(a, (t0 + t1) / 2.0, "right") - 1, 0, tf.maximum(last, 0))
    empty = start > end
    start = tf.where(empty, mid, start)
    end = tf.where(empty, mid, end)
    valid = inside & (num_rows > 0)

  zero = t1 <= t0
  if zero_length == "skip":
    valid &= ~zero
  elif zero_length == "widen":
    row = tf.clip_by_value(_count(a, t0, "right") - 1, 0, tf.maximum(last, 0))
    start = tf.where(zero, row, start)
    end = tf.where(zero, row, end)
    valid = tf.where(zero, (t0 >= first_a) & (t0 <= last_b), valid)
  start = tf.where(valid, start, 0)
  end = tf.where(valid, end, 0)
  return start, end, valid


def uniform_segments(duration: tf.Tensor, k: int) -> tf.Tensor:
  """K non-overlapping equal-length proposals over [0, duration] (HSE Table 4): [K, 2]."""
  edges = tf.linspace(tf.constant(0.0, tf.float64), 1.0, k + 1) * tf.cast(duration,
                                                                            tf.float64)
  return tf.stack([edges[:-1], edges[1:]], axis=1)
