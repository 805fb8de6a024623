"""The HSE/FSE view of a canonical example: clips of frames, sentences of words.

Clips are the feature rows inside each segment (ground-truth proposals, the paper's main
setting) or K uniform proposals (Table 4). Sentence i pairs with clip i (strong
correspondence); with uniform proposals the counts differ and only weak losses apply.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvt_jax.input import ops


def hse_view(example: dict[str, Any], cfg: Any) -> dict[str, tf.Tensor]:
  """Builds fixed-shape HSE inputs from a decoded canonical example.

  Args:
    example: from ``data_prep.writer.load_split`` (flat keys).
    cfg: ``config.input`` with ``modality``, ``max_clips``, ``max_frames_per_clip``,
      ``max_video_frames``, ``max_words``, ``max_paragraph_words``, ``clip_source``,
      ``num_uniform_clips``, ``clip_rule``.

  Returns:
    clip_frames [C, F, D] float32, clip_frame_mask [C, F], clip_mask [C],
    video_frames [Fv, D], video_frame_mask [Fv], sentence_tokens [C, L] int32,
    sentence_token_mask [C, L], sentence_mask [C], paragraph_tokens [Lp],
    paragraph_token_mask [Lp], example_mask [] (True), plus ``truncated`` [] (True when a
    static limit cut clips, sentences or words: counted and logged by the pipeline).
  """
  feats = example[f"features/{cfg.modality}"]
  num_rows = tf.shape(feats)[0]
  duration = example["duration"]
  c, f = cfg.max_clips, cfg.max_frames_per_clip

  if cfg.clip_source == "segments":
    segments = example["segments"]
  elif cfg.clip_source == "uniform":
    segments = ops.uniform_segments(duration, cfg.num_uniform_clips)
  else:
    raise ValueError(f"input.clip_source={cfg.clip_source!r}; valid: 'segments', 'uniform'")
  num_clips = tf.shape(segments)[0]
  segments = segments[:c]
  start, end = ops.segment_rows(segments, duration, num_rows, cfg.clip_rule)
  idx, frame_mask = ops.uniform_indices(start, end, f)
  clip_frames = tf.gather(feats, idx) * tf.cast(frame_mask, feats.dtype)[..., None]

  # Whole video, uniformly subsampled (HSE's context input and FSE's only input).
  vid_idx, vid_mask = ops.uniform_indices(tf.zeros([1], tf.int32),
                                          tf.reshape(num_rows - 1, [1]),
                                          cfg.max_video_frames)
  video_frames = tf.gather(feats, vid_idx[0]) * tf.cast(vid_mask[0], feats.dtype)[:, None]

  tokens = example["tokens"]
  num_sentences = tokens.nrows()
  sent_tokens = ops.pad_to(tokens[:c].to_tensor(), [c, cfg.max_words])
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
      "sentence_mask": tf.range(c) < tf.minimum(tf.cast(num_sentences, tf.int32), c),
      "paragraph_tokens": para,
      "paragraph_token_mask": para > 0,
      "example_mask": tf.constant(True),
      "truncated": ((num_clips > c) | (tf.cast(num_sentences, tf.int32) > c)
                    | (tf.reduce_max(tokens.row_lengths()) > cfg.max_words)
                    | (tf.size(tokens.flat_values) > cfg.max_paragraph_words)),
  }
