"""HAMMER/FLAT input: seconds <-> frames, resampling to the frame grid, B/E/O labels and the
three views, with the issue's edge cases (a moment at the very end, a moment longer than
max_frames after resampling, zero-length moments, a video shorter than one clip)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from configs.hammer import activitynet
from hvt_jax.input import ops, pipeline
from hvt_jax.families.hammer import view as hammer_view
from hvt_jax.models import base
from tests import tiny_data

IDS = dict(pad=0, unk=1, cls=2, sep=3, mask=4)


def _cfg(**kw):
  c = dict(modalities=("i3d",), subtitle="", max_frames=8, max_words=6, resample="pad",
           zero_length="keep", same_frame_label="begin", special_ids=IDS)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def _record(rows, duration, segments, *, row_seconds=1.0, subtitle_rows=None, dim=3):
  """A decoded canonical record: row r of i3d = [r, r, r] covering [r·s, (r+1)·s)."""
  starts = np.arange(rows, dtype=np.float32) * row_seconds
  stamps = np.stack([starts, np.minimum(starts + row_seconds, duration)], 1)
  feats = np.repeat(np.arange(rows, dtype=np.float32)[:, None], dim, 1)
  rec = {"video_id": tf.constant("v"), "duration": tf.constant(duration, tf.float64),
         "features/i3d": tf.constant(feats), "timestamps/i3d": tf.constant(stamps),
         "segments": tf.constant(np.asarray(segments, np.float64).reshape(-1, 2)),
         "tokens": tf.ragged.constant([[10 + i, 11 + i] for i in range(len(segments))],
                                      dtype=tf.int32, row_splits_dtype=tf.int64)}
  if subtitle_rows is not None:
    sub = np.asarray(subtitle_rows)
    rec["features/subtitle"] = tf.constant(np.ones((len(sub), 2), np.float32)
                                           * (sub[:, None] + 1))
    rec["timestamps/subtitle"] = tf.constant(stamps[sub] if len(sub) else
                                             np.zeros((0, 2), np.float32))
  return rec


def _np(d):
  return {k: np.asarray(v) for k, v in d.items()}


def test_seconds_to_frames_and_back():
  seg = np.array([[0.0, 10.0], [3.0, 3.0], [9.9, 12.0], [0.0, 1.0], [2.5, 4.5],
                  [4.0, 5.0]])
  start, end = (np.asarray(x) for x in ops.seconds_to_frames(tf.constant(seg), 1.25, 8))
  # floor(st/Δ), ceil(ed/Δ) − 1, clipped to [0, 7], end >= start.
  np.testing.assert_array_equal(start, [0, 2, 7, 0, 2, 3])
  np.testing.assert_array_equal(end, [7, 2, 7, 0, 3, 3])
  sec = base.frames_to_seconds(start, end, 1.25, 10.0)
  np.testing.assert_allclose(sec, [[0, 10], [2.5, 3.75], [8.75, 10], [0, 1.25],
                                   [2.5, 5.0], [3.75, 5.0]])
  # Every mapped moment (inside the video) is covered by its frames, within one frame.
  inside = seg[:, 1] <= 10.0
  assert (sec[inside, 0] <= seg[inside, 0]).all() and (sec[inside, 1] >= seg[inside, 1]).all()
  assert (seg[inside, 0] - sec[inside, 0] < 1.25).all()
  # The same function inside jit on jax arrays (the model's localize).
  got = jax.jit(base.frames_to_seconds)(jnp.asarray(start), jnp.asarray(end),
                                        jnp.float32(1.25), jnp.float32(10.0))
  np.testing.assert_allclose(np.asarray(got), sec, rtol=1e-6)


def test_resample_pad_keeps_rows_pools_long_videos_and_interpolates():
  # 7 rows of 1.5 s over 10 s (TVR-like grid, last row partial), 8 frames: one row/frame.
  starts = np.arange(7) * 1.5
  ts = np.stack([starts, np.minimum(starts + 1.5, 10)], 1)
  f = np.arange(7, dtype=np.float32)[:, None]
  out, mask, delta = (np.asarray(x) for x in ops.resample_rows(f, ts, 10.0, 8, "pad"))
  np.testing.assert_array_equal(out[:, 0], [0, 1, 2, 3, 4, 5, 6, 0])
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 1, 1, 0])
  np.testing.assert_allclose(delta, 10 / 7, rtol=1e-6)
  # Longer than the grid: rows pooled (mean of the rows whose centre falls in the frame).
  out, mask, delta = (np.asarray(x) for x in ops.resample_rows(f, ts, 10.0, 4, "pad"))
  np.testing.assert_allclose(out[:, 0], [0.5, 2, 3.5, 5.5])
  assert mask.all() and np.isclose(delta, 2.5)
  # Interpolate: always max_frames frames, linear between row centres.
  out, mask, delta = (np.asarray(x) for x in ops.resample_rows(f, ts, 10.0, 8,
                                                               "interpolate"))
  centres = (np.arange(8) + 0.5) * 1.25
  np.testing.assert_allclose(out[:, 0], np.interp(centres, ts.mean(1), f[:, 0]), atol=1e-5)
  assert mask.all()
  with pytest.raises(ValueError, match="resampling mode"):
    ops.resample_rows(f, ts, 10.0, 8, "stretch")


def test_labels_from_segments_and_same_frame_rule():
  start, end = tf.constant([0, 2, 5]), tf.constant([3, 2, 7])
  want = np.zeros((3, 8), int)
  for i, (s, e) in enumerate([(0, 3), (2, 2), (5, 7)]):
    want[i, e], want[i, s] = 2, 1            # "begin" wins a shared frame
  np.testing.assert_array_equal(hammer_view.frame_labels(start, end, 8), want)
  got = np.asarray(hammer_view.frame_labels(start, end, 8, "end"))
  assert got[1, 2] == 2 and (got[[0, 2]] == want[[0, 2]]).all()
  with pytest.raises(ValueError, match="same_frame_label"):
    hammer_view.frame_labels(start, end, 8, "both")


def test_view_edge_cases():
  # 20 rows of 1 s, grid of 8 frames (pooled, Δ = 2.5 s). Moments: the very end, the whole
  # video and beyond (longer than max_frames after resampling), zero-length, outside.
  rec = _record(20, 20.0, [[17.0, 20.0], [0.0, 35.0], [6.0, 6.0], [25.0, 30.0],
                           [4.9, 5.1]])
  ex = _np(hammer_view.hammer_view(rec, _cfg()))
  assert ex["tokens"].shape == (4, 6) and ex["frames"].shape == (4, 8, 3)
  np.testing.assert_array_equal(ex["start_frame"], [6, 0, 2, 1])
  np.testing.assert_array_equal(ex["end_frame"], [7, 7, 2, 2])
  np.testing.assert_array_equal(ex["labels"][0], [0, 0, 0, 0, 0, 0, 1, 2])
  np.testing.assert_array_equal(ex["labels"][1], [1, 0, 0, 0, 0, 0, 0, 2])
  np.testing.assert_array_equal(ex["labels"][2], [0, 0, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(ex["zero_length"], [0, 0, 1, 0])
  np.testing.assert_array_equal(ex["empty_segments"], [1, 0, 0, 0])   # [25, 30] dropped
  np.testing.assert_allclose(ex["frame_seconds"], 2.5)
  assert ex["frame_mask"].all() and ex["example_mask"].all()
  frame_of_row = np.floor((np.arange(20) + 0.5) / 2.5)          # by the rows' centres
  np.testing.assert_allclose(ex["frames"][0, :, 0],
                             [np.arange(20)[frame_of_row == f].mean() for f in range(8)])
  np.testing.assert_array_equal(ex["tokens"][0], [2, 10, 11, 3, 0, 0])
  # zero_length="skip": the zero-length moment is dropped and counted too.
  ex = _np(hammer_view.hammer_view(rec, _cfg(zero_length="skip")))
  np.testing.assert_array_equal(ex["start_frame"], [6, 0, 1])
  np.testing.assert_array_equal(ex["empty_segments"], [2, 0, 0])


def test_video_shorter_than_one_clip_and_subtitles():
  # 3 rows of 1.5 s: 3 valid frames of a grid of 8 (clips of 4: the second clip is empty);
  # subtitles only on rows 0 and 2 (TVR drops rows without text): zeros and mask False.
  rec = _record(3, 4.5, [[3.0, 4.5], [0.0, 4.5]], row_seconds=1.5, subtitle_rows=[0, 2])
  ex = _np(hammer_view.hammer_view(rec, _cfg(subtitle="subtitle")))
  np.testing.assert_array_equal(ex["frame_mask"][0], [1, 1, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(ex["start_frame"], [2, 0])
  np.testing.assert_array_equal(ex["end_frame"], [2, 2])
  np.testing.assert_array_equal(ex["subtitle_mask"][0], [1, 0, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(ex["subtitle"][0, :, 0], [1, 0, 3, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(ex["frame_seconds"], 1.5)
  assert (ex["frames"][0, 3:] == 0).all()
  video = _np(hammer_view.video_view(rec, _cfg(subtitle="subtitle")))
  np.testing.assert_array_equal(video["frames"], ex["frames"][0])
  assert video["duration"] == 4.5 and video["example_mask"]
  with pytest.raises(ValueError, match="'resnet' is not in the dataset"):
    hammer_view.video_view(rec, _cfg(modalities=("i3d", "resnet")))


def test_query_view_and_pipeline(tmp_path):
  rec = _record(4, 4.0, [[0.0, 1.0], [1.0, 3.0]])
  q = _np(hammer_view.query_view(rec, _cfg()))
  assert [s.decode() for s in q["sentence_id"]] == ["v#0", "v#1"]
  np.testing.assert_allclose(q["segment"], [[0, 1], [1, 3]])
  # Through the pipeline: one training example per (sentence, video); eval views.
  tiny_data.write(str(tmp_path), num_train=12, num_val=4, modality="i3d",
                  val_split="val_1", tokenizer="wordpiece")
  c = activitynet.get_config("runlocal")
  c.input.data_dir = str(tmp_path)
  _, meta = pipeline.dataset_info(c)
  assert pipeline.num_train_examples(c, meta) == meta["sentences"]["train"]
  batch = next(pipeline.train_dataset(c, 0).as_numpy_iterator())
  assert batch["frames"].shape == (8, 16, tiny_data.DIM)
  assert (batch["tokens"][:, 0] == 2).all() and batch["labels"].shape == (8, 16)
  ds, _, total = pipeline.eval_dataset(c, "val_1", pipeline.get_view("hammer", "query"))
  rows = [b for b in ds.as_numpy_iterator()]
  assert total == meta["sentences"]["val_1"]
  assert sum(int(b["example_mask"].sum()) for b in rows) == total
  ds, _, total = pipeline.eval_dataset(c, "val_1", pipeline.get_view("hammer", "video"))
  assert total == 4 and "labels" not in next(ds.as_numpy_iterator())
