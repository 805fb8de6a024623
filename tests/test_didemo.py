"""Tests for the DiDeMo converter (data_prep.didemo) on the real annotation files.

Features are written by the tests (the real ones are not available), in DiDeMo's layouts:
per-video .npy files and one HDF5 keyed by video. Expected sentences, segments and counts are
computed here directly from the json, independently of the converter.
"""

import collections
import json
import os
import pathlib

import h5py
import numpy as np
import pytest

from data_prep import builder
from data_prep import common
from data_prep import didemo
from hvt_jax.vocab import glove
from data_prep import features as features_lib
from hvt_jax.input import reader
from hvt_jax.vocab import word_vocab
from hvt_jax.vocab import wordpiece
from hvt_jax.cli import prepare
from tests import data_fixtures

DIM = 6
CLIPPED_END = "segment end > duration (clipped)"
REVERSED_OUT = "segment start > end outside video"
WHITESPACE = "sentence whitespace normalized"


def _feature_rows(video_id: str, rows: int) -> np.ndarray:
  # Deterministic per video and row, so the test can recompute what was stored.
  seed = sum(ord(c) for c in video_id)
  return (np.arange(rows * DIM, dtype=np.float32).reshape(rows, DIM) + seed) / 1000.0


@pytest.fixture(scope="module")
def real(annotations):
  """The real per-video files (the committed excerpts) and a subset of their videos (with
  the real quirks)."""
  files = {s: annotations / "didemo" / f"{s}_data_bwzhang.json" for s in ("train", "val", "test")}
  data = {s: json.loads(p.read_text()) for s, p in files.items()}
  train_reversed = [v for v, a in data["train"].items()
                    if any(s > e for s, e in a["times"])]
  assert len(train_reversed) >= 3  # the real file has reversed spans past the video end
  subset = {"train": list(data["train"])[:25] + train_reversed[:3],
            "val": list(data["val"])[:8], "test": list(data["test"])[:8]}
  return files, data, subset


@pytest.fixture(scope="module")
def npy_features(real, tmp_path_factory):
  _, data, subset = real
  root = tmp_path_factory.mktemp("didemo_npy")
  for split, ids in subset.items():
    for vid in ids:
      np.save(root / f"{vid}.npy", _feature_rows(vid, data[split][vid]["feature_leng"]))
  return root


def _expected_video(ann):
  """Independent reading of one bwzhang annotation: kept (segment, sentence) and counts."""
  dur, length = ann["duration"], ann["feature_leng"]
  kept, counts = [], collections.Counter()
  for (s, e), desc in zip(ann["times"], ann["description"]):
    norm = " ".join(desc.split())
    if not norm:
      counts["empty"] += 1
      continue
    if s > e:
      if e >= 0 and s <= length:
        s, e = e, s
        counts["swapped"] += 1
      else:
        counts[REVERSED_OUT] += 1
        continue
    start, end = s * dur / length, (e + 1) * dur / length
    if start >= dur:
      counts["outside"] += 1
      continue
    if end > dur:
      counts[CLIPPED_END] += 1
    if norm != desc:
      counts[WHITESPACE] += 1
    kept.append(([max(start, 0.0), min(end, dur)], norm))
  return kept, counts


@pytest.fixture(scope="module")
def converted(real, npy_features, tmp_path_factory):
  files, _, subset = real
  out = tmp_path_factory.mktemp("didemo_out")
  ids = [v for vs in subset.values() for v in vs]
  dataset_dir, counter = didemo.convert([str(p) for p in files.values()], str(npy_features),
                                        str(out), video_ids=ids, num_shards=2, verbose=False)
  return dataset_dir, counter


def test_real_files_records_match_independent_reading(real, converted):
  _, data, subset = real
  dataset_dir, counter = converted
  meta = reader.load_metadata(dataset_dir)
  expected_counts = collections.Counter()
  train_sentences = []
  expected = {}
  for split, ids in subset.items():
    for vid in ids:
      kept, counts = _expected_video(data[split][vid])
      expected_counts += counts
      expected[vid] = kept
      if split == "train":
        train_sentences += [s for _, s in kept]
  assert meta["splits"] == {s: len(ids) for s, ids in subset.items()}
  assert meta["tokenizer"] == "word" and meta["modalities"] == {"inception": DIM}
  summary = counter.summary()
  assert summary == meta["counts"]
  assert summary["skipped"] == {REVERSED_OUT: expected_counts[REVERSED_OUT]}
  assert expected_counts[REVERSED_OUT] >= 3
  assert summary["repaired"] == {k: expected_counts[k] for k in (CLIPPED_END, WHITESPACE)
                                 if expected_counts[k]}
  assert expected_counts[CLIPPED_END] > 0
  vocab = reader.load_vocab(dataset_dir)
  assert vocab == word_vocab.build_word_vocab(train_sentences)
  index = {t: i for i, t in enumerate(vocab)}
  for split, ids in subset.items():
    records = data_fixtures.read_examples(dataset_dir, split)
    assert sorted(records) == sorted(ids)
    for vid in ids:
      ex, ann = records[vid], data[split][vid]
      segs = np.array([seg for seg, _ in expected[vid]], np.float32)
      np.testing.assert_allclose(ex["segments"], segs, rtol=1e-6, atol=1e-5)
      assert [s.decode() for s in ex["sentences"]] == [s for _, s in expected[vid]]
      assert data_fixtures.token_lists(ex) == [
          word_vocab.encode_words(s, index) for _, s in expected[vid]]
      length, dur = ann["feature_leng"], ann["duration"]
      np.testing.assert_array_equal(ex["features/inception"], _feature_rows(vid, length))
      r = np.arange(length)
      np.testing.assert_allclose(ex["timestamps/inception"],
                                 np.stack([r * dur / length, (r + 1) * dur / length], 1),
                                 rtol=1e-5, atol=1e-4)
      assert ex["duration"] == pytest.approx(dur) and ex["split"].decode() == split


def test_real_files_wordpiece_tokens(real, npy_features, tmp_path):
  files, data, subset = real
  dataset_dir, _ = didemo.convert([str(files["val"])], str(npy_features), str(tmp_path),
                                  tokenizer="wordpiece", video_ids=subset["val"], verbose=False)
  tok = wordpiece.WordPieceTokenizer.from_file()
  meta = reader.load_metadata(dataset_dir)
  assert meta["tokenizer"] == "wordpiece" and meta["vocab_size"] == 30522
  for vid, ex in data_fixtures.read_examples(dataset_dir, "val").items():
    kept, _ = _expected_video(data["val"][vid])
    assert data_fixtures.token_lists(ex) == [tok.encode(s) for _, s in kept]


# ------------------------------------------------------------------------------------------
# Original per-query layout.


def _q(video, times, desc, aid, num_segments=6):
  return {"video": video, "times": times, "description": desc, "annotation_id": aid,
          "num_segments": num_segments}


def test_mode_span_ties_go_to_earliest():
  assert didemo.mode_span([(2, 2), (2, 3), (2, 2), (1, 1)]) == (2, 2)
  assert didemo.mode_span([(3, 4), (1, 2), (3, 4), (1, 2)]) == (1, 2)
  assert didemo.mode_span([(4, 4), (4, 3)]) == (4, 3)  # earliest start, then end


def test_per_query_layout(tmp_path):
  train = [
      _q("a.mov", [[2, 2], [2, 3], [2, 2], [2, 3], [1, 1]], "a man jumps", 1),  # tie -> 2,2
      _q("b", [[0, 1], [0, 1], [5, 5]], "  a dog\truns ", 2),
      _q("a.mov", [[5, 5], [5, 5]], "the end", 3),
      _q("a.mov", [[1, 0]], "reversed span", 4),  # swapped inside the video
      _q("b", [[4, 4]], "duplicate id", 2),
      _q("b", [["x", 1], [3]], "no valid span", 5),
      _q("c", [[0, 0]], "   ", 6, num_segments=5),
      _q("c", [[4, 4]], "only this", 7, num_segments=5),
      _q("c", [[3, 3], None], "other count", 8, num_segments=6),
  ]
  path = data_fixtures.write_json(tmp_path / "train_data.json", train)
  feats = tmp_path / "feats"
  feats.mkdir()
  for vid, rows in (("a", 6), ("b", 30), ("c", 5)):  # "a" found without its ".mov"
    np.save(feats / f"{vid}.npy", _feature_rows(vid, rows))
  durations = data_fixtures.write_json(tmp_path / "durations.json", {"b": 27.5})
  dataset_dir, counter = didemo.convert([path], str(feats), str(tmp_path / "out"),
                                        durations_file=durations, verbose=False)
  recs = data_fixtures.read_examples(dataset_dir, "train")
  assert sorted(recs) == ["a.mov", "b", "c"]
  a, b, c = recs["a.mov"], recs["b"], recs["c"]
  np.testing.assert_allclose(a["segments"], [[10, 15], [25, 30], [0, 10]])
  assert [s.decode() for s in a["sentences"]] == ["a man jumps", "the end", "reversed span"]
  assert a["duration"] == 30.0
  # b: duration from --durations, span (0, 1) -> [0, 10].
  assert b["duration"] == 27.5
  np.testing.assert_allclose(b["segments"], [[0, 10]])
  assert [s.decode() for s in b["sentences"]] == ["a dog runs"]
  # c: num_segments 5 and 6 -> 6 (max) -> duration 30 (not in --durations -> fallback).
  assert c["duration"] == 30.0
  np.testing.assert_allclose(c["segments"], [[20, 25], [15, 20]])
  # Uniform rows over the duration (no --feature-rate): 30 rows over 27.5 s.
  r = np.arange(30)
  np.testing.assert_allclose(b["timestamps/inception"],
                             np.stack([r * 27.5 / 30, (r + 1) * 27.5 / 30], 1), rtol=1e-5)
  np.testing.assert_array_equal(a["features/inception"], _feature_rows("a", 6))
  summary = counter.summary()
  assert summary["skipped"] == {"duplicate annotation_id": 1, "segment malformed": 1,
                                "sentence empty": 1}
  assert summary["repaired"] == {
      "annotator span malformed (ignored)": 3, "segment start > end (swapped)": 1,
      "sentence whitespace normalized": 1,
      "num_segments differs between queries (max used)": 1,
      "duration not in --durations (5 * num_segments used)": 2}
  assert summary["examples"]["duplicate annotation_id"] == ["2"]
  assert reader.load_metadata(dataset_dir)["extra"]["layouts"] == {"train": "per_query"}


# ------------------------------------------------------------------------------------------
# Robustness on hand-written per-video annotations.


def _ann(duration, leng, times, descs):
  return {"duration": duration, "feature_leng": leng, "times": times, "description": descs,
          "num_segments": 6}


def _convert(tmp_path, train, feats, other=None, **kwargs):
  files = [data_fixtures.write_json(tmp_path / "train_data_bwzhang.json", train)]
  if other is not None:
    files.append(data_fixtures.write_json(tmp_path / "val_data_bwzhang.json", other))
  return didemo.convert(files, feats, str(tmp_path / "out"), verbose=False, **kwargs)


def test_feature_robustness(tmp_path):
  feats = tmp_path / "feats"
  feats.mkdir()
  anns = {}
  for vid, rows in (("ok", 100), ("short", 80), ("long", 120), ("nan", 100), ("empty", 0)):
    anns[vid] = _ann(10.0, 100, [[0, 49]], [f"video {vid}"])
    arr = _feature_rows(vid, rows)
    if vid == "nan":
      arr[3, 2] = np.nan
    np.save(feats / f"{vid}.npy", arr)
  anns["absent"] = _ann(10.0, 100, [[0, 49]], ["no features"])
  anns["slightly_short"] = _ann(10.0, 100, [[0, 9]], ["95 rows"])
  np.save(feats / "slightly_short.npy", _feature_rows("slightly_short", 95))
  dataset_dir, counter = _convert(tmp_path, anns, str(feats))
  recs = data_fixtures.read_examples(dataset_dir, "train")
  assert sorted(recs) == ["long", "ok", "short", "slightly_short"]
  # Rows past the end of the video are dropped; short features are kept with their own times.
  assert recs["long"]["features/inception"].shape == (100, DIM)
  np.testing.assert_array_equal(recs["long"]["features/inception"],
                                _feature_rows("long", 120)[:100])
  assert recs["short"]["features/inception"].shape == (80, DIM)
  np.testing.assert_allclose(recs["short"]["timestamps/inception"][-1], [7.9, 8.0], rtol=1e-5)
  np.testing.assert_allclose(recs["ok"]["segments"], [[0.0, 5.0]])
  summary = counter.summary()
  assert summary["skipped"] == {"features contain NaN/Inf": 1, "features have zero rows": 1,
                                "features missing": 1}
  assert summary["repaired"] == {"feature rows past the video end (dropped)": 1,
                                 "features cover < 90% of the video (kept)": 1}
  assert summary["examples"]["features missing"] == ["absent"]
  assert summary["examples"]["features cover < 90% of the video (kept)"] == ["short"]


def test_segment_and_sentence_robustness(tmp_path):
  feats = tmp_path / "feats"
  feats.mkdir()
  np.save(feats / "v.npy", _feature_rows("v", 100))
  np.save(feats / "w.npy", _feature_rows("w", 100))
  anns = {
      "v": _ann(10.0, 100, [[50, 20], [-10, 9], [90, 150], [120, 130], [200, 20], [0, 9],
                            [0, 9], ["a", 3], [10, 19]],
                ["swapped", "negative start", "end past", "outside", "reversed outside",
                 "", " \t ", "malformed", "  two   spaces "]),
      "w": _ann(10.0, 100, [[0, 9]], ["   "]),  # no valid sentence -> video skipped
  }
  dataset_dir, counter = _convert(tmp_path, anns, str(feats))
  recs = data_fixtures.read_examples(dataset_dir, "train")
  assert sorted(recs) == ["v"]
  np.testing.assert_allclose(recs["v"]["segments"],
                             [[2.0, 5.1], [0.0, 1.0], [9.0, 10.0], [1.0, 2.0]], rtol=1e-5)
  assert [s.decode() for s in recs["v"]["sentences"]] == [
      "swapped", "negative start", "end past", "two spaces"]
  summary = counter.summary()
  assert summary["skipped"] == {"segment malformed": 1, "segment outside video": 1,
                                REVERSED_OUT: 1, "sentence empty": 3,
                                "video has no valid sentence": 1}
  assert summary["repaired"] == {"segment start < 0 (clipped)": 1, CLIPPED_END: 1,
                                 "segment start > end (swapped)": 1, WHITESPACE: 1}


def test_bad_files_are_errors_naming_file_and_key(tmp_path):
  feats = tmp_path / "feats"
  feats.mkdir()
  np.save(feats / "v.npy", _feature_rows("v", 10))
  ann = _ann(1.0, 10, [[0, 4]], ["a cat"])
  # A video in two split files (leak).
  with pytest.raises(ValueError, match=r"1 videos are in both .*train_data_bwzhang.json and "
                     r".*val_data_bwzhang.json.*\['v'\]"):
    _convert(tmp_path, {"v": ann}, str(feats), other={"v": ann})
  # A key repeated inside one file.
  dup = tmp_path / "dup" / "train_data_bwzhang.json"
  dup.parent.mkdir()
  dup.write_text('{"v": %s, "v": %s}' % (json.dumps(ann), json.dumps(ann)), encoding="utf-8")
  with pytest.raises(ValueError, match=r"train_data_bwzhang.json: duplicate keys \['v'\]"):
    didemo.convert([str(dup)], str(feats), str(tmp_path / "o"), verbose=False)
  # Two files for one split.
  with pytest.raises(ValueError, match="two annotation files map to split 'train'"):
    didemo.convert([data_fixtures.write_json(tmp_path / "train_data_bwzhang.json", {"v": ann}),
                    data_fixtures.write_json(tmp_path / "train_data.json", [])], str(feats),
                   str(tmp_path / "o"), verbose=False)
  # Invalid UTF-8 on line 3.
  bad = tmp_path / "bad" / "train_data_bwzhang.json"
  bad.parent.mkdir()
  bad.write_bytes(b'{"v": {"duration": 1.0,\n "feature_leng": 10, "times": [[0, 4]],\n'
                  b' "description": ["caf\xe9"], "num_segments": 6}}\n')
  with pytest.raises(ValueError, match=r"train_data_bwzhang.json:3: not valid UTF-8"):
    didemo.convert([str(bad)], str(feats), str(tmp_path / "o"), verbose=False)
  # Invalid json.
  broken = tmp_path / "broken" / "train_data_bwzhang.json"
  broken.parent.mkdir()
  broken.write_text('{"v":\n {"duration": 1.0,,}}', encoding="utf-8")
  with pytest.raises(ValueError, match=r"train_data_bwzhang.json:2: not valid json"):
    didemo.convert([str(broken)], str(feats), str(tmp_path / "o"), verbose=False)
  assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.tfrecord*"))


def test_hdf5_features_and_truncated_file(tmp_path):
  h5 = tmp_path / "inception.h5"
  anns = {}
  with h5py.File(h5, "w") as f:
    for i in range(4):
      vid = f"vid{i}"
      anns[vid] = _ann(2.0, 50, [[0, 24]], [f"clip {i}"])
      f.create_dataset(vid, data=_feature_rows(vid, 50))
    f.create_dataset("vid_bad_dim", data=np.zeros((50, DIM + 1), np.float32))
  dataset_dir, _ = _convert(tmp_path, anns, str(h5))
  recs = data_fixtures.read_examples(dataset_dir, "train")
  np.testing.assert_array_equal(recs["vid2"]["features/inception"], _feature_rows("vid2", 50))
  # A video whose dim differs from the first video's: error naming the file and video.
  anns["vid_bad_dim"] = _ann(2.0, 50, [[0, 24]], ["bad dim"])
  with pytest.raises(features_lib.FeatureFileError,
                     match=r"inception.h5: video 'vid_bad_dim' has feature dim 7"):
    _convert(tmp_path, anns, str(h5))
  # Truncated download: error naming the file, nothing written.
  data = h5.read_bytes()
  cut = tmp_path / "cut.h5"
  cut.write_bytes(data[:len(data) // 2])
  out = tmp_path / "cut_out"
  with pytest.raises(features_lib.FeatureFileError, match=r"cut.h5"):
    didemo.convert([data_fixtures.write_json(tmp_path / "train_data_bwzhang.json", anns)], str(cut),
                   str(out), verbose=False)
  assert not list(out.rglob("*.tfrecord*")) if out.exists() else True


def test_interrupted_rerun_is_idempotent(tmp_path, monkeypatch):
  feats = tmp_path / "feats"
  feats.mkdir()
  anns = {}
  for i in range(6):
    anns[f"v{i}"] = _ann(3.0, 30, [[0, 14], [15, 29]], [f"first {i}", f"second {i}"])
    np.save(feats / f"v{i}.npy", _feature_rows(f"v{i}", 30))
  first, _ = _convert(tmp_path, anns, str(feats), num_shards=2)
  reference = data_fixtures.shard_examples(first)
  assert len(reference) == 2

  real_get = features_lib.NpyDirFeatureSource.get
  calls = {"n": 0}

  def interrupted_get(self, video_id):
    calls["n"] += 1
    if calls["n"] == 9:  # infer_dim reads the 6 videos, then 3 records are written.
      raise KeyboardInterrupt
    return real_get(self, video_id)

  monkeypatch.setattr(features_lib.NpyDirFeatureSource, "get", interrupted_get)
  with pytest.raises(KeyboardInterrupt):
    _convert(tmp_path, anns, str(feats), num_shards=2)
  monkeypatch.setattr(features_lib.NpyDirFeatureSource, "get", real_get)
  # The complete earlier dataset is untouched and no temp dir is left behind.
  assert data_fixtures.shard_examples(first) == reference
  parent = pathlib.Path(first).parent
  assert [p.name for p in parent.iterdir()] == ["1.0.0"]
  assert [p.name for p in (tmp_path / "out").iterdir()] == ["didemo"]
  # A hard kill leaves a hidden work dir: loaders ignore it, the re-run (which removes it, its
  # process being gone) writes the same examples.
  stale = tmp_path / "out" / ".tmp-999999999-deadbeef" / "didemo" / parent.name / "1.0.0"
  stale.mkdir(parents=True)
  (stale / "didemo-train.tfrecord-00000-of-00002").write_bytes(b"partial")
  assert reader.find_dataset_dir(str(tmp_path / "out")) == first
  again, _ = _convert(tmp_path, anns, str(feats), num_shards=2)
  assert [p.name for p in (tmp_path / "out").iterdir()] == ["didemo"]
  assert again == first and data_fixtures.shard_examples(again) == reference
  assert reader.find_dataset_dir(str(tmp_path / "out")) == first
  assert len(data_fixtures.read_examples(again, "train")) == 6


def test_word_vectors_flag(tmp_path):
  feats = tmp_path / "feats"
  feats.mkdir()
  anns = {"v": _ann(2.0, 20, [[0, 9], [10, 19]], ["the cat sat", "the zebra"])}
  np.save(feats / "v.npy", _feature_rows("v", 20))
  vectors_file = tmp_path / "glove.txt"
  vectors_file.write_text("the 1 2 3\ncat 4 5 6\nsat 7 8 9\n", encoding="utf-8")
  dataset_dir, _ = _convert(tmp_path, anns, str(feats), word_vectors=str(vectors_file))
  vocab = reader.load_vocab(dataset_dir)
  assert vocab == ["<pad>", "<unk>", "the", "cat", "sat", "zebra"]
  matrix = np.load(os.path.join(dataset_dir, "word_vectors.npy"))
  assert matrix.shape == (6, 3)
  np.testing.assert_array_equal(matrix[[0, 2, 3, 4]], [[0, 0, 0], [1, 2, 3], [4, 5, 6],
                                                       [7, 8, 9]])
  report = reader.load_metadata(dataset_dir)["extra"]["word_vectors"]
  assert report["oov_count"] == 1 and report["examples"] == ["zebra"]
  assert report["token_oov_rate"] == pytest.approx(1 / 5)  # zebra of the, cat, sat, the, zebra
  # The same matrix as load_word_vectors gives for the stored vocabulary.
  expected, _ = glove.load_word_vectors(str(vectors_file), vocab, counts={"zebra": 1})
  np.testing.assert_array_equal(expected, matrix)
  with pytest.raises(ValueError, match="--word-vectors needs --tokenizer word"):
    _convert(tmp_path, anns, str(feats), word_vectors=str(vectors_file), tokenizer="wordpiece")


def test_cli_registered(tmp_path):
  feats = tmp_path / "feats"
  feats.mkdir()
  np.save(feats / "v.npy", _feature_rows("v", 20))
  ann = data_fixtures.write_json(tmp_path / "train_data_bwzhang.json",
                    {"v": _ann(2.0, 20, [[0, 9]], ["a dog"])})
  dataset_dir = prepare.prepare(["didemo", "--annotations", ann, "--features", str(feats),
                                 "--output", str(tmp_path / "out"), "--num-shards", "1"])
  assert reader.load_metadata(dataset_dir)["splits"] == {"train": 1}


def test_counts_only_for_converted_videos(tmp_path):
  train = [
      _q("a", [[0, 0]], "a man jumps", 1),
      _q("b", [[0, 0]], "a dog runs", 2),
      _q("b", [[1, 1]], "duplicate", 2),  # Skip of video b, not converted below.
      _q("c", [[0, 0]], "   ", 3),  # c: only an empty sentence -> skipped.
  ]
  path = data_fixtures.write_json(tmp_path / "train_data.json", train)
  feats = tmp_path / "feats"
  feats.mkdir()
  for vid in ("a", "b"):
    np.save(feats / f"{vid}.npy", _feature_rows(vid, 6))
  durations = data_fixtures.write_json(tmp_path / "durations.json", {"b": 27.5})
  # Only "a" and "c": b's duplicate query is not counted; c's missing duration is not a
  # repair (c is skipped), a's is.
  _, counter = didemo.convert([path], str(feats), str(tmp_path / "out"),
                              durations_file=durations, video_ids=["a", "c"], verbose=False)
  summary = counter.summary()
  assert summary["skipped"] == {"sentence empty": 1, "video has no valid sentence": 1}
  assert summary["repaired"] == {"duration not in --durations (5 * num_segments used)": 1}
  assert summary["examples"]["duration not in --durations (5 * num_segments used)"] == ["a"]
  # --max-videos 1: only "a" is converted; b's duplicate is not counted either.
  _, counter = didemo.convert([path], str(feats), str(tmp_path / "out"), max_videos=1,
                              verbose=False)
  assert counter.summary()["skipped"] == {}
  # Without a selection the duplicate is counted.
  _, counter = didemo.convert([path], str(feats), str(tmp_path / "out"), verbose=False)
  assert counter.summary()["skipped"]["duplicate annotation_id"] == 1


def test_zero_length_rule_on_the_real_files(each_annotations):
  # The shared rule (data_prep.common.clean_segment) counts a kept moment with start == end;
  # DiDeMo's inclusive index spans always last >= 1 row, so the real files have none, and a
  # span that clipping would shrink to a point is skipped as outside instead.
  _, root = each_annotations
  files = [root / "didemo" / f"{s}_data_bwzhang.json" for s in ("train", "val", "test")]
  counter = builder.SkipCounter()
  didemo.load_annotations([str(p) for p in files], counter)
  assert common.SEGMENT_ZERO_LENGTH not in counter.summary()["repaired"]
  counter = builder.SkipCounter()
  assert common.clean_segment(3.0, 3.0, 10.0, "v", counter) == [3.0, 3.0]
  assert common.clean_segment(10.0, 12.0, 10.0, "v", counter) is None
  assert counter.summary()["repaired"] == {common.SEGMENT_ZERO_LENGTH: 1}
  assert counter.summary()["skipped"] == {common.SEGMENT_OUTSIDE: 1}
