"""The HSE/FSE view of a canonical example: clips of frames, sentences of words.

Clips are the feature rows inside each segment (ground-truth proposals, the paper's main
setting) or K uniform proposals (Table 4). Sentence i pairs with clip i (strong
correspondence); with uniform proposals the counts differ and only weak losses apply.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvt_jax.input import ops


def hse_view(example: dict[str, Any], cfg: Any,
             seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Builds fixed-shape HSE inputs from a decoded canonical example.

  Seconds map to rows through the stored ``timestamps/<modality>`` (``ops.time_to_rows``,
  rule ``cfg.clip_rule``, zero-length moments per ``cfg.zero_length``); a segment that covers
  no row is dropped with its sentence from the clip/sentence level (its words stay in the
  paragraph) and counted in ``empty_segments``, never filled from another moment. Long clips
  and the whole-video context are subsampled by ``cfg.frame_sampling`` (``ops.sample_rows``).

  Args:
    example: from ``hvt_jax.input.reader.load_split`` (flat keys).
    cfg: ``config.input`` with ``modality``, ``max_clips``, ``max_frames_per_clip``,
      ``max_video_frames``, ``max_words``, ``max_paragraph_words``, ``clip_source``,
      ``num_uniform_clips``, ``clip_rule`` (resolved: not "auto"), ``zero_length``,
      ``frame_sampling``.
    seed: the pipeline's per-record seed; HSE's view is deterministic and ignores it.

  Returns:
    clip_frames [C, F, D] float32, clip_frame_mask [C, F], clip_mask [C],
    video_frames [Fv, D], video_frame_mask [Fv], sentence_tokens [C, L] int32,
    sentence_token_mask [C, L], sentence_mask [C], paragraph_tokens [Lp],
    paragraph_token_mask [Lp], example_mask [] (True), ``empty_video`` [] bool (the video
    keeps no clip: no segment covers a feature row, e.g. its features end before its
    first annotated moment; evaluators leave it out of every ranking,
    ``evaluation.corpus``), plus the host-side statistics ``truncated`` [] bool (a static
    limit cut clips, sentences or words) and ``empty_segments`` [] int32 (segments that
    cover no feature row).

  Raises:
    ValueError: unknown ``clip_source`` or rule.
  """
  del seed
  feats = example[f"features/{cfg.modality}"]
  stamps = example[f"timestamps/{cfg.modality}"]
  num_rows = tf.shape(feats)[0]
  duration = example["duration"]
  c, f = cfg.max_clips, cfg.max_frames_per_clip
  sampling = cfg.get("frame_sampling", "authors")

  tokens = example["tokens"]
  if cfg.clip_source == "segments":
    segments = example["segments"]
  elif cfg.clip_source == "uniform":
    segments = ops.uniform_segments(duration, cfg.num_uniform_clips)
  else:
    raise ValueError(f"input.clip_source={cfg.clip_source!r}; valid: 'segments', 'uniform'")
  start, end, valid = ops.time_to_rows(segments, stamps, duration, cfg.clip_rule,
                                       cfg.get("zero_length", "keep"))
  empty = tf.reduce_sum(tf.cast(~valid, tf.int32))
  start, end = start[valid], end[valid]
  sentences = tokens
  if cfg.clip_source == "segments":   # clip i <-> sentence i: drop both
    sentences = tf.ragged.boolean_mask(tokens, valid)
  num_clips = tf.shape(start)[0]
  idx, frame_mask = ops.sample_rows(start[:c], end[:c], f, sampling)
  clip_frames = tf.gather(feats, idx) * tf.cast(frame_mask, feats.dtype)[..., None]

  # Whole video, subsampled (HSE's context input and FSE's only input).
  vid_idx, vid_mask = ops.sample_rows(tf.zeros([1], tf.int32),
                                      tf.reshape(num_rows - 1, [1]),
                                      cfg.max_video_frames, sampling)
  video_frames = tf.gather(feats, vid_idx[0]) * tf.cast(vid_mask[0], feats.dtype)[:, None]

  num_sentences = tf.cast(sentences.nrows(), tf.int32)
  sent_tokens = ops.pad_to(sentences[:c].to_tensor(), [c, cfg.max_words])
  para = ops.pad_to(tokens.flat_values, [cfg.max_paragraph_words])
  clip_mask = tf.range(c) < tf.minimum(num_clips, c)
  return {
      "clip_frames": ops.pad_to(clip_frames, [c, f, None]),
      "clip_frame_mask": ops.pad_to(frame_mask, [c, f], False) & clip_mask[:, None],
      "clip_mask": clip_mask,
      "video_frames": video_frames,
      "video_frame_mask": vid_mask[0],
      "sentence_tokens": sent_tokens,
      "sentence_token_mask": sent_tokens > 0,
      "sentence_mask": tf.range(c) < tf.minimum(num_sentences, c),
      "paragraph_tokens": para,
      "paragraph_token_mask": para > 0,
      "example_mask": tf.constant(True),
      "empty_video": tf.equal(num_clips, 0),
      "truncated": ((num_clips > c) | (num_sentences > c)
                    | (tf.reduce_max(tokens.row_lengths()) > cfg.max_words)
                    | (tf.size(tokens.flat_values) > cfg.max_paragraph_words)),
      "empty_segments": empty,
  }


def labelled_view(example: dict[str, Any], cfg: Any,
                  seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """The HSE view plus the record's action class (``hse_classifier``).

  Args:
    cfg: as ``hse_view`` plus ``classes`` (the dataset's ``extra["classes"]``, set by
      ``pipeline.view_config``).

  Returns:
    ``hse_view``'s keys plus ``label_id`` [] int32: the index of ``label`` in
    ``cfg.classes``, -1 for a record without a label (``label == ""``).

  Raises:
    tf.errors.InvalidArgumentError: a non-empty label that is not one of the classes.
  """
  out = hse_view(example, cfg, seed)
  classes = tf.constant(list(cfg.classes))
  label = example["label"]
  hits = tf.where(tf.equal(classes, label))[:, 0]
  found = tf.size(hits) > 0
  check = tf.debugging.Assert(found | tf.equal(label, ""),
                              ["label not among the dataset's classes:", label])
  with tf.control_dependencies([check]):
    out["label_id"] = tf.cond(found, lambda: tf.cast(hits[0], tf.int32),
                              lambda: tf.constant(-1, tf.int32))
  return out


def caption_view(example: dict[str, Any], cfg: Any,
                 seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """The HSE view plus what captioning evaluation reports (``hse_captioner``).

  Returns:
    ``hse_view``'s keys plus ``caption_segments`` [C, 2] float32 seconds of clip i's segment
    (zeros for padding) and the host-side ``references`` [] string: the sentences of the
    clips, in clip order, joined by newlines (clip i <-> sentence i, the segments that cover
    a feature row, at most ``max_clips``).
  """
  out = hse_view(example, cfg, seed)
  stamps = example[f"timestamps/{cfg.modality}"]
  _, _, valid = ops.time_to_rows(example["segments"], stamps, example["duration"],
                                 cfg.clip_rule, cfg.get("zero_length", "keep"))
  c = cfg.max_clips
  out["caption_segments"] = ops.pad_to(
      tf.cast(tf.boolean_mask(example["segments"], valid)[:c], tf.float32), [c, 2])
  out["references"] = tf.strings.reduce_join(
      tf.boolean_mask(example["sentences"], valid)[:c], separator="\n")
  return out
