"""ActivityNet Captions converter on the real annotation files with fixture features.

The features are written by the tests in both shipped layouts (one C3D HDF5 file keyed by
"v_<id>" with a "c3d_features" dataset, and a directory of per-video .npy files), for a subset
of the real videos that includes the known quirky ones (the committed excerpts of the real
files, tests/testdata, which keep every quirky video). Expected repair/skip counts are
computed here from the json, independently of the converter.
"""

import collections
import json
import pathlib

import h5py
import numpy as np
import pytest

from data_prep import activitynet_captions as anc
from data_prep import builder
from data_prep import common
from data_prep import features as features_lib
from hvt_jax.input import reader
from hvt_jax.vocab import word_vocab
from hvt_jax.cli import prepare
from tests import data_fixtures


def _rows(vid: str, duration: float, large: bool) -> int:
  # Real C3D density (16-frame windows at stride 8, ~30 fps) for the large videos, a small
  # count elsewhere to keep the fixture fast.
  if large:
    return int(round(duration * 30 / 8))
  return 2 + sum(map(ord, vid)) % 7


def _features(vid: str, t: int, dim: int) -> np.ndarray:
  rng = np.random.default_rng(sum(map(ord, vid)) * 7 + dim)
  return rng.normal(size=(t, dim)).astype(np.float32)


class Fixture:
  """Real annotations, a subset of videos, and the planned feature problems."""

  def __init__(self, root: pathlib.Path):
    self.files = [root / "activitynet_captions" / "train.json",
                  root / "activitynet_captions" / "val_1.json"]
    self.ann = {p.stem: json.loads(p.read_text()) for p in self.files}
    train, val = self.ann["train"], self.ann["val_1"]

    def past_end(data):
      return [v for v, a in data.items()
              if any(e > a["duration"] for _, e in a["timestamps"])]

    swapped = [v for v, a in train.items() if any(s > e for s, e in a["timestamps"])]
    zero = [v for v, a in train.items() if any(s == e for s, e in a["timestamps"])]
    self.quirky = {
        "train_swapped": swapped,
        "train_zero_length": zero,
        "train_past_end": past_end(train)[:5],
        "train_most_sentences": [max(train, key=lambda v: len(train[v]["sentences"]))],
        "train_longest": [max(train, key=lambda v: train[v]["duration"])],
        "val_past_end": past_end(val)[:5],
        "val_most_sentences": [max(val, key=lambda v: len(val[v]["sentences"]))],
        "val_longest": [max(val, key=lambda v: val[v]["duration"])],
    }
    assert len(swapped) == 2 and zero == ["v_N7ppHQNikv8", "v_4rKTw99bM8g"]
    assert len(val[self.quirky["val_most_sentences"][0]]["sentences"]) == 25
    assert val[self.quirky["val_longest"][0]]["duration"] == 745.5
    self.subset = {}
    for split, first in (("train", 40), ("val_1", 24)):
      ids = list(self.ann[split])[:first]
      ids += [v for k, vs in self.quirky.items() if k.startswith(split[:3]) for v in vs]
      self.subset[split] = list(dict.fromkeys(ids))
    self.large = set(self.quirky["train_longest"] + self.quirky["val_longest"]
                     + self.quirky["val_most_sentences"])
    tr, va = self.subset["train"], self.subset["val_1"]
    self.missing = {tr[3], tr[10], tr[37], va[5], va[6]}
    self.nonfinite = {tr[4], tr[20], va[7]}
    self.empty = {tr[30]}
    self.allow = tr + va

  def write_hdf5(self, path: pathlib.Path, dim: int = 500) -> None:
    with h5py.File(path, "w") as f:
      for split, ids in self.subset.items():
        for vid in ids:
          if vid in self.missing:
            continue
          t = 0 if vid in self.empty else _rows(vid, self.ann[split][vid]["duration"],
                                                vid in self.large)
          arr = _features(vid, t, dim)
          if vid in self.nonfinite:
            arr[t // 2, 3] = np.nan
          f.create_group(vid).create_dataset("c3d_features", data=arr)
      f.create_group("v_not_annotated").create_dataset("c3d_features",
                                                       data=np.zeros((3, dim)))

  def write_npy_dir(self, path: pathlib.Path, dim: int = 2048) -> None:
    path.mkdir()
    for split, ids in self.subset.items():
      for i, vid in enumerate(ids):
        if vid in self.missing:
          continue
        t = 0 if vid in self.empty else _rows(vid, 0, False)
        arr = _features(vid, t, dim)
        if vid in self.nonfinite:
          arr[0, 0] = np.inf
        # Half the files drop the "v_" prefix, as some feature releases do.
        name = vid[2:] if i % 2 else vid
        np.save(path / f"{name}.npy", arr)

  def expected_counts(self) -> tuple[dict, dict, dict[str, list[str]]]:
    """Repairs, skips and kept video ids per split, computed straight from the json."""
    repaired, skipped = collections.Counter(), collections.Counter()
    kept = {}
    for split, ids in self.subset.items():
      kept[split] = []
      for vid in ids:
        a = self.ann[split][vid]
        for sentence, (s, e) in zip(a["sentences"], a["timestamps"]):
          assert sentence.strip() and 0 <= min(s, e) and min(s, e) < a["duration"]
          if sentence != " ".join(sentence.split()):
            repaired[anc.SENTENCE_WHITESPACE] += 1
          if s > e:
            repaired[anc.SEGMENT_SWAPPED] += 1
          if max(s, e) > a["duration"]:
            repaired[anc.SEGMENT_CLIPPED_END] += 1
          if s == e:
            repaired[common.SEGMENT_ZERO_LENGTH] += 1
        if vid in self.missing:
          skipped[anc.FEATURES_MISSING] += 1
        elif vid in self.empty:
          skipped[anc.FEATURES_EMPTY] += 1
        elif vid in self.nonfinite:
          skipped[anc.FEATURES_NONFINITE] += 1
        else:
          kept[split].append(vid)
    return dict(repaired), dict(skipped), kept


@pytest.fixture(scope="module")
def fx(annotations):
  return Fixture(annotations)


@pytest.fixture(scope="module")
def hdf5_dataset(fx, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("anc_h5")
  fx.write_hdf5(tmp / "sub_activitynet_v1-3.c3d.hdf5")
  # Two workers: the HDF5 handle must be reopened in each spawned process.
  path, counter = anc.convert([str(p) for p in fx.files],
                              str(tmp / "sub_activitynet_v1-3.c3d.hdf5"), str(tmp / "out"),
                              feature_key="c3d_features", modality="c3d", num_workers=2,
                              video_ids=fx.allow)
  return path, counter, tmp


def test_counts_match_independent_computation(fx, hdf5_dataset):
  path, counter, _ = hdf5_dataset
  repaired, skipped, kept = fx.expected_counts()
  summary = counter.summary()
  assert summary["repaired"] == repaired
  assert summary["skipped"] == skipped
  assert repaired[anc.SEGMENT_SWAPPED] == 2 and repaired[anc.SEGMENT_CLIPPED_END] >= 10
  assert summary["examples"][anc.FEATURES_MISSING] == [
      v for ids in fx.subset.values() for v in ids if v in fx.missing]
  assert set(summary["examples"][anc.SEGMENT_SWAPPED]) == set(fx.quirky["train_swapped"])
  # Zero-length segments are kept and counted with their videos.
  assert repaired[common.SEGMENT_ZERO_LENGTH] == 2
  assert summary["examples"][common.SEGMENT_ZERO_LENGTH] == fx.quirky["train_zero_length"]
  meta = reader.load_metadata(path)
  assert meta["splits"] == {split: len(ids) for split, ids in kept.items()}
  assert meta["counts"] == summary
  assert meta["modalities"] == {"c3d": 500}
  assert meta["name"] == "activitynet_captions" and meta["tokenizer"] == "word"


def _load(path: str, split: str) -> dict[str, dict]:
  out = {}
  for ex in reader.load_split(path, split):
    vid = ex["video_id"].numpy().decode()
    out[vid] = {"duration": float(ex["duration"]), "segments": ex["segments"].numpy(),
                "sentences": [s.decode() for s in ex["sentences"].numpy()],
                "tokens": ex["tokens"].to_list(), "split": ex["split"].numpy().decode(),
                **{k: v.numpy() for k, v in ex.items() if "/" in k}}
  return out


def test_records_repaired_and_aligned(fx, hdf5_dataset):
  path, _, _ = hdf5_dataset
  _, _, kept = fx.expected_counts()
  # Vocabulary: train sentences of the selected videos (all kept at the annotation stage).
  train_sentences = [" ".join(s.split()) for v in fx.subset["train"]
                     for s in fx.ann["train"][v]["sentences"]]
  vocab = reader.load_vocab(path)
  assert vocab == word_vocab.build_word_vocab(train_sentences)
  index = {t: i for i, t in enumerate(vocab)}
  for split in ("train", "val_1"):
    loaded = _load(path, split)
    assert sorted(loaded) == sorted(kept[split])
    for vid, ex in loaded.items():
      a = fx.ann[split][vid]
      d = a["duration"]
      assert ex["split"] == split and ex["duration"] == d   # float64: as parsed
      assert ex["sentences"] == [" ".join(s.split()) for s in a["sentences"]]
      want = [[min(max(min(s, e), 0), d), min(max(s, e), d)] for s, e in a["timestamps"]]
      np.testing.assert_array_equal(ex["segments"], np.float64(want), err_msg=vid)
      assert ex["tokens"] == [word_vocab.encode_words(s, index) for s in ex["sentences"]]
      t = _rows(vid, d, vid in fx.large)
      np.testing.assert_array_equal(ex["features/c3d"], _features(vid, t, 500))
      edges = np.arange(t + 1) * (d / t)
      np.testing.assert_allclose(ex["timestamps/c3d"], np.stack([edges[:-1], edges[1:]], 1),
                                 rtol=1e-6)
      assert ex["timestamps/c3d"][-1, 1] == np.float32(d)
  # The known quirks, checked by hand on the real data.
  train = _load(path, "train")
  v = "v_0bosp4-pyTM"  # [61.29, 60.71] in the json: swapped.
  i = fx.ann["train"][v]["timestamps"].index([61.29, 60.71])
  np.testing.assert_array_equal(train[v]["segments"][i], np.float64([60.71, 61.29]))
  big = _load(path, "val_1")[fx.quirky["val_longest"][0]]
  assert big["features/c3d"].shape == (2796, 500)
  assert len(_load(path, "val_1")[fx.quirky["val_most_sentences"][0]]["sentences"]) == 25
  assert len(train[fx.quirky["train_most_sentences"][0]]["sentences"]) == 27
  # [34.77, 34.77] in the json: kept as a zero-length segment.
  v = "v_N7ppHQNikv8"
  i = fx.ann["train"][v]["timestamps"].index([34.77, 34.77])
  np.testing.assert_allclose(train[v]["segments"][i], [34.77, 34.77], rtol=1e-6)


def test_val_tokens_use_train_vocab_with_unk(fx, hdf5_dataset):
  path, _, _ = hdf5_dataset
  vocab = reader.load_vocab(path)
  val = _load(path, "val_1")
  unk_words = {w for ex in val.values() for s in ex["sentences"]
               for w in word_vocab.word_tokenize(s)
               if w not in vocab}
  assert unk_words  # 24 val videos use words that 40 train videos never do.
  n_unk = sum(tok.count(word_vocab.UNK_ID) for ex in val.values() for tok in ex["tokens"])
  n_expected = sum(1 for ex in val.values() for s in ex["sentences"]
                   for w in word_vocab.word_tokenize(s) if w not in vocab)
  assert n_unk == n_expected


def test_npy_dir_layout_via_cli(fx, tmp_path):
  fx.write_npy_dir(tmp_path / "tsn")
  ids_file = tmp_path / "ids.txt"
  ids_file.write_text("\n".join(fx.allow))
  path = prepare.prepare([
      "activitynet_captions", "--annotations", *map(str, fx.files), "--features",
      str(tmp_path / "tsn"), "--modality", "inception", "--output", str(tmp_path / "out"),
      "--video-ids", str(ids_file), "--feature-rate", "2", "--num-shards", "2"])
  _, skipped, kept = fx.expected_counts()
  meta = reader.load_metadata(path)
  assert meta["modalities"] == {"inception": 2048}
  assert meta["counts"]["skipped"] == skipped
  assert meta["splits"] == {split: len(ids) for split, ids in kept.items()}
  val = _load(path, "val_1")
  vid = kept["val_1"][1]
  t = _rows(vid, 0, False)
  np.testing.assert_array_equal(val[vid]["features/inception"], _features(vid, t, 2048))
  # --feature-rate 2: row r covers [r / 2, (r + 1) / 2] seconds.
  np.testing.assert_array_equal(val[vid]["timestamps/inception"],
                                np.float32([[r / 2, (r + 1) / 2] for r in range(t)]))
  assert len(list(pathlib.Path(path).glob("*-val_1.tfrecord-*-of-00002"))) == 2


def test_word_vectors_flag_stores_matrix_and_oov_report(fx, tmp_path):
  ids = {"train": fx.subset["train"][:20], "val_1": fx.subset["val_1"][:8]}
  feats = tmp_path / "feats"
  feats.mkdir()
  for vid in ids["train"] + ids["val_1"]:
    np.save(feats / f"{vid}.npy", _features(vid, 3, 4))
  # Independent vocabulary and train counts, straight from the json.
  train_words = [w for v in ids["train"] for s in fx.ann["train"][v]["sentences"]
                 for w in word_vocab.word_tokenize(" ".join(s.split()))]
  counts = collections.Counter(train_words)
  vocab = ["<pad>", "<unk>"] + sorted(counts, key=lambda w: (-counts[w], w))
  # GloVe lines for every third vocabulary word (exact binary fractions), two unknown words
  # and the first OOV word in upper case (found by the case fallback).
  in_file = {w: [i + 0.25, -i - 0.5, i / 4] for i, w in enumerate(vocab) if i >= 2 and i % 3 == 0}
  oov = [w for w in vocab[2:] if w not in in_file]
  cased = next(w for w in oov if w.isalpha())
  lines = [f"{w} {' '.join(str(x) for x in v)}" for w, v in in_file.items()]
  lines += ["zzznotaword 1 2 3", "qqqalsonot 4 5 6", f"{cased.upper()} 9.5 8.5 7.5"]
  glove = tmp_path / "glove.tiny.txt"
  glove.write_text("\n".join(lines) + "\n", encoding="utf-8")
  ids_file = tmp_path / "ids.txt"
  ids_file.write_text("\n".join(ids["train"] + ids["val_1"]))
  out = tmp_path / "out"
  path = prepare.prepare(["activitynet_captions", "--annotations", *map(str, fx.files),
                          "--features", str(feats), "--output", str(out), "--video-ids",
                          str(ids_file), "--word-vectors", str(glove)])
  assert reader.load_vocab(path) == vocab
  matrix = np.load(pathlib.Path(path) / "word_vectors.npy")
  assert matrix.dtype == np.float32 and matrix.shape == (len(vocab), 3)
  np.testing.assert_array_equal(matrix[0], 0.0)  # <pad>
  for w, v in in_file.items():
    np.testing.assert_array_equal(matrix[vocab.index(w)], np.float32(v), err_msg=w)
  np.testing.assert_array_equal(matrix[vocab.index(cased)], np.float32([9.5, 8.5, 7.5]))
  # OOV words (and <unk>) get small random rows, not zeros.
  truly_oov = [w for w in oov if w != cased]
  rows = matrix[[vocab.index(w) for w in truly_oov] + [1]]
  assert (np.abs(rows).max(axis=1) > 0).all() and np.abs(rows).max() < 1.0

  report = reader.load_metadata(path)["extra"]["word_vectors"]
  assert report["oov_count"] == len(truly_oov)
  assert report["oov_rate"] == pytest.approx(len(truly_oov) / (len(vocab) - 2))
  assert report["token_oov_rate"] == pytest.approx(
      sum(counts[w] for w in truly_oov) / len(train_words))
  assert (report["found"], report["case_fallback"], report["dim"], report["lines"]) == (
      len(in_file), 1, 3, len(lines))
  assert report["examples"] == sorted(truly_oov, key=lambda w: (-counts[w], w))[:20]
  assert report["output"] == "word_vectors.npy"
  stored = json.loads((pathlib.Path(path) / "word_vectors_report.json").read_text())
  assert stored == report
  # Written inside the dataset's atomic write: no temp files left anywhere.
  assert not [p for p in out.rglob("*") if p.name.startswith(".")]

  # A malformed vectors file fails before anything is written.
  glove.write_text("the 1 2 3\nman 1 x 3\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"glove.tiny.txt:2: malformed vector value"):
    anc.convert([str(p) for p in fx.files], str(feats), str(tmp_path / "out2"),
                video_ids=ids["train"], word_vectors=str(glove), verbose=False)
  assert not (tmp_path / "out2").exists()


def test_wordpiece_tokens_and_feature_rate_past_end(tmp_path):
  ann = {"duration": 4.2, "timestamps": [[0, 1]], "sentences": ["A man rides a bike."]}
  train = data_fixtures.write_json(tmp_path / "train.json", {"v_a": ann, "v_b": ann})
  feats = tmp_path / "f"
  feats.mkdir()
  np.save(feats / "v_a.npy", np.arange(12, dtype=np.float32).reshape(6, 2))  # 6 rows at 1/s
  np.save(feats / "b.npy", np.ones((4, 2), np.float32))
  path, counter = anc.convert([train], str(feats), str(tmp_path / "out"), feature_rate=1.0,
                              tokenizer="wordpiece", verbose=False)
  recs = data_fixtures.read_examples(path, "train")
  # Rows starting at 5 s and 6 s lie past the 4.2 s video: dropped; the last row is clipped.
  np.testing.assert_array_equal(recs["v_a"]["features/c3d"],
                                np.arange(10, dtype=np.float32).reshape(5, 2))
  np.testing.assert_allclose(recs["v_a"]["timestamps/c3d"],
                             [[0, 1], [1, 2], [2, 3], [3, 4], [4, 4.2]], rtol=1e-6)
  np.testing.assert_array_equal(recs["v_b"]["timestamps/c3d"][-1], [3, 4])
  assert counter.summary()["repaired"] == {"feature rows past the video end (dropped)": 1}
  # bert-base-uncased ids, looked up by hand in its vocab.txt.
  assert data_fixtures.token_lists(recs["v_a"]) == [[1037, 2158, 12271, 1037, 7997, 1012]]
  assert reader.load_metadata(path)["vocab_size"] == 30522


def test_clean_annotation_hand_cases():
  counter = builder.SkipCounter()
  ann = {"duration": 10.0,
         "timestamps": [[1, 2], [3, 2], [12, 11], [-1, 4], [8, 15], [10, 12], [1, 2], [5, "x"],
                        [2, 2]],
         "sentences": [" A  b. ", "c", "d", "e", "f", "g", "   ", "h", "i"]}
  duration, segments, sentences = anc.clean_annotation("v_x", ann, counter)
  assert duration == 10.0
  assert sentences == ["A b.", "c", "e", "f", "i"]
  assert segments == [[1, 2], [2, 3], [0, 4], [8, 10], [2, 2]]
  assert counter.summary()["repaired"] == {
      anc.SENTENCE_WHITESPACE: 1, anc.SEGMENT_SWAPPED: 1, anc.SEGMENT_CLIPPED_START: 1,
      anc.SEGMENT_CLIPPED_END: 1, common.SEGMENT_ZERO_LENGTH: 1}
  assert counter.summary()["examples"][common.SEGMENT_ZERO_LENGTH] == ["v_x"]
  assert counter.summary()["skipped"] == {
      anc.SEGMENT_REVERSED_OUTSIDE: 1, anc.SEGMENT_OUTSIDE: 1, anc.SENTENCE_EMPTY: 1,
      anc.SEGMENT_MALFORMED: 1}
  counter = builder.SkipCounter()
  assert anc.clean_annotation("v_a", {"duration": 0, "timestamps": [],
                                      "sentences": []}, counter) is None
  assert anc.clean_annotation("v_b", {"duration": 5, "timestamps": [[6, 7]],
                                      "sentences": ["x"]}, counter) is None
  assert anc.clean_annotation("v_c", {"duration": 5, "timestamps": [[1, 2]],
                                      "sentences": ["x", "y"]}, counter) is None
  assert anc.clean_annotation("v_d", {"duration": 5}, counter) is None
  assert counter.summary()["skipped"] == {
      anc.VIDEO_BAD_DURATION: 1, anc.SEGMENT_OUTSIDE: 1, anc.VIDEO_NO_SENTENCES: 1,
      anc.VIDEO_MALFORMED: 2}


def test_row_timestamps():
  # The converter's row times (its unused `row_timestamps` wrapper was removed): uniform
  # without a rate, r / R with one.
  np.testing.assert_allclose(common.uniform_timestamps(4, 10.0),
                             [[0, 2.5], [2.5, 5], [5, 7.5], [7.5, 10]])
  np.testing.assert_allclose(common.rate_timestamps(3, 1.0), [[0, 1], [1, 2], [2, 3]])


def test_train_val_overlap_and_duplicate_keys_are_errors(tmp_path):
  ann = {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["x"]}
  feats = tmp_path / "f"
  feats.mkdir()
  np.save(feats / "v_a.npy", np.ones((2, 4), np.float32))
  train = data_fixtures.write_json(tmp_path / "train.json", {"v_a": ann, "v_b": ann})
  val = data_fixtures.write_json(tmp_path / "val_1.json", {"v_b": ann})
  with pytest.raises(ValueError, match=r"both train and val_1: \['v_b'\]"):
    anc.convert([train, val], str(feats), str(tmp_path / "out"))
  dup = tmp_path / "val_2.json"
  dup.write_text('{"v_c": %s, "v_c": %s}' % (json.dumps(ann), json.dumps(ann)))
  with pytest.raises(ValueError, match=r"val_2.json: duplicate keys \['v_c'\]"):
    anc.convert([train, str(dup)], str(feats), str(tmp_path / "out"))
  with pytest.raises(ValueError, match="train.json annotation file is required"):
    anc.convert([val], str(feats), str(tmp_path / "out"))


def test_corrupt_hdf5_error_names_file(fx, tmp_path):
  good = tmp_path / "c3d.hdf5"
  with h5py.File(good, "w") as f:
    for vid in fx.subset["train"][:40]:
      f.create_group(vid).create_dataset("c3d_features", data=_features(vid, 50, 500))
  data = good.read_bytes()
  bad = tmp_path / "truncated.hdf5"
  bad.write_bytes(data[: len(data) // 2])
  with pytest.raises(features_lib.FeatureFileError, match="truncated.hdf5"):
    anc.convert([str(p) for p in fx.files], str(bad), str(tmp_path / "out"),
                feature_key="c3d_features", video_ids=fx.subset["train"][:40])
  assert not (tmp_path / "out" / "activitynet_captions" / "1.0.0").exists()


def test_corrupt_npy_and_wrong_dim_errors(tmp_path):
  ann = {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["x"]}
  train = data_fixtures.write_json(tmp_path / "train.json", {"v_a": ann, "v_b": ann})
  feats = tmp_path / "f"
  feats.mkdir()
  np.save(feats / "v_a.npy", np.ones((2, 4), np.float32))
  np.save(feats / "b.npy", np.ones((2, 4), np.float32))
  raw = (feats / "b.npy").read_bytes()
  (feats / "b.npy").write_bytes(raw[:-10])  # Truncated.
  with pytest.raises(features_lib.FeatureFileError, match=r"b\.npy"):
    anc.convert([train], str(feats), str(tmp_path / "out"))
  np.save(feats / "b.npy", np.ones((2, 5), np.float32))
  # Two videos, two dims: no majority, so both are named with their dims.
  with pytest.raises(features_lib.FeatureFileError,
                     match=r"no dim holds a majority: video 'v_a' has feature dim 4, video "
                           r"'v_b' has feature dim 5"):
    anc.convert([train], str(feats), str(tmp_path / "out"))


def test_odd_first_video_dim_is_named(tmp_path):
  # The FIRST video has the odd dim: it is named, not the second one.
  ann = {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["x"]}
  ids = ["v_odd", "v_b", "v_c", "v_d"]
  train = data_fixtures.write_json(tmp_path / "train.json", {v: ann for v in ids})
  feats = tmp_path / "f"
  feats.mkdir()
  for vid in ids:
    np.save(feats / f"{vid}.npy", np.ones((2, 7 if vid == "v_odd" else 4), np.float32))
  with pytest.raises(features_lib.FeatureFileError,
                     match=r"video 'v_odd' has feature dim 7, but 3 of the 4 first videos "
                           r"with features have dim 4 \(e.g. 'v_b'"):
    anc.convert([train], str(feats), str(tmp_path / "out"), verbose=False)
  # An odd video after the sampled ones is named when its record is built.
  source = features_lib.open_feature_source(str(feats))
  assert common.infer_dim(source, ["v_b", "v_c", "v_odd"], sample=2) == 4
  with pytest.raises(features_lib.FeatureFileError,
                     match=r"video 'v_odd' has feature dim 7, but the other videos have dim 4"):
    common.checked_features(source, "v_odd", 4, builder.SkipCounter())


def test_zeroed_block_in_uncompressed_hdf5_is_counted(tmp_path):
  # An uncompressed (contiguous) HDF5 dataset whose bytes were zeroed on disk, as a damaged
  # copy leaves it: the file reads fine, so the all-0 rows must be counted, not pass silently.
  ann = {"duration": 10.0, "timestamps": [[0, 5]], "sentences": ["a man walks"]}
  train = data_fixtures.write_json(tmp_path / "train.json",
                                   {"v_a": ann, "v_b": ann, "v_c": ann})
  h5 = tmp_path / "c3d.hdf5"
  with h5py.File(h5, "w") as f:
    for vid in ("v_a", "v_b", "v_c"):
      f.create_group(vid).create_dataset("c3d_features", data=_features(vid, 6, 8))
    offset = f["v_b"]["c3d_features"].id.get_offset()
  with open(h5, "r+b") as raw:
    raw.seek(offset + 2 * 8 * 4)  # Rows 2 and 3 of v_b: 2 rows x 8 float32.
    raw.write(bytes(2 * 8 * 4))
  path, counter = anc.convert([train], str(h5), str(tmp_path / "out"),
                              feature_key="c3d_features", verbose=False)
  summary = counter.summary()
  assert summary["repaired"] == {common.FEATURES_ZERO_ROWS: 1}
  assert summary["examples"][common.FEATURES_ZERO_ROWS] == ["v_b"]
  assert reader.load_metadata(path)["counts"]["repaired"] == {common.FEATURES_ZERO_ROWS: 1}
  b = data_fixtures.read_examples(path, "train")["v_b"]["features/c3d"]
  assert b.shape == (6, 8) and not b[2:4].any() and b[[0, 1, 4, 5]].all()  # Kept as read.


def test_zero_length_segments_in_the_real_files(each_annotations):
  # The whole real train/val_1 annotation stage (no features): the zero-length segments are
  # kept and counted with their videos (the excerpts keep both videos).
  _, root = each_annotations
  files = [str(root / "activitynet_captions" / f) for f in ("train.json", "val_1.json")]
  counter = builder.SkipCounter()
  cleaned = anc.load_annotations(files, counter)
  summary = counter.summary()
  assert summary["repaired"][common.SEGMENT_ZERO_LENGTH] == 2
  # Both are train videos: val_1 has none.
  assert summary["examples"][common.SEGMENT_ZERO_LENGTH] == ["v_N7ppHQNikv8", "v_4rKTw99bM8g"]
  segments = {v: segs for v, _, segs, _ in cleaned["train"]}
  assert [34.77, 34.77] in segments["v_N7ppHQNikv8"]
  assert [4.97, 4.97] in segments["v_4rKTw99bM8g"]


def test_feature_source_layouts(tmp_path):
  with h5py.File(tmp_path / "flat.h5", "w") as f:
    f["abc"] = np.arange(6, dtype=np.float64).reshape(3, 2)
    f.create_group("grp").create_dataset("only", data=np.ones((1, 2)))
    f.create_group("two").create_dataset("a", data=np.ones((1, 2)))
    f["two"].create_dataset("b", data=np.ones((1, 2)))
    f["vec"] = np.ones(4)
  src = features_lib.open_feature_source(str(tmp_path / "flat.h5"))
  got = src.get("abc")
  assert got.dtype == np.float32 and got.tolist() == [[0, 1], [2, 3], [4, 5]]
  assert src.get("grp").shape == (1, 2) and src.get("nope") is None
  with pytest.raises(features_lib.FeatureFileError, match="entries"):
    src.get("two")
  with pytest.raises(features_lib.FeatureFileError, match=r"flat.h5\['vec'\].*\[T, D\]"):
    src.get("vec")
  keyed = features_lib.open_feature_source(str(tmp_path / "flat.h5"), "b")
  assert keyed.get("two").shape == (1, 2) and keyed.get("grp") is None
  d = tmp_path / "npz"
  d.mkdir()
  np.savez(d / "one.npz", feats=np.ones((2, 3)))
  np.savez(d / "many.npz", rgb=np.ones((2, 3)), flow=np.zeros((2, 3)))
  src = features_lib.open_feature_source(str(d))
  assert src.get("one").shape == (2, 3) and src.video_ids() == ["many", "one"]
  with pytest.raises(features_lib.FeatureFileError, match="many.npz"):
    src.get("many")
  src = features_lib.open_feature_source(str(d), "flow")
  assert src.get("many").sum() == 0 and src.get("one") is None
  with pytest.raises(FileNotFoundError):
    features_lib.open_feature_source(str(tmp_path / "absent.h5"))


def test_cli_unknown_dataset_lists_valid_names():
  valid = ", ".join(sorted(prepare.CONVERTERS))
  assert "activitynet_captions" in valid and "demo" in valid
  with pytest.raises(SystemExit) as err:
    prepare.prepare(["nosuch", "--output", "x"])
  assert str(err.value) == f"hvt-prepare: unknown dataset 'nosuch'; valid: {valid}"


def _small_ann_files(tmp_path):
  ann = {"duration": 10.0, "timestamps": [[0, 1]], "sentences": ["a man walks"]}
  train = data_fixtures.write_json(tmp_path / "train.json", {"v_a": ann, "v_b": ann})
  val = data_fixtures.write_json(tmp_path / "val_1.json", {"v_c": ann})
  return [train, val]


def test_feature_rate_counts_too_few_rows(tmp_path):
  feats = tmp_path / "feats"
  feats.mkdir()
  # Duration 10 s at 1 row/s implies 10 rows: 5 rows is < 90% (counted), 9 rows is not.
  for vid, rows in (("v_a", 5), ("v_b", 9), ("v_c", 10)):
    np.save(feats / f"{vid}.npy", np.ones((rows, 4), np.float32))
  _, counter = anc.convert(_small_ann_files(tmp_path), str(feats), str(tmp_path / "out"),
                           feature_rate=1.0, verbose=False)
  summary = counter.summary()
  assert summary["repaired"].get(common.FEATURES_SHORT) == 1
  assert summary["examples"][common.FEATURES_SHORT] == ["v_a"]


def test_video_ids_prefix_unmatched_and_none_found(tmp_path, capsys):
  files = _small_ann_files(tmp_path)
  counter = builder.SkipCounter()
  # With or without the "v_" prefix; "zzz" is in no file (counted and reported).
  cleaned = anc.load_annotations(files, counter, video_ids=["a", "v_c", "zzz"])
  assert [v[0] for v in cleaned["train"]] == ["v_a"]
  assert [v[0] for v in cleaned["val_1"]] == ["v_c"]
  assert counter.summary()["skipped"] == {common.VIDEO_ID_NOT_FOUND: 1}
  assert counter.summary()["examples"][common.VIDEO_ID_NOT_FOUND] == ["zzz"]
  assert "--video-ids: 2 of 3 ids found" in capsys.readouterr().out
  with pytest.raises(ValueError, match=r"none of the 2 --video-ids are in the annotation"):
    anc.load_annotations(files, builder.SkipCounter(), video_ids=["x", "y"])
  empty = tmp_path / "ids.txt"
  empty.write_text("\n  \n")
  with pytest.raises(ValueError, match=r"ids.txt: the --video-ids file lists no video id"):
    common.read_id_list(str(empty))


def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys):
  files = _small_ann_files(tmp_path)
  feats = tmp_path / "feats"
  feats.mkdir()
  for vid in ("v_a", "v_b", "v_c"):
    np.save(feats / f"{vid}.npy", np.ones((3, 4), np.float32))
  base = ["activitynet_captions", "--features", str(feats), "--output", str(tmp_path / "o")]
  cases = [(["--annotations", files[1]], "a train.json annotation file is required"),
           (["--annotations", *files, "--num-shards", "0"], "num_shards must be >= 1"),
           (["--annotations", files[0], "--features", str(tmp_path / "nope.h5")],
            "nope.h5")]
  for extra, message in cases:
    with pytest.raises(SystemExit) as e:
      prepare.main(base + extra)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("hvt-prepare: error: ") and message in err, err
    assert "Traceback" not in err
