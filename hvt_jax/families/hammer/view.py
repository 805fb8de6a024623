"""The HAMMER/FLAT views: frames on a fixed grid, B/E/O frame labels, WordPiece queries.

Three views of a canonical record (the family's views, ``hvt_jax.families.hammer``):

* ``hammer_view`` (train; models "hammer" and "flat"): one example per (sentence, video).
  The pipeline shuffles examples across videos, so a batch rarely holds one video's queries
  as each other's negatives, and the loss masks the pairs that do (``video_index``).
* ``video_view`` ("video", evaluation): one example per video record.
* ``query_view`` ("query", evaluation): one example per sentence, text only.

Frames. Each visual modality of ``cfg.modalities`` is resampled to the same grid of
``cfg.max_frames`` (F) frames (``ops.resample_rows``, ``cfg.resample``: "pad" keeps a short
video's own rows and pads, pools a long one to F; "interpolate" always fills F frames) and
the modalities are concatenated on features; the grid's Δ (seconds per frame) is
``frame_seconds``. The subtitle stream (TVR, ``cfg.subtitle``, supp. 6.1.2/6.1.3) is put on
the same grid: frames without a subtitle row are zeros with ``subtitle_mask`` False.

Moments. ``ops.seconds_to_frames`` maps each segment to frames start = floor(st/Δ), end =
ceil(ed/Δ) − 1 (inclusive, clipped to the valid frames); labels are 0 = O(ther), 1 =
B(egin) at ``start_frame``, 2 = E(nd) at ``end_frame`` (paper §3.2, Eq. 6).
``cfg.same_frame_label`` decides the label of a frame that is both (a moment inside one
frame, ≈1 % of TVR val at Δ = 1.5 s): "begin" (default; our choice: with E winning such an
example would teach no start at all, while the inference constraint t_e > t_s already
pairs a start with a later end) or "end".
A zero-length moment (st == ed, ``cfg.zero_length``): "keep" (default: the one frame
containing st, flagged ``zero_length``) or "skip" (dropped). A moment that lies outside
the video (st >= duration or ed <= 0) is dropped. Dropped moments are counted in
``empty_segments`` (carried by the record's first kept example, as the trainer sums it).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvt_jax.input import ops, text_ops

LABEL_O, LABEL_B, LABEL_E = 0, 1, 2
SAME_FRAME_LABEL = ("begin", "end")


def video_frames(example: dict[str, Any], cfg: Any) -> dict[str, tf.Tensor]:
  """The video side of every HAMMER view: frames on the grid, masks, Δ, duration.

  Args:
    example: a decoded canonical record (``features/<m>``, ``timestamps/<m>``,
      ``duration``).
    cfg: ``config.input`` with ``modalities`` (visual modality names, concatenated in this
      order), ``subtitle`` ("" for none), ``max_frames``, ``resample``.

  Returns:
    frames [F, Dv] float32, frame_mask [F] bool, frame_seconds [] float32 (Δ), duration []
    float32 s, and with a subtitle stream subtitle [F, Ds] float32, subtitle_mask [F] bool.

  Raises:
    ValueError: no visual modality, or a modality the record does not have (named).
  """
  names = tuple(cfg.modalities)
  if not names:
    raise ValueError("config.input.modalities is empty: name the visual features")
  for name in names + ((cfg.subtitle,) if cfg.get("subtitle") else ()):
    if f"features/{name}" not in example:
      have = sorted(k[len("features/"):] for k in example if k.startswith("features/"))
      raise ValueError(f"config.input: modality {name!r} is not in the dataset (it has "
                       f"{have})")
  duration = tf.cast(example["duration"], tf.float64)
  tf.debugging.assert_positive(duration, message="hammer view: a record's duration must be "
                               "> 0 seconds")
  first, mask, delta = ops.resample_rows(example[f"features/{names[0]}"],
                                         example[f"timestamps/{names[0]}"], duration,
                                         cfg.max_frames, cfg.resample)
  # The first modality fixes the grid (n frames); the others are put on the same grid.
  n = tf.reduce_sum(tf.cast(mask, tf.int32))
  parts = [first]
  for name in names[1:]:
    frames, _, _ = ops.resample_rows(example[f"features/{name}"],
                                     example[f"timestamps/{name}"], duration,
                                     cfg.max_frames, cfg.resample, num_frames=n)
    parts.append(frames)
  out = {"frames": tf.concat(parts, axis=-1), "frame_mask": mask,
         "frame_seconds": delta, "duration": tf.cast(duration, tf.float32)}
  if cfg.get("subtitle"):
    sub, sub_mask, _ = ops.resample_rows(example[f"features/{cfg.subtitle}"],
                                         example[f"timestamps/{cfg.subtitle}"], duration,
                                         cfg.max_frames, cfg.resample, fill="zeros",
                                         num_frames=n)
    out.update(subtitle=sub, subtitle_mask=sub_mask)
  return out


def frame_labels(start: tf.Tensor, end: tf.Tensor, max_frames: int,
                 same_frame_label: str = "begin") -> tf.Tensor:
  """B/E/O labels of each moment's frames (paper §3.2).

  Args:
    start, end: [S] int32 inclusive frames (start <= end).
    max_frames: static F.
    same_frame_label: the label of a frame where start == end: "begin" or "end".

  Returns:
    [S, F] int32: LABEL_B at start, LABEL_E at end, LABEL_O elsewhere.

  Raises:
    ValueError: unknown same_frame_label.
  """
  if same_frame_label not in SAME_FRAME_LABEL:
    raise ValueError(f"config.input.same_frame_label={same_frame_label!r}; valid: "
                     f"{SAME_FRAME_LABEL}")
  f = tf.range(max_frames)[None, :]
  is_b, is_e = f == start[:, None], f == end[:, None]
  if same_frame_label == "begin":
    labels = tf.where(is_b, LABEL_B, tf.where(is_e, LABEL_E, LABEL_O))
  else:
    labels = tf.where(is_e, LABEL_E, tf.where(is_b, LABEL_B, LABEL_O))
  return tf.cast(labels, tf.int32)


def _moments(example: dict[str, Any], cfg: Any, video: dict[str, tf.Tensor]):
  """Per-sentence frames of the moments, which sentences to keep, and the counts."""
  seg = tf.reshape(tf.cast(example["segments"], tf.float64), [-1, 2])
  duration = tf.cast(example["duration"], tf.float64)
  n = tf.reduce_sum(tf.cast(video["frame_mask"], tf.int32))
  start, end = ops.seconds_to_frames(seg, video["frame_seconds"], n)
  zero = seg[:, 1] <= seg[:, 0]
  keep = (seg[:, 0] < duration) & (seg[:, 1] > 0.0)
  keep = keep | (zero & (seg[:, 0] >= 0.0) & (seg[:, 0] <= duration))
  zero_length = cfg.get("zero_length", "keep")
  if zero_length == "skip":
    keep &= ~zero
  elif zero_length != "keep":
    raise ValueError(f"config.input.zero_length={zero_length!r}; valid: 'keep', 'skip'")
  return seg, start, end, zero, keep


def hammer_view(example: dict[str, Any], cfg: Any,
                seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Training examples: one per (sentence, video) of a record (see the module docstring).

  Args:
    example: a decoded canonical record (WordPiece ``tokens`` without specials).
    cfg: ``config.input`` with the keys of ``video_frames`` plus ``max_words`` (L, specials
      included), ``special_ids``, ``zero_length``, ``same_frame_label``.
    seed: unused (deterministic; the model masks tokens with the step key).

  Returns:
    With N kept sentences: tokens [N, L] int32, token_mask [N, L] bool, frames [N, F, Dv],
    frame_mask [N, F], (subtitle [N, F, Ds], subtitle_mask [N, F]), labels [N, F] int32,
    start_frame / end_frame [N] int32, segment [N, 2] float32 s, frame_seconds [N],
    duration [N] float32, example_mask [N] (True); host statistics truncated [N] bool
    (words cut), zero_length [N] bool, empty_segments [N] int32 (dropped moments of the
    record, on its first kept example).
  """
  del seed
  video = video_frames(example, cfg)
  seg, start, end, zero, keep = _moments(example, cfg, video)
  ids = cfg.special_ids
  tokens, token_mask, cut = text_ops.wordpiece_inputs(example["tokens"], cfg.max_words,
                                                      ids.cls, ids.sep, ids.pad)
  labels = frame_labels(start, end, cfg.max_frames, cfg.get("same_frame_label", "begin"))
  per_sentence = {"tokens": tokens, "token_mask": token_mask, "labels": labels,
                  "start_frame": start, "end_frame": end,
                  "segment": tf.cast(seg, tf.float32), "truncated": cut,
                  "zero_length": zero}
  out = {k: tf.boolean_mask(v, keep) for k, v in per_sentence.items()}
  num = tf.shape(out["tokens"])[0]
  for k, v in video.items():
    out[k] = tf.repeat(v[None], num, axis=0)
  dropped = tf.reduce_sum(tf.cast(~keep, tf.int32))
  out["empty_segments"] = tf.where(tf.range(num) == 0, dropped, 0)
  out["example_mask"] = tf.ones([num], tf.bool)
  return out


def video_view(example: dict[str, Any], cfg: Any,
               seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Evaluation: one example per video (``video_frames`` + ``example_mask``), plus
  ``empty_video`` [] bool: no stream the view reads (the visual modalities, the subtitle)
  has a feature row, so the frames are padding only (``ops.resample_rows`` still marks one
  frame valid); the evaluator leaves the video and its queries out (``evaluation.corpus``)."""
  del seed
  out = video_frames(example, cfg)   # checks that the record has every stream
  streams = tuple(cfg.modalities) + ((cfg.subtitle,) if cfg.get("subtitle") else ())
  rows = tf.add_n([tf.shape(example[f"features/{m}"])[0] for m in streams])
  return dict(out, example_mask=tf.constant(True), empty_video=tf.equal(rows, 0))


def query_view(example: dict[str, Any], cfg: Any,
               seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Evaluation: one example per sentence, text only (tokens never masked).

  Returns:
    tokens [S, L] int32, token_mask [S, L], segment [S, 2] float32 s (zeros where the
    record has no segments), example_mask [S]; host keys sentence_id [S] string
    ("<video_id>#<i>": TVR's desc_id is in the metadata, ``extra.desc_ids[split][video_id]
    [i]``) and truncated [S].
  """
  del seed
  ids = cfg.special_ids
  tokens, token_mask, cut = text_ops.wordpiece_inputs(example["tokens"], cfg.max_words,
                                                      ids.cls, ids.sep, ids.pad)
  num = tf.shape(tokens)[0]
  seg = tf.reshape(tf.cast(example["segments"], tf.float32), [-1, 2])
  seg = tf.concat([seg, tf.zeros([tf.maximum(num - tf.shape(seg)[0], 0), 2])], 0)[:num]
  sentence_id = tf.strings.join([example["video_id"], "#",
                                 tf.strings.as_string(tf.range(num))])
  return {"tokens": tokens, "token_mask": token_mask, "segment": seg,
          "example_mask": tf.ones([num], tf.bool), "sentence_id": sentence_id,
          "truncated": cut}
