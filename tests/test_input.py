"""Input pipeline tests: clip cutting rule, HSE view, eval padding."""

from __future__ import annotations

import functools
import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from configs.hse import demo as hse_demo
from hvt_jax import train as train_mod
from hvt_jax import families
from hvt_jax.input import ops, pipeline
from hvt_jax.families.hse import view as hse_view
from tests import tiny_data


def released_rows(t0, t1, dur, t, max_frames=80):
  """Transcription of the released HSE loader (``activity_net/data.py``), Python floats.

  Returns the feature-row indices it feeds the clip encoder (possibly empty).
  """
  start = int(np.floor(t0 / dur * t))
  end = int(np.ceil(t1 / dur * t))
  if start > end:
    end = start
  rows = np.arange(t)[start:end + 1]
  if rows.shape[0] > max_frames:
    rows = rows[np.arange(0, rows.shape[0], rows.shape[0] / max_frames).astype(int).tolist()]
  return rows.tolist()


def released_video_rows(t, max_frames=80):
  rows = np.arange(t)
  if t > max_frames:
    rows = rows[np.arange(0, t, t / max_frames).astype(int).tolist()]
  return rows.tolist()


@functools.cache
def _view_rows(rule, sampling, max_len):
  """One traced function per option set (shapes vary per video: no retracing)."""

  @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float64),
                                tf.TensorSpec([None, 2], tf.float32),
                                tf.TensorSpec([], tf.float64)])
  def rows(segments, stamps, duration):
    start, end, valid = ops.time_to_rows(segments, stamps, duration, rule)
    idx, mask = ops.sample_rows(start, end, max_len, sampling)
    return idx, mask, valid

  return rows


def _rows(segments, stamps, duration, rule="authors", sampling="authors", max_len=80):
  idx, mask, valid = _view_rows(rule, sampling, max_len)(
      tf.constant(segments, tf.float64), tf.constant(stamps, tf.float32),
      tf.constant(duration, tf.float64))
  return [i[m].tolist() if v else [] for i, m, v in zip(idx.numpy(), mask.numpy(),
                                                        valid.numpy())]


def test_authors_rule_matches_released_loader_on_every_real_val_1_segment(each_annotations):
  """Every segment of the real val_1 (and each whole video) selects the released rows.

  Features are timed as the converter times C3D rows spread over the video
  (``uniform_timestamps``); T is the C3D row count at 8-frame stride and ~30 fps, plus the
  video's duration-independent counts 112 and 164, where float64 arange rounds down.
  """
  from data_prep import common  # pylint: disable=g-import-not-at-top
  kind, root = each_annotations
  ann = json.loads((root / "activitynet_captions" / "val_1.json").read_text())
  checked = differs_from_exact = 0
  for i, (vid, a) in enumerate(sorted(ann.items())):
    dur = float(a["duration"])
    segs = np.array(a["timestamps"], np.float64).reshape(-1, 2)
    segs = np.sort(np.clip(segs, 0.0, dur), axis=1)     # the converter's repairs
    for t in ((max(1, int(dur * 30 / 8)), 112, 164) if i < 40 else
              (max(1, int(dur * 30 / 8)),)):
      stamps = common.uniform_timestamps(t, dur)
      got = _rows(segs, stamps, dur)
      want = [released_rows(s0, s1, dur, t) for s0, s1 in segs]
      assert got == want, (vid, t)
      checked += len(segs)
      if i < 400:
        exact = _rows(segs, stamps, dur, sampling="exact")
        differs_from_exact += sum(g != e for g, e in zip(got, exact))
        (whole,) = _rows(np.array([[0.0, dur]]), stamps, dur)
        assert whole == released_video_rows(t), (vid, t)
  assert checked > {"excerpt": 3 * 157 - 1, "full": 17505}[kind]   # T's per segment
  # The two rules are distinguishable on real data.
  assert differs_from_exact >= {"excerpt": 5, "full": 6}[kind]


def test_video_context_subsampling_matches_released_arange():
  for t in (1, 79, 80, 81, 112, 164, 1000, 4507):
    idx, mask = ops.sample_rows(tf.constant([0]), tf.constant([t - 1]), 80, "authors")
    assert idx.numpy()[0][mask.numpy()[0]].tolist() == released_video_rows(t), t
  idx, _ = ops.sample_rows(tf.constant([0]), tf.constant([111]), 80, "authors")
  exact, _ = ops.sample_rows(tf.constant([0]), tf.constant([111]), 80, "exact")
  assert (int(idx[0, 45]), int(exact[0, 45])) == (62, 63)   # the n = 112 case


def test_sample_rows_exact_subsamples_evenly_and_keeps_short_ranges():
  idx, mask = ops.sample_rows(tf.constant([0, 10, 5, 7]), tf.constant([159, 12, 5, 6]), 80,
                              "exact")
  idx, mask = idx.numpy(), mask.numpy()
  assert mask[0].sum() == 80 and np.all(np.diff(idx[0]) == 2)   # 160 rows -> every 2nd
  assert mask[1].sum() == 3 and list(idx[1, :3]) == [10, 11, 12]
  assert mask[2].sum() == 1 and idx[2, 0] == 5
  assert mask[3].sum() == 0                                      # empty range
  assert np.all(idx[~mask] == 0)


def test_authors_rule_in_timestamp_domain_equals_formula_for_uniform_rows():
  """Uniform rows: the timestamp-domain rule and the floor/ceil formula agree."""
  rng = np.random.default_rng(0)
  for _ in range(30):
    t = int(rng.integers(2, 300))
    dur = float(rng.uniform(1, 200))
    segs = np.sort(rng.uniform(0, dur, size=(6, 2)), axis=1)
    stamps = np.stack([np.arange(t), np.arange(1, t + 1)], 1) * (dur / t)
    by_formula = _rows(segs, stamps, dur, max_len=400)
    # Same rows, but declared over a longer "duration": only the timestamp rule applies.
    by_stamps = _rows(segs, stamps, dur * 1.5, max_len=400)
    mismatch = [(a, b) for a, b in zip(by_formula, by_stamps) if a != b]
    # Only where t0/dur*T or t1/dur*T is within float rounding of an integer.
    assert len(mismatch) <= 1, mismatch


def test_short_features_map_by_timestamps_not_by_duration():
  """I3D at 1 row/s covering 43 s of a 61.72 s video (the issue's case)."""
  stamps = np.stack([np.arange(43), np.arange(1, 44)], 1).astype(np.float32)
  got = _rows(np.array([[39.81, 54.62], [50.0, 55.0], [0.0, 2.5]]), stamps, 61.72)
  assert got[0] == [39, 40, 41, 42]
  assert got[1] == []                 # after the last row: no rows, never rows of another moment
  assert got[2] == [0, 1, 2, 3]       # floor(0) .. ceil(2.5)


def test_didemo_index_moments_get_exactly_rows_s_to_e():
  """DiDeMo per-video layout: times [s, e] are inclusive rows; row r covers [r, r+1]*dur/L."""
  rng = np.random.default_rng(1)
  for _ in range(50):
    leng = int(rng.integers(2, 60))
    dur = float(rng.uniform(5, 120))
    s = int(rng.integers(0, leng))
    e = int(rng.integers(s, leng))
    edges = (np.arange(leng + 1) * dur / leng)
    stamps = np.stack([edges[:-1], edges[1:]], 1).astype(np.float32)
    seg = np.array([[s * dur / leng, (e + 1) * dur / leng]])
    assert _rows(seg, stamps, dur, rule="center", max_len=100) == [list(range(s, e + 1))]
    assert _rows(seg, stamps, dur, rule="overlap", max_len=100) in (
        [list(range(s, e + 1))], [list(range(max(s - 1, 0), e + 1))],
        [list(range(s, min(e + 2, leng)))], [list(range(max(s - 1, 0), min(e + 2, leng)))])
  assert ops.default_clip_rule("didemo") == "center"
  assert ops.default_clip_rule("activitynet_captions") == "authors"


def test_zero_length_moments_keep_widen_or_skip():
  stamps = np.stack([np.arange(10), np.arange(1, 11)], 1).astype(np.float32) * 2.0  # 2 s rows
  seg = np.array([[7.0, 7.0], [4.0, 8.0]])
  start, end, valid = [x.numpy() for x in ops.time_to_rows(seg, stamps, 20.0, "overlap")]
  assert valid.all() and (start[0], end[0], start[1], end[1]) == (3, 3, 2, 3)
  edge = np.array([[6.0, 6.0]])                     # on the edge of rows 2 and 3
  assert not ops.time_to_rows(edge, stamps, 20.0, "overlap")[2].numpy()[0]
  assert ops.time_to_rows(edge, stamps, 20.0, "overlap", "widen")[0].numpy()[0] == 3
  for zero_length, want in (("widen", (True, 3, 3)), ("skip", (False, 0, 0))):
    start, end, valid = [x.numpy() for x in ops.time_to_rows(seg, stamps, 20.0, "authors",
                                                              zero_length)]
    assert (bool(valid[0]), int(start[0]), int(end[0])) == want
  start, end, valid = [x.numpy() for x in ops.time_to_rows(seg, stamps, 20.0, "authors")]
  assert valid[0] and (start[0], end[0]) == (3, 4)   # "keep": the released floor..ceil
  with pytest.raises(ValueError, match="zero_length"):
    ops.time_to_rows(seg, stamps, 20.0, "authors", "bogus")
  with pytest.raises(ValueError, match="clip rule"):
    ops.time_to_rows(seg, stamps, 20.0, "bogus")


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      modality="frames", max_clips=3, max_frames_per_clip=4, max_video_frames=8,
      max_words=3, max_paragraph_words=7, clip_source="segments", num_uniform_clips=2,
      clip_rule="authors", zero_length="keep", frame_sampling="exact"))
  c.update(kw)
  return c


def _example():
  feats = np.arange(20 * 2, dtype=np.float32).reshape(20, 2)
  return {
      "features/frames": tf.constant(feats),
      "timestamps/frames": tf.constant(np.stack([np.arange(20), np.arange(1, 21)], 1) / 2.0,
                                       tf.float32),
      "duration": tf.constant(10.0, tf.float64),
      "segments": tf.constant([[0.0, 2.0], [4.0, 9.9], [1.0, 1.2], [5.0, 6.0]], tf.float64),
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


def _sentence_view(record, cfg, seed):
  """One example per sentence: its first tokens, and a draw from the view's seed."""
  del cfg
  tokens = ops.pad_to(record["tokens"].to_tensor(), [None, 4])
  n = tf.shape(tokens)[0]
  draw = tf.random.stateless_uniform([n], seed=tf.stack([seed, seed // 7]), maxval=1000,
                                     dtype=tf.int64)
  return {"tokens": tokens, "sentence": tf.range(n), "draw": draw,
          "example_mask": tf.ones([n], tf.bool)}


@pytest.fixture
def per_sentence(monkeypatch, tmp_path):
  tiny_data.write(str(tmp_path), num_train=10, num_val=6)
  monkeypatch.setitem(families.get("hse").views, "hse",
                      pipeline.View(_sentence_view, per_row="tokens"))
  c = hse_demo.get_config("runlocal")
  c.input.data_dir = str(tmp_path)
  c.batch_size = 4
  return c


def _examples(batches):
  return [(int(i), int(s), int(d)) for b in batches
          for i, s, d in zip(b["video_index"], b["sentence"], b["draw"])]


def test_per_sentence_view_epochs_cover_every_sentence_once_and_resume_exactly(per_sentence):
  c = per_sentence
  _, meta = pipeline.dataset_info(c)
  n = meta["sentences"]["train"]
  assert pipeline.num_train_examples(c, meta) == n > meta["splits"]["train"]
  steps = 2 * n // 4 + 3                                   # into the third epoch
  stream = _examples(pipeline.train_dataset(c, 0).take(steps).as_numpy_iterator())
  first = stream[:n]
  assert sorted((i, s) for i, s, _ in first) == sorted(
      (i, s) for i, s, _ in {(i, s, 0) for i, s, _ in first})          # no duplicates
  assert len({(i, s) for i, s, _ in first}) == n                       # every sentence once
  assert [(i, s) for i, s, _ in stream[n:2 * n]] != [(i, s) for i, s, _ in first]
  for start in (1, n // 4, n // 4 + 1, steps - 2):                   # resume anywhere
    resumed = _examples(pipeline.train_dataset(c, 4 * start).take(2).as_numpy_iterator())
    assert resumed == stream[4 * start:4 * start + 8], start
  # The view's seed differs per epoch (same record, same sentence, other draw).
  by_epoch = [{(i, s): d for i, s, d in stream[e * n:(e + 1) * n]} for e in range(2)]
  assert any(by_epoch[0][k] != by_epoch[1][k] for k in by_epoch[0])


def test_per_sentence_eval_counts_every_sentence_once_and_ids_stay_on_host(per_sentence):
  c = per_sentence
  _, meta = pipeline.dataset_info(c)
  ds, steps, total = pipeline.eval_dataset(c, "val")
  assert total == meta["sentences"]["val"]
  batches = list(ds.as_numpy_iterator())
  real = np.concatenate([b["example_mask"] for b in batches])
  assert real.sum() == total and len(batches) == steps
  ids = np.concatenate([b["video_id"] for b in batches])[real]
  index = np.concatenate([b["video_index"] for b in batches])[real]
  assert all(i.decode() == f"val{j}" for i, j in zip(ids, index))   # tiny_data names
  c.mesh_devices = 4
  s = train_mod.setup(c)
  device, host = next(pipeline.iterate(ds, s.mesh, pipeline.get_view("hse")))
  assert "video_id" not in device and host["video_id"].dtype.kind in "SO"
  assert device["video_index"].dtype == np.int32
