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


# ---------------------------------------------------------------------------------------
# HAMMER/FLAT: videos resampled to a fixed frame grid, moments in frames of that grid.

RESAMPLE = ("pad", "interpolate")


def seconds_to_frames(segment_s: tf.Tensor, frame_seconds: tf.Tensor,
                      num_frames: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Moments in seconds -> inclusive frame ranges of a grid of Δ-second frames.

  Frame f covers [f·Δ, (f+1)·Δ) seconds. start = floor(st / Δ), end = ceil(ed / Δ) − 1,
  both clipped to [0, num_frames − 1], then end >= start (a zero-length moment, st == ed,
  gets the one frame containing st); computed in float64.
  ``hvt_jax.models.base.frames_to_seconds`` maps back.

  Args:
    segment_s: [..., 2] float seconds (start, end).
    frame_seconds: scalar or [...] float Δ > 0 (seconds per frame).
    num_frames: scalar or [...] int, the valid frames of the video (>= 1).

  Returns:
    (start [...] int32, end [...] int32), 0 <= start <= end <= num_frames − 1.
  """
  seg = tf.cast(segment_s, tf.float64)
  delta = tf.cast(frame_seconds, tf.float64)
  last = tf.cast(num_frames, tf.int32) - 1
  start = tf.cast(tf.math.floor(seg[..., 0] / delta), tf.int32)
  end = tf.cast(tf.math.ceil(seg[..., 1] / delta), tf.int32) - 1
  start = tf.clip_by_value(start, 0, tf.maximum(last, 0))
  end = tf.clip_by_value(end, 0, tf.maximum(last, 0))
  return start, tf.maximum(end, start)


def resample_rows(features: tf.Tensor, timestamps: tf.Tensor, duration: tf.Tensor,
                  max_frames: int, mode: str = "pad", *, fill: str = "nearest",
                  num_frames: tf.Tensor | None = None
                  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Feature rows -> a uniform grid of at most ``max_frames`` frames over [0, duration].

  Frame f covers [f·Δ, (f+1)·Δ) seconds with Δ = duration / n:
    * ``"pad"``: n = min(T, max_frames) (T = rows): a short video keeps its own temporal
      resolution and the grid is padded to max_frames (mask False); a long one is pooled
      down to max_frames frames. Frame f = the mean of the rows whose centre lies in its
      span; a frame without such a row takes (``fill="nearest"``) the row whose centre is
      nearest to the frame's centre, or (``fill="zeros"``: subtitles, supp. 6.1.2) zeros.
    * ``"interpolate"``: n = max_frames always: every frame is the linear interpolation of
      the rows at its centre (by row centres, clamped at both ends); ``fill="zeros"``
      streams use the pooling rule of "pad" on the same grid.

  Args:
    features: [T, D] float rows (T may be 0: all frames zero, one valid frame).
    timestamps: [T, 2] float seconds covered by each row, sorted by time.
    duration: scalar seconds > 0.
    max_frames: static grid size F.
    mode: "pad" or "interpolate".
    fill: "nearest" or "zeros" (see above).
    num_frames: the grid's n (scalar int, 1..max_frames) when another stream fixed it (a
      video's second modality, its subtitles); None: the mode's rule on this stream's T.

  Returns:
    (frames [F, D] float32 (0 at padded frames), frame_mask [F] bool (the first n True;
     with ``fill="zeros"`` only those that got a row), frame_seconds scalar float32 Δ).

  Raises:
    ValueError: unknown mode or fill.
  """
  if mode not in RESAMPLE:
    raise ValueError(f"unknown resampling mode {mode!r}; valid: {RESAMPLE}")
  if fill not in ("nearest", "zeros"):
    raise ValueError(f"unknown fill {fill!r}; valid: 'nearest', 'zeros'")
  feats = tf.cast(features, tf.float32)
  ts = tf.reshape(tf.cast(timestamps, tf.float64), [-1, 2])
  dur = tf.cast(duration, tf.float64)
  num_rows = tf.shape(feats)[0]
  n = num_frames
  # No rows: one all-zero row over the whole video keeps every op below well defined.
  feats = tf.cond(num_rows > 0, lambda: feats, lambda: tf.zeros([1, tf.shape(feats)[1]]))
  ts = tf.cond(num_rows > 0, lambda: ts, lambda: tf.stack([[0.0 * dur, dur]]))
  if n is None:
    n = tf.maximum(tf.minimum(num_rows, max_frames) if mode == "pad" else max_frames, 1)
  delta = dur / tf.cast(n, tf.float64)
  f = tf.range(max_frames)
  valid = f < n
  centre = (tf.cast(f, tf.float64) + 0.5) * delta
  row_centre = (ts[:, 0] + ts[:, 1]) / 2.0
  if mode == "interpolate" and fill == "nearest":
    # Linear interpolation between the row centres around each frame centre.
    hi = tf.minimum(tf.cast(tf.searchsorted(row_centre, centre), tf.int32),
                    tf.shape(feats)[0] - 1)
    lo = tf.maximum(hi - 1, 0)
    c_lo, c_hi = tf.gather(row_centre, lo), tf.gather(row_centre, hi)
    w = tf.where(c_hi > c_lo, (centre - c_lo) / tf.maximum(c_hi - c_lo, 1e-12), 0.0)
    w = tf.cast(tf.clip_by_value(w, 0.0, 1.0), tf.float32)[:, None]
    out = (1.0 - w) * tf.gather(feats, lo) + w * tf.gather(feats, hi)
  else:
    # Rows pooled into the frame whose span holds their centre.
    frame_of_row = tf.cast(tf.math.floor(row_centre / delta), tf.int32)
    inside = (frame_of_row >= 0) & (frame_of_row < n)
    seg = tf.where(inside, frame_of_row, max_frames)       # outside -> a dropped bucket
    sums = tf.math.unsorted_segment_sum(feats, seg, max_frames + 1)[:max_frames]
    counts = tf.math.unsorted_segment_sum(tf.ones_like(seg, tf.float32), seg,
                                          max_frames + 1)[:max_frames]
    out = sums / tf.maximum(counts, 1.0)[:, None]
    if fill == "nearest":
      nearest = tf.argmin(tf.abs(centre[:, None] - row_centre[None, :]), axis=1,
                          output_type=tf.int32)
      out = tf.where((counts > 0)[:, None], out, tf.gather(feats, nearest))
    if fill == "zeros":
      valid &= (counts > 0) & (num_rows > 0)
  out = tf.where(valid[:, None], out, tf.zeros_like(out))
  return out, valid, tf.cast(delta, tf.float32)
