"""Tests for the TVR converter (data_prep.tvr) on hand-written files in TVR's real layout.

Queries are JSONL lines as TVR ships them; video features are HDF5 keyed by vid_name
([n, 1024] I3D or [n, 3072] I3D+ResNet, one row per 1.5 s); subtitle features are HDF5
[n, 768] with `<vid_name>-mask` entries. Expected values are written out by hand.
"""

import functools
import json
import pathlib
import pickle

import h5py
import numpy as np
import pytest

from data_prep import builder
from data_prep import common
from data_prep import features as features_lib
from hvt_jax.input import reader
from data_prep import tvr
from hvt_jax.vocab import wordpiece
from hvt_jax.cli import prepare
from tests import data_fixtures

V1 = "friends_s01e03_seg02_clip_19"
V2 = "bbt_s03e11_seg01_clip_04"
V3 = "castle_s02e05_seg02_clip_10"
V4 = "house_s04e02_seg02_clip_21"
V5 = "met_s02e07_seg01_clip_00"


def _rows(video_id, n, dim):
  seed = sum(ord(c) for c in video_id) % 97
  return (np.arange(n * dim, dtype=np.float32).reshape(n, dim) % 13 + seed) / 100.0


def _q(desc_id, desc, vid, duration, ts=None, qtype="v"):
  q = {"desc_id": desc_id, "desc": desc, "vid_name": vid, "duration": duration, "type": qtype}
  if ts is not None:
    q["ts"] = ts
  return q


def _jsonl(path, queries):
  path.write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
  return str(path)


def _stamps(n, duration):
  r = np.arange(n, dtype=np.float64)
  return np.stack([1.5 * r, np.minimum(1.5 * (r + 1), duration)], 1)


@pytest.fixture()
def files(tmp_path):
  """A small TVR release: 3 query files, I3D features, subtitle features with masks."""
  queries = {
      "train": [
          _q(90200, "Rachel hands Monica a cup.", V1, 61.46, [16.48, 33.87], "v"),
          _q(90201, "  Joey says   he is hungry. ", V1, 61.46, [40.0, 45.5], "t"),
          _q(90202, "Sheldon knocks on the door.", V2, 30.0, [3.0, 9.0], "vt"),
      ],
      "val": [_q(80100, "Castle picks up the phone.", V3, 20.9, [1.0, 4.5], "v")],
      "test_public": [_q(70000, "House limps into the room.", V4, 12.0, None, "v")],
  }
  paths = {s: _jsonl(tmp_path / f"tvr_{s}_release.jsonl", q) for s, q in queries.items()}
  n_rows = {V1: 41, V2: 20, V3: 14, V4: 8}  # ceil(duration / 1.5)
  i3d = tmp_path / "tvr_i3d_rgb600_avg_cl-1.5.h5"
  sub = tmp_path / "tvr_sub_pretrained_w_sub_query_max_cl-1.5.h5"
  masks = {V1: np.array([1] * 20 + [0] * 5 + [1] * 16), V2: np.ones(20), V3: None,
           V4: np.zeros(8)}
  with h5py.File(i3d, "w") as fi, h5py.File(sub, "w") as fs:
    for vid, n in n_rows.items():
      fi.create_dataset(vid, data=_rows(vid, n, 1024))
      fs.create_dataset(vid, data=_rows(vid + "sub", n, 768))
      if masks[vid] is not None:
        fs.create_dataset(f"{vid}-mask", data=masks[vid].astype(np.float32)[:, None])
  return {"queries": paths, "i3d": str(i3d), "sub": str(sub), "rows": n_rows, "masks": masks,
          "raw": queries, "tmp": tmp_path}


def _convert(files, **kwargs):
  args = dict(subtitle_features=files["sub"], verbose=False)
  args.update(kwargs)
  queries = args.pop("queries", list(files["queries"].values()))
  video = args.pop("video", [files["i3d"]])
  out = args.pop("out", str(files["tmp"] / "out"))
  return tvr.convert(queries, video, out, **args)


def test_records_metadata_and_desc_id_maps(files):
  dataset_dir, counter = _convert(files, num_shards=2)
  meta = reader.load_metadata(dataset_dir)
  assert meta["modalities"] == {"i3d": 1024, "subtitle": 768}
  assert meta["tokenizer"] == "wordpiece" and meta["vocab_size"] == 30522
  assert meta["splits"] == {"train": 2, "val": 1, "test_public": 1}
  # V4's subtitle mask is all 0 -> stored as missing ([0, 768]).
  assert meta["missing"]["test_public"] == {"i3d": 0, "subtitle": 1}
  assert meta["extra"]["desc_ids"] == {"train": {V1: [90200, 90201], V2: [90202]},
                                       "val": {V3: [80100]}, "test_public": {V4: [70000]}}
  assert meta["extra"]["query_types"]["train"] == {V1: ["v", "t"], V2: ["vt"]}
  summary = counter.summary()
  assert summary["repaired"] == {"sentence whitespace normalized": 1,
                                 "subtitle mask is 0 everywhere (stored as missing)": 1,
                                 "subtitle rows with mask 0 dropped": 1}
  assert summary["skipped"] == {}

  tok = wordpiece.WordPieceTokenizer.from_file()
  train = data_fixtures.read_examples(dataset_dir, "train")
  v1 = train[V1]
  assert [s.decode() for s in v1["sentences"]] == ["Rachel hands Monica a cup.",
                                                   "Joey says he is hungry."]
  np.testing.assert_allclose(v1["segments"], [[16.48, 33.87], [40.0, 45.5]], rtol=1e-6)
  assert data_fixtures.token_lists(v1) == [tok.encode("Rachel hands Monica a cup."),
                         tok.encode("Joey says he is hungry.")]
  # Hand check of the WordPiece ids ([CLS]/[SEP] are not stored).
  assert data_fixtures.token_lists(v1)[0][:2] == [tok.vocab_index["rachel"],
                                                  tok.vocab_index["hands"]]
  assert v1["duration"] == pytest.approx(61.46)
  np.testing.assert_array_equal(v1["features/i3d"], _rows(V1, 41, 1024))
  # Last row: [60, 61.46] (clipped to the duration).
  np.testing.assert_allclose(v1["timestamps/i3d"], _stamps(41, 61.46), rtol=1e-6)
  # Subtitle rows 20..24 have mask 0: dropped, the others keep their own times.
  keep = np.r_[0:20, 25:41]
  np.testing.assert_array_equal(v1["features/subtitle"], _rows(V1 + "sub", 41, 768)[keep])
  np.testing.assert_allclose(v1["timestamps/subtitle"], _stamps(41, 61.46)[keep], rtol=1e-6)
  # V3 has no mask entry: every row kept.
  v3 = data_fixtures.read_examples(dataset_dir, "val")[V3]
  assert v3["features/subtitle"].shape == (14, 768)
  # test_public queries have no ts -> segment [-1, -1].
  v4 = data_fixtures.read_examples(dataset_dir, "test_public")[V4]
  np.testing.assert_array_equal(v4["segments"], [[-1.0, -1.0]])
  assert v4["features/subtitle"].shape == (0, 768) and v4["timestamps/subtitle"].shape == (0, 2)


def test_query_robustness(files, tmp_path):
  dur = 30.0
  train = [
      _q(1, "swapped inside", V2, dur, [9.0, 3.0]),
      _q(2, "reversed outside", V2, dur, [40.0, 10.0]),
      _q(3, "outside", V2, dur, [31.0, 35.0]),
      _q(4, "end clipped", V2, dur, [25.0, 33.0]),
      _q(5, "   ", V2, dur, [1.0, 2.0]),
      _q(1, "duplicate desc_id", V2, dur, [1.0, 2.0]),
      _q(6, "no ts in train", V2, dur, None),
      _q(7, "odd type", V2, dur, [0.0, 1.0], qtype="x"),
      _q(8, "longer duration", V2, 31.0, [0.0, 1.0]),
      _q(9, "bad ts", V2, dur, ["a", 1]),
      {"desc_id": 10, "desc": "no video", "duration": dur, "ts": [0, 1], "type": "v"},
      _q(11, "bad duration", V2, -1, [0.0, 1.0]),
  ]
  path = _jsonl(tmp_path / "tvr_train_release.jsonl", train)
  dataset_dir, counter = _convert(files, queries=[path])
  rec = data_fixtures.read_examples(dataset_dir, "train")[V2]
  assert [s.decode() for s in rec["sentences"]] == ["swapped inside", "end clipped", "odd type",
                                                   "longer duration"]
  np.testing.assert_allclose(rec["segments"], [[3, 9], [25, 31], [0, 1], [0, 1]])
  assert rec["duration"] == 31.0  # the largest of the queries' durations
  summary = counter.summary()
  assert summary["skipped"] == {
      "duplicate desc_id": 1, "query has no ts": 1, "query malformed": 1,
      "query duration invalid": 1, "segment malformed": 1, "segment outside video": 1,
      "segment start > end outside video": 1, "sentence empty": 1}
  assert summary["repaired"] == {
      "duration differs between queries (max used)": 1,
      "query type unknown (kept)": 1, "segment end > duration (clipped)": 1,
      "segment start > end (swapped)": 1}
  assert summary["examples"]["query malformed"] == ["tvr_train_release.jsonl:11"]
  meta = reader.load_metadata(dataset_dir)
  assert meta["extra"]["desc_ids"]["train"] == {V2: [1, 4, 7, 8]}
  assert meta["extra"]["query_types"]["train"] == {V2: ["v", "v", "x", "v"]}


def test_feature_robustness(tmp_path):
  vids = ["ok", "absent", "nan", "empty", "short", "long", "sub_absent", "sub_nan",
          "sub_mask_len", "sub_empty"]
  queries = [_q(i, f"query about {v}", v, 15.0, [0.0, 3.0]) for i, v in enumerate(vids)]
  path = _jsonl(tmp_path / "tvr_train_release.jsonl", queries)
  video, sub = tmp_path / "video.h5", tmp_path / "sub.h5"
  with h5py.File(video, "w") as fv, h5py.File(sub, "w") as fs:
    for v in vids:
      n = {"empty": 0, "short": 8, "long": 13}.get(v, 10)
      if v != "absent":
        arr = _rows(v, n, 1024)
        if v == "nan":
          arr[4, 7] = np.inf
        fv.create_dataset(v, data=arr, maxshape=(None, 1024))
      if v == "sub_absent":
        continue
      s = _rows(v, {"sub_empty": 0, "long": 13}.get(v, 10), 768)
      if v == "sub_nan":
        s[2, 3] = np.nan
      fs.create_dataset(v, data=s, maxshape=(None, 768))
      fs.create_dataset(f"{v}-mask", data=np.ones(9 if v == "sub_mask_len" else len(s)))
  dataset_dir, counter = tvr.convert([path], [f"i3d={video}"], str(tmp_path / "out"),
                                     subtitle_features=str(sub), verbose=False)
  recs = data_fixtures.read_examples(dataset_dir, "train")
  assert sorted(recs) == sorted(set(vids) - {"absent", "nan", "empty"})
  assert recs["long"]["features/i3d"].shape == (10, 1024)  # rows from 15 s on dropped
  np.testing.assert_allclose(recs["long"]["timestamps/i3d"][-1], [13.5, 15.0])
  assert recs["short"]["features/i3d"].shape == (8, 1024)
  assert recs["long"]["features/subtitle"].shape == (10, 768)
  for v in ("sub_absent", "sub_nan", "sub_mask_len", "sub_empty"):
    assert recs[v]["features/subtitle"].shape == (0, 768)
  summary = counter.summary()
  assert summary["skipped"] == {"features contain NaN/Inf": 1, "features have zero rows": 1,
                                "features missing": 1}
  assert summary["repaired"] == {
      "feature rows past the video end (dropped)": 1,
      "features cover < 90% of the video (kept)": 1,
      "subtitle features contain NaN/Inf (stored as missing)": 1,
      "subtitle features have zero rows (stored as missing)": 1,
      "subtitle features missing (stored as missing)": 1,
      "subtitle mask length differs from rows (stored as missing)": 1,
      "subtitle rows past the video end (dropped)": 1}
  assert summary["examples"]["features missing"] == ["absent"]
  assert reader.load_metadata(dataset_dir)["missing"]["train"] == {"i3d": 0, "subtitle": 4}


def test_errors_name_file_and_line_or_key(files, tmp_path):
  # Non-UTF-8 bytes on line 2.
  (tmp_path / "bad").mkdir()
  bad = tmp_path / "bad" / "tvr_train_release.jsonl"
  bad.write_bytes(json.dumps(_q(1, "ok", V1, 61.46, [1, 2])).encode() + b"\n"
                  + b'{"desc_id": 2, "desc": "caf\xe9", "vid_name": "x"}\n')
  with pytest.raises(ValueError, match=r"tvr_train_release.jsonl:2: not valid UTF-8"):
    _convert(files, queries=[str(bad)])
  # Not json on line 3 (blank lines are allowed).
  bad.write_text(json.dumps(_q(1, "ok", V1, 61.46, [1, 2])) + "\n\n{oops\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"tvr_train_release.jsonl:3: not valid json"):
    _convert(files, queries=[str(bad)])
  # A video in two split files.
  val = _jsonl(tmp_path / "bad" / "tvr_val_release.jsonl", [_q(5, "again", V1, 61.46, [1, 2])])
  with pytest.raises(ValueError, match=r"1 videos are in both .*tvr_train_release.jsonl and "
                     r".*tvr_val_release.jsonl"):
    _convert(files, queries=[files["queries"]["train"], val])
  # Truncated video and subtitle HDF5 files: errors naming the file.
  for key in ("i3d", "sub"):
    data = pathlib.Path(files[key]).read_bytes()
    cut = tmp_path / f"cut_{key}.h5"
    cut.write_bytes(data[:len(data) // 2])
    kwargs = {"video": [str(cut)]} if key == "i3d" else {"subtitle_features": str(cut)}
    with pytest.raises(features_lib.FeatureFileError, match=f"cut_{key}.h5"):
      _convert(files, **kwargs)
  # A dim the converter cannot name, and a mask of the wrong shape.
  odd = tmp_path / "odd.h5"
  with h5py.File(odd, "w") as f:
    for vid, n in files["rows"].items():
      f.create_dataset(vid, data=np.ones((n, 500), np.float32))
  with pytest.raises(ValueError, match=r"odd.h5: cannot name a modality of dim 500"):
    _convert(files, video=[str(odd)])
  mask2d = tmp_path / "mask2d.h5"
  with h5py.File(mask2d, "w") as f:
    f.create_dataset(V1, data=np.ones((41, 768), np.float32))
    f.create_dataset(f"{V1}-mask", data=np.ones((41, 2), np.float32))
  with pytest.raises(features_lib.FeatureFileError, match=r"mask2d.h5\[.*-mask'\]"):
    _convert(files, subtitle_features=str(mask2d))
  assert not list((tmp_path / "out").rglob("*.tfrecord*")) if (tmp_path / "out").exists() \
      else True


def test_named_concatenated_features_and_word_tokenizer(files, tmp_path):
  cat = tmp_path / "i3d_resnet.h5"
  with h5py.File(cat, "w") as f:
    for vid, n in files["rows"].items():
      f.create_dataset(vid, data=_rows(vid, n, 3072))
  dataset_dir, _ = _convert(files, video=[str(cat), f"rgb={files['i3d']}"],
                            subtitle_features=None, tokenizer="word")
  meta = reader.load_metadata(dataset_dir)
  assert meta["modalities"] == {"i3d_resnet": 3072, "rgb": 1024}
  vocab = reader.load_vocab(dataset_dir)
  # Train sentences: "rachel hands monica a cup ." "joey says he is hungry ." "sheldon ..."
  assert vocab[:3] == ["<pad>", "<unk>", "."] and "sheldon" in vocab and "castle" not in vocab
  v3 = data_fixtures.read_examples(dataset_dir, "val")[V3]
  index = {t: i for i, t in enumerate(vocab)}
  # "castle picks up the phone ." -> only "the" and "." are train words.
  assert data_fixtures.token_lists(v3) == [[1, 1, 1, index["the"], 1, index["."]]]


def test_interrupted_rerun_is_idempotent(files, monkeypatch):
  first, _ = _convert(files, num_shards=2)
  reference = data_fixtures.shard_examples(first)
  real_get = features_lib.Hdf5FeatureSource.get
  calls = {"n": 0}

  def interrupted_get(self, video_id):
    calls["n"] += 1
    if calls["n"] == len(files["rows"]) + 2:  # infer_dim reads each video, then 1 record.
      raise KeyboardInterrupt
    return real_get(self, video_id)

  monkeypatch.setattr(features_lib.Hdf5FeatureSource, "get", interrupted_get)
  with pytest.raises(KeyboardInterrupt):
    _convert(files, num_shards=2)
  monkeypatch.setattr(features_lib.Hdf5FeatureSource, "get", real_get)
  assert data_fixtures.shard_examples(first) == reference
  assert [p.name for p in pathlib.Path(first).parent.iterdir()] == ["1.0.0"]
  again, _ = _convert(files, num_shards=2)
  assert again == first and data_fixtures.shard_examples(again) == reference


def test_record_builder_survives_pickling(files):
  # Worker processes (num_workers > 1) receive build_record's sources by pickle: open HDF5
  # handles must not travel, and the unpickled sources must reopen their files.
  sub = tvr.SubtitleSource(files["sub"])
  video = features_lib.open_feature_source(files["i3d"])
  sub.get(V1)  # opens the handle in this process
  fn = functools.partial(tvr.build_record, video_sources={"i3d": video}, dims={"i3d": 1024},
                         subtitle_source=sub, clip_seconds=1.5)
  clone = pickle.loads(pickle.dumps(fn))
  counter = builder.SkipCounter()
  item = ("train", V2, 30.0, [[3.0, 9.0]], ["Sheldon knocks."], [[1, 2]])
  record = clone(item, counter)
  np.testing.assert_array_equal(record["features"]["i3d"], _rows(V2, 20, 1024))
  np.testing.assert_array_equal(record["features"]["subtitle"], _rows(V2 + "sub", 20, 768))
  np.testing.assert_allclose(record["timestamps"]["subtitle"], _stamps(20, 30.0))
  assert counter.summary()["repaired"] == {}


def test_cli_registered(files):
  out = files["tmp"] / "cli_out"
  dataset_dir = prepare.prepare(
      ["tvr", "--queries", *files["queries"].values(), "--video-features",
       f"i3d={files['i3d']}", "--subtitle-features", files["sub"], "--output", str(out),
       "--max-videos", "1"])
  assert reader.load_metadata(dataset_dir)["splits"] == {"train": 1, "val": 1,
                                                         "test_public": 1}


def test_counts_only_for_converted_videos_and_once_per_video(files, tmp_path):
  # A duplicate desc_id and an empty desc of V2, which is then left out by --video-ids.
  queries = dict(files["raw"])
  queries["train"] = queries["train"] + [_q(90202, "dup of V2", V2, 30.0, [1.0, 2.0]),
                                         _q(90210, "   ", V2, 30.0, [1.0, 2.0])]
  paths = [_jsonl(tmp_path / f"tvr_{s}_release.jsonl", q) for s, q in queries.items()]
  _, counter = _convert(files, queries=paths, video_ids=[V1, V3, V4])
  summary = counter.summary()
  assert tvr.QUERY_DUPLICATE not in summary["skipped"]
  assert "sentence empty" not in summary["skipped"]
  _, counter = _convert(files, queries=paths)
  assert counter.summary()["skipped"][tvr.QUERY_DUPLICATE] == 1
  assert counter.summary()["skipped"]["sentence empty"] == 1
  # Two video modalities both with rows past the end: counted once for the video.
  long_rows = tmp_path / "long.h5"
  with h5py.File(long_rows, "w") as f:
    for vid, n in files["rows"].items():
      f.create_dataset(vid, data=_rows(vid, n + 3, 1024))
  _, counter = _convert(files, video=[f"a={long_rows}", f"b={long_rows}"],
                        subtitle_features=None, out=str(tmp_path / "out2"))
  assert counter.summary()["repaired"][common.FEATURES_PAST_END] == len(files["rows"])


# ------------------------------------------------------------------------------------------
# Query-only splits (test_public), the video index, splits that fail alone, all-0 rows.

QUERY_ONLY_DROPPED = ("vid_name", "duration", "ts", "type")


def _real_lines(root):
  path = root / "tvr" / "tvr_val_release.jsonl"
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _features_for(path, durations):
  """I3D rows (ceil(duration / 1.5) per video) for {vid: duration}."""
  with h5py.File(path, "w") as f:
    for vid, dur in durations.items():
      f.create_dataset(vid, data=_rows(vid, int(np.ceil(dur / 1.5 - 1e-6)), 1024))
  return str(path)


def test_query_only_split_from_real_files(annotations, tmp_path):
  # test_public as released: val lines without vid_name/duration/ts/type (query text and id
  # only); its corpus comes from the real tvr_video2dur_idx.json (the committed excerpts:
  # the val file's first videos, their index entries and the index's first test_public ones).
  lines = _real_lines(annotations)
  vids = list(dict.fromkeys(q["vid_name"] for q in lines))[:5]
  val = [q for q in lines if q["vid_name"] in vids[:2]]
  public = [{k: v for k, v in q.items() if k not in QUERY_ONLY_DROPPED}
            for q in lines if q["vid_name"] in vids[2:]]
  assert public and all(set(q) == {"desc_id", "desc"} for q in public)
  val_path = _jsonl(tmp_path / "tvr_val_release.jsonl", val)
  public_path = _jsonl(tmp_path / "tvr_test_public_release.jsonl", public)
  index_path = annotations / "tvr" / "tvr_video2dur_idx.json"
  index = json.loads(index_path.read_text())
  corpus = list(index["test_public"])[:3]  # --max-videos 3: the first 3 of the corpus.
  durations = {v: max(q["duration"] for q in val if q["vid_name"] == v) for v in vids[:2]}
  durations.update({v: index["test_public"][v][0] for v in corpus})
  h5 = _features_for(tmp_path / "i3d.h5", durations)

  dataset_dir = prepare.prepare(
      ["tvr", "--queries", val_path, public_path, "--video-index", str(index_path),
       "--video-features", f"i3d={h5}", "--output", str(tmp_path / "out"),
       "--max-videos", "3"])
  meta = reader.load_metadata(dataset_dir)
  assert meta["splits"] == {"val": 2, "test_public": 3}
  assert meta["corpus_splits"] == ["test_public"] and meta["empty_splits"] == []
  assert meta["counts"]["skipped"] == {}
  extra = meta["extra"]
  assert extra["query_only_splits"] == ["test_public"]
  # Queries: aligned lists in file order, WordPiece ids.
  tok = wordpiece.WordPieceTokenizer.from_file()
  queries = extra["queries"]["test_public"]
  assert queries["desc_ids"] == [q["desc_id"] for q in public]
  assert queries["sentences"] == [" ".join(q["desc"].split()) for q in public]
  assert queries["tokens"] == [tok.encode(s) for s in queries["sentences"]]
  assert set(extra["queries"]) == {"test_public"}
  assert set(extra["desc_ids"]) == {"val"}
  assert extra["desc_ids"]["val"] == {v: [q["desc_id"] for q in val if q["vid_name"] == v]
                                      for v in vids[:2]}
  # The video index of every split that has one (the submission format's video2idx).
  for split in ("val", "test_public"):
    assert extra["video_index"][split] == {v: i for v, (_, i) in index[split].items()}
  assert extra["video_index"]["test_public"]["castle_s01e01_seg02_clip_08"] == 1090
  # Corpus records: no sentences, the index's duration, the video's features.
  recs = data_fixtures.read_examples(dataset_dir, "test_public")
  assert list(recs) == corpus
  for vid, rec in recs.items():
    assert rec["sentences"].shape == (0,) and rec["segments"].shape == (0, 2)
    assert data_fixtures.token_lists(rec) == []
    assert rec["duration"] == pytest.approx(index["test_public"][vid][0], rel=1e-6)
    np.testing.assert_array_equal(rec["features/i3d"], _rows(vid, len(rec["features/i3d"]),
                                                              1024))
  val_recs = data_fixtures.read_examples(dataset_dir, "val")
  assert sorted(val_recs) == sorted(vids[:2])

  # Without --video-index the query-only split has no corpus: it is counted and left out,
  # and val is still written (before, every test query was "malformed" and nothing was).
  dataset_dir, counter = tvr.convert([val_path, public_path], [f"i3d={h5}"],
                                     str(tmp_path / "out2"), verbose=False)
  meta = reader.load_metadata(dataset_dir)
  assert meta["splits"] == {"val": 2} and meta["empty_splits"] == ["test_public"]
  summary = counter.summary()
  assert summary["skipped"] == {tvr.QUERY_ONLY_NO_CORPUS: 1, builder.SPLIT_EMPTY: 1}
  assert summary["examples"][builder.SPLIT_EMPTY] == ["test_public"]
  assert meta["extra"]["queries"] == {} and meta["extra"]["video_index"] == {}


def test_real_val_file_against_the_real_index(each_annotations):
  # The whole real val file against the real index: every video indexed, nothing skipped,
  # only whitespace repaired (no zero-length or reversed ts).
  kind, root = each_annotations
  index_path = root / "tvr" / "tvr_video2dur_idx.json"
  counter = builder.SkipCounter()
  loaded = tvr.load_queries([str(root / "tvr" / "tvr_val_release.jsonl")], counter,
                            video_index=str(index_path))
  sizes = {"excerpt": {"test_challenge": 5, "test_public": 5, "train": 5, "val": 24},
           "full": {"test_challenge": 1090, "test_public": 1089, "train": 17435,
                    "val": 2179}}[kind]
  assert len(loaded.videos["val"]) == len(loaded.index["val"]) == sizes["val"]
  assert counter.summary()["skipped"] == {}
  assert set(counter.summary()["repaired"]) == {common.SENTENCE_WHITESPACE}
  index = json.loads(index_path.read_text())
  assert {s: len(v) for s, v in index.items()} == sizes


def test_query_only_corpus_includes_unqueried_videos_and_query_checks(files, tmp_path):
  # A query-only file with quirks, and a corpus of 2 videos no query can name.
  public = [{"desc_id": 1, "desc": "  House   limps in. "}, {"desc_id": 2, "desc": "   "},
            {"desc": "no id"}, {"desc_id": 1, "desc": "repeated id"},
            {"desc_id": 3, "desc": "Castle sits."}]
  public_path = _jsonl(tmp_path / "tvr_test_public_release.jsonl", public)
  index = data_fixtures.write_json(tmp_path / "idx.json", {
      "test_public": {V4: [12.0, 7], V5: [9.0, 8], "no_features": [5.0, 9]},
      "test_challenge": {"x": "malformed, but not converted"}})
  h5 = _features_for(tmp_path / "i3d.h5", {V1: 61.46, V2: 30.0, V4: 12.0, V5: 9.0})
  dataset_dir, counter = tvr.convert([files["queries"]["train"], public_path], [h5],
                                     str(tmp_path / "out"), video_index=index, verbose=False)
  meta = reader.load_metadata(dataset_dir)
  assert meta["splits"] == {"train": 2, "test_public": 2}
  assert meta["corpus_splits"] == ["test_public"]
  recs = data_fixtures.read_examples(dataset_dir, "test_public")
  assert sorted(recs) == sorted([V4, V5])
  queries = meta["extra"]["queries"]["test_public"]
  assert queries["desc_ids"] == [1, 3]
  assert queries["sentences"] == ["House limps in.", "Castle sits."]
  summary = counter.summary()
  where = "tvr_test_public_release.jsonl"
  assert summary["skipped"][tvr.QUERY_MALFORMED] == 1
  assert summary["examples"][tvr.QUERY_MALFORMED] == [f"{where}:3"]
  assert summary["examples"][tvr.QUERY_DUPLICATE] == [f"{where}:4"]
  assert summary["examples"][common.SENTENCE_EMPTY] == [f"{where}:2"]
  assert f"{where}:1" in summary["examples"][common.SENTENCE_WHITESPACE]
  assert summary["examples"][common.FEATURES_MISSING] == ["no_features"]
  assert meta["extra"]["video_index"]["test_public"] == {V4: 7, V5: 8, "no_features": 9}


def test_index_checks_and_one_split_never_loses_the_others(files, tmp_path):
  broken = [{"desc_id": 500 + i, "desc": "no duration", "vid_name": V5} for i in range(2)]
  nofeat = [_q(600, "A video without features.", "no_features_vid", 10.0, [1.0, 2.0])]
  paths = [*files["queries"].values(),
           _jsonl(tmp_path / "tvr_broken_release.jsonl", broken),
           _jsonl(tmp_path / "tvr_nofeat_release.jsonl", nofeat)]
  index = data_fixtures.write_json(tmp_path / "idx.json", {
      "train": {V1: [61.46, 10], V2: [31.0, 11], "train_unqueried": [5.0, 12],
                "bad_entry": ["x", 13]},
      "val": {"val_unqueried": [10.0, 21]}})
  dataset_dir, counter = _convert(files, queries=paths, video_index=index)
  meta = reader.load_metadata(dataset_dir)
  assert meta["splits"] == {"train": 2, "val": 1, "test_public": 1}
  assert meta["empty_splits"] == ["broken", "nofeat"]
  summary = counter.summary()
  assert summary["skipped"] == {
      tvr.QUERY_MALFORMED: 2, common.FEATURES_MISSING: 1, builder.SPLIT_EMPTY: 2,
      tvr.INDEX_MALFORMED: 1, tvr.INDEX_NO_QUERY: 2}
  assert summary["examples"][builder.SPLIT_EMPTY] == ["broken", "nofeat"]
  assert summary["examples"][tvr.INDEX_NO_QUERY] == ["train_unqueried", "val_unqueried"]
  assert summary["examples"][tvr.INDEX_MALFORMED] == ["bad_entry"]
  assert summary["repaired"][tvr.NOT_IN_INDEX] == 1  # V3 (val) is not in the val index.
  assert summary["examples"][tvr.NOT_IN_INDEX] == [V3]
  assert summary["examples"][tvr.INDEX_DURATION_DIFFERS] == [V2]  # 30.0 s vs 31.0 s.
  extra = meta["extra"]
  assert extra["video_index"] == {"train": {V1: 10, V2: 11, "train_unqueried": 12},
                                  "val": {"val_unqueried": 21}}
  assert set(extra["desc_ids"]) == set(meta["splits"])
  assert data_fixtures.read_examples(dataset_dir, "train")[V2]["duration"] == 30.0
  # Two videos of one split with the same index: the submission format could not tell them
  # apart, so it is an error naming both.
  dup = data_fixtures.write_json(tmp_path / "dup.json", {"val": {V3: [20.9, 4], "x": [1, 4]}})
  with pytest.raises(ValueError, match=rf"'{V3}' and 'x' of split 'val' have the same index 4"):
    _convert(files, video_index=dup)
  # No split with a video left is still an error with the reasons (exit 2 on the command
  # line).
  with pytest.raises(ValueError, match=r"(?s)no split has a video left to convert.*query "
                                       r"malformed\s+2\s+tvr_broken_release.jsonl:1"):
    _convert(files, queries=paths[-2:-1])


def test_all_zero_rows_counted_once_per_video(files, tmp_path):
  # V2: a zeroed video row and a zeroed subtitle row (counted once); V3: a zeroed subtitle
  # row (no mask: kept); V1: zeros only in subtitle rows that its mask drops (not counted).
  i3d, sub = tmp_path / "i3d.h5", tmp_path / "sub.h5"
  with h5py.File(i3d, "w") as fi, h5py.File(sub, "w") as fs:
    for vid, n in files["rows"].items():
      video, subtitle = _rows(vid, n, 1024), _rows(vid + "sub", n, 768)
      if vid == V1:
        subtitle[20:25] = 0.0
      if vid == V2:
        video[0] = 0.0
        subtitle[3] = 0.0
      if vid == V3:
        subtitle[1] = 0.0
      fi.create_dataset(vid, data=video)
      fs.create_dataset(vid, data=subtitle)
      if files["masks"][vid] is not None:
        fs.create_dataset(f"{vid}-mask", data=files["masks"][vid].astype(np.float32))
  dataset_dir, counter = _convert(files, video=[str(i3d)], subtitle_features=str(sub))
  summary = counter.summary()
  assert summary["repaired"][common.FEATURES_ZERO_ROWS] == 2
  assert summary["examples"][common.FEATURES_ZERO_ROWS] == [V2, V3]
  meta = reader.load_metadata(dataset_dir)
  assert meta["counts"]["examples"][common.FEATURES_ZERO_ROWS] == [V2, V3]
