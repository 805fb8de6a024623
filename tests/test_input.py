"""Input pipeline tests: clip cutting rule, HSE view, eval padding."""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from configs.hse import demo as hse_demo
from hvt_jax.input import hse_view, ops, pipeline
from tests import tiny_data


def authors_rows(t0, t1, dur, t):
  """The HSE code's rule: floor(t0/dur*T) ... ceil(t1/dur*T), inclusive, clipped."""
  start = min(max(math.floor(t0 / dur * t), 0), t - 1)
  end = min(max(math.ceil(t1 / dur * t), start), t - 1)
  return start, end


def test_segment_rows_authors_rule_matches_reference():
  rng = np.random.default_rng(0)
  for _ in range(50):
    t = int(rng.integers(1, 300))
    dur = float(rng.uniform(1, 200))
    segs = np.sort(rng.uniform(-5, dur + 20, size=(6, 2)), axis=1).astype(np.float32)
    start, end = ops.segment_rows(tf.constant(segs), tf.constant(dur, tf.float32),
                                  tf.constant(t))
    for i, (a, b) in enumerate(segs):
      ref = authors_rows(float(a), float(b), np.float32(dur), t)
      assert (int(start[i]), int(end[i])) == ref, (a, b, dur, t)


def test_uniform_indices_subsample_evenly_and_keep_short_ranges():
  idx, mask = ops.uniform_indices(tf.constant([0, 10, 5]), tf.constant([159, 12, 5]), 80)
  idx, mask = idx.numpy(), mask.numpy()
  assert mask[0].sum() == 80 and np.all(np.diff(idx[0]) == 2)   # 160 rows -> every 2nd
  assert mask[1].sum() == 3 and list(idx[1, :3]) == [10, 11, 12]
  assert mask[2].sum() == 1 and idx[2, 0] == 5
  assert np.all(idx[~mask] == 0)


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      modality="frames", max_clips=3, max_frames_per_clip=4, max_video_frames=8,
      max_words=3, max_paragraph_words=7, clip_source="segments", num_uniform_clips=2,
      clip_rule="authors"))
  c.update(kw)
  return c


def _example():
  feats = np.arange(20 * 2, dtype=np.float32).reshape(20, 2)
  return {
      "features/frames": tf.constant(feats),
      "duration": tf.constant(10.0),
      "segments": tf.constant([[0.0, 2.0], [4.0, 9.9], [1.0, 1.2], [5.0, 6.0]]),
      "tokens": tf.ragged.constant([[3, 4], [5, 6, 7, 8], [9], [10]], dtype=tf.int32),
  }


def test_hse_view_cuts_clips_and_sentences():
  v = {k: np.asarray(x) for k, x in hse_view.hse_view(_example(), _cfg()).items()}
  # Segment [0, 2] of 10 s over 20 rows -> rows 0..4 (5 rows) -> 4 picks: 0, 1, 2, 3.
  assert list(v["clip_frames"][0, :, 0] // 2) == [0, 1, 2, 3]
  # [4, 9.9] -> rows 8..19 (12 rows) -> floor(j*12/4) = 0, 3, 6, 9 -> 8, 11, 14, 17.
  assert list(v["clip_frames"][1, :, 0] // 2) == [8, 11, 14, 17]
  # [1, 1.2] -> rows 2..3 -> 2 frames, the rest masked.
  assert list(v["clip_frame_mask"][2]) == [True, True, False, False]
  assert v["clip_mask"].tolist() == [True, True, True]   # 4th clip cut by max_clips=3
  assert bool(v["truncated"])
  assert v["sentence_tokens"].tolist() == [[3, 4, 0], [5, 6, 7], [9, 0, 0]]
  assert v["sentence_token_mask"].sum() == 6
  assert v["paragraph_tokens"].tolist() == [3, 4, 5, 6, 7, 8, 9]
  assert v["video_frame_mask"].all() and list(v["video_frames"][:, 0] // 2) == [
      0, 2, 5, 7, 10, 12, 15, 17]


def test_truncated_flag_only_when_a_limit_cuts():
  v = hse_view.hse_view(_example(), _cfg(max_clips=4, max_words=4, max_paragraph_words=8))
  assert not bool(v["truncated"])
  v = hse_view.hse_view(_example(), _cfg(max_clips=4, max_words=3, max_paragraph_words=8))
  assert bool(v["truncated"])


def test_hse_view_uniform_proposals():
  v = hse_view.hse_view(_example(), _cfg(clip_source="uniform"))
  assert np.asarray(v["clip_mask"]).tolist() == [True, True, False]
  # Two halves of the video: rows 0..10 and 10..19.
  assert np.asarray(v["clip_frames"])[1, 0, 0] // 2 == 10
  with pytest.raises(ValueError, match="clip_source"):
    hse_view.hse_view(_example(), _cfg(clip_source="bogus"))


def test_eval_dataset_counts_every_example_once(tmp_path):
  tiny_data.write(str(tmp_path), num_train=10, num_val=21)
  c = hse_demo.get_config("runlocal")
  c.input.data_dir = str(tmp_path)
  ds, steps, total = pipeline.eval_dataset(c, "val")
  batches = list(ds.as_numpy_iterator())
  assert (steps, total, len(batches)) == (3, 21, 3)
  mask = np.concatenate([b["example_mask"] for b in batches])
  assert mask.sum() == 21 and not mask[21:].any()
  with pytest.raises(ValueError, match="split 'test' not in dataset"):
    pipeline.eval_dataset(c, "test")
