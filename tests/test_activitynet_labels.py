"""Tests for data_prep.activitynet_labels: v1.3 taxonomy, label map, join, converter.

The ActivityNet v1.3 json is hand-written in the official layout (a few leaves under internal
nodes, training/validation/testing subsets) and joined onto REAL ActivityNet Captions
annotations (ids taken from the committed excerpts of train.json / val_1.json).
"""

import json
import pathlib

import h5py
import numpy as np
import pytest

from data_prep import activitynet_captions
from data_prep import activitynet_labels as al
from data_prep import builder
from data_prep import features as features_lib
from hvt_jax.input import reader
from hvt_jax.vocab import word_vocab
from hvt_jax.cli import prepare
from tests import data_fixtures

SPORTS = "Sports, Exercise, and Recreation"
HOUSE = "Household Activities"
LEAVES = ["Dodgeball", "Ironing clothes", "Mopping floor", "Tango"]


def _taxonomy() -> list[dict]:
  nodes = [(0, "Root", None), (1, SPORTS, 0), (2, HOUSE, 0), (3, "Dodgeball", 1),
           (4, "Tango", 1), (5, "Ironing clothes", 2), (6, "Mopping floor", 2)]
  names = {i: n for i, n, _ in nodes}
  return [{"nodeId": i, "nodeName": n, "parentId": p,
           "parentName": names[p] if p is not None else None} for i, n, p in nodes]


def _entry(subset: str, anns: list[tuple[float, float, str]], duration: float = 100.0) -> dict:
  return {"subset": subset, "duration": duration, "url": "https://www.youtube.com/watch?v=x",
          "resolution": "1280x720",
          "annotations": [{"segment": [s, e], "label": l} for s, e, l in anns]}


@pytest.fixture(scope="module")
def real_ids(annotations: pathlib.Path) -> dict:
  root = annotations / "activitynet_captions"
  train = json.loads((root / "train.json").read_text())
  val = json.loads((root / "val_1.json").read_text())
  return {"train": list(train)[:6], "val_1": list(val)[:2], "train_ann": train,
          "val_ann": val, "root": root}


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory, real_ids) -> str:
  t, v = real_ids["train"], real_ids["val_1"]
  yt = lambda vid: vid[2:]  # Database keys are YouTube ids without "v_".
  database = {
      yt(t[0]): _entry("training", [(1.0, 50.0, "Tango")]),
      # Dodgeball has more segments (2, 15 s) but Tango more duration (30 s): Tango wins.
      yt(t[1]): _entry("training", [(0.0, 10.0, "Dodgeball"), (20.0, 25.0, "Dodgeball"),
                                    (0.0, 30.0, "Tango")]),
      # Tie in duration and count: the alphabetically first label.
      yt(t[2]): _entry("training", [(5.0, 15.0, "Mopping floor"),
                                    (0.0, 10.0, "Ironing clothes")]),
      # A reversed segment (swapped) and one that is not two numbers (left out of instances).
      yt(t[3]): _entry("validation", [(3.0, 9.0, "Mopping floor"), (9.0, 3.5, "Mopping floor"),
                                      (None, 2.0, "Mopping floor")]),
      yt(t[4]): _entry("testing", []),  # Testing: no annotations, no label.
      # t[5] is not in the database at all.
      yt(v[0]): _entry("validation", [(0.0, 12.0, "Dodgeball")]),
      "notInCaptions1": _entry("testing", []),
  }
  path = tmp_path_factory.mktemp("anet13") / "activity_net.v1-3.min.json"
  path.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": _taxonomy(),
                              "database": database}))
  return str(path)


EXPECTED = lambda ids: {  # pylint: disable=g-long-lambda
    ids["train"][0]: "Tango", ids["train"][1]: "Tango", ids["train"][2]: "Ironing clothes",
    ids["train"][3]: "Mopping floor", ids["train"][4]: "", ids["train"][5]: "",
    ids["val_1"][0]: "Dodgeball", ids["val_1"][1]: ""}


def test_load_taxonomy_leaves_and_parents(labels_file):
  leaves, parents = al.load_taxonomy(labels_file)
  assert leaves == LEAVES  # Internal nodes (Root, SPORTS, HOUSE) are not classes.
  assert parents["Tango"] == SPORTS and parents["Mopping floor"] == HOUSE
  assert parents[SPORTS] == "Root" and parents["Root"] is None


def test_label_map_rules(labels_file, real_ids):
  counter = builder.SkipCounter()
  labels = al.label_map(labels_file, counter)
  expected = {k: v for k, v in EXPECTED(real_ids).items() if v}
  assert labels == expected
  t = real_ids["train"]
  assert counter.summary()["repaired"] == {al.MULTI_LABEL: 2}
  assert counter.summary()["examples"][al.MULTI_LABEL] == [t[1], t[2]]


def test_video_label_duration_beats_count():
  anns = [{"segment": [0, 1], "label": "A"}, {"segment": [0, 1], "label": "A"},
          {"segment": [10, 4], "label": "B"}]  # Reversed segment still weighs 6 s.
  assert al.video_label(anns, "x") == ("B", 2)
  assert al.video_label([], "x") == (None, 0)
  with pytest.raises(ValueError, match=r"f\.json, video 'k'.*annotations\[0\] has no label"):
    al.video_label([{"segment": [0, 1]}], "f.json, video 'k'")


def test_label_map_errors(tmp_path):
  bad_label = tmp_path / "bad.json"
  bad_label.write_text(json.dumps({"taxonomy": _taxonomy(), "database": {
      "abc": _entry("training", [(0, 1, HOUSE)])}}))
  with pytest.raises(ValueError, match=r"bad\.json: video 'abc' has label "
                                        r"'Household Activities', which is not a leaf"):
    al.label_map(str(bad_label))
  no_tax = tmp_path / "notax.json"
  no_tax.write_text(json.dumps({"database": {}}))
  with pytest.raises(ValueError, match=r"notax\.json: missing field 'taxonomy'"):
    al.load_taxonomy(str(no_tax))
  dup = tmp_path / "dup.json"
  tax = _taxonomy() + [{"nodeId": 7, "nodeName": "Tango", "parentId": 2, "parentName": HOUSE}]
  dup.write_text(json.dumps({"taxonomy": tax, "database": {}}))
  with pytest.raises(ValueError, match=r"dup\.json: taxonomy has several leaves named "
                                       r"\['Tango'\]"):
    al.load_taxonomy(str(dup))


def test_label_record_prefix_and_drop():
  labels = {"v_abc": "Tango", "v_v_xyz": "Dodgeball"}
  records = [{"video_id": "v_abc", "label": ""}, {"video_id": "abc", "label": ""},
             {"video_id": "v_v_xyz", "label": ""}, {"video_id": "v_none", "label": ""}]
  counter = builder.SkipCounter()
  out = [al.label_record(r, counter, labels=labels) for r in records]
  assert [r["label"] for r in out] == ["Tango", "Tango", "Dodgeball", ""]
  assert records[0]["label"] == ""  # Inputs are not modified.
  assert counter.summary()["repaired"] == {al.NO_LABEL: 1}
  counter = builder.SkipCounter()
  out = [al.label_record(r, counter, labels=labels, drop_unlabeled=True) for r in records]
  assert [r and r["video_id"] for r in out] == ["v_abc", "abc", "v_v_xyz", None]
  assert counter.summary()["skipped"] == {al.NO_LABEL_DROPPED: 1}


def _write_features(path: pathlib.Path, ids: list[str]) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  feats = {}
  with h5py.File(path, "w") as f:
    for i, vid in enumerate(ids):
      feats[vid] = rng.normal(size=(5 + i, 500)).astype(np.float32)
      f.create_group(vid).create_dataset("c3d_features", data=feats[vid])
  return feats


def test_convert_end_to_end(tmp_path, labels_file, real_ids):
  ids = real_ids["train"] + real_ids["val_1"]
  feats = _write_features(tmp_path / "c3d.hdf5", ids)
  (tmp_path / "ids.txt").write_text("\n".join(ids))
  annotations = [str(real_ids["root"] / "train.json"), str(real_ids["root"] / "val_1.json")]
  out = tmp_path / "out"
  dataset_dir = prepare.prepare(
      ["activitynet_labels", "--labels", labels_file, "--annotations", *annotations,
       "--features", str(tmp_path / "c3d.hdf5"), "--feature-key", "c3d_features",
       "--video-ids", str(tmp_path / "ids.txt"), "--output", str(out)])
  assert reader.find_dataset_dir(str(out)) == dataset_dir  # Scratch dir removed.
  assert [p.name for p in out.iterdir()] == ["activitynet_labels"]

  meta = reader.load_metadata(dataset_dir)
  assert meta["name"] == "activitynet_labels"
  assert meta["extra"]["classes"] == LEAVES
  assert meta["extra"]["unlabeled"] == {"train": 2, "val_1": 1}
  assert meta["splits"] == {"train": 6, "val_1": 2}
  counts = meta["counts"]
  assert counts["repaired"][al.MULTI_LABEL] == 2 and counts["repaired"][al.NO_LABEL] == 3
  # The captions converter's own repairs are carried over unchanged.
  reference = builder.SkipCounter()
  for vid in real_ids["train"]:
    activitynet_captions.clean_annotation(vid, real_ids["train_ann"][vid], reference)
  for vid in real_ids["val_1"]:
    activitynet_captions.clean_annotation(vid, real_ids["val_ann"][vid], reference)
  for reason, n in reference.summary()["repaired"].items():
    assert counts["repaired"][reason] == n

  expected = EXPECTED(real_ids)
  vocab = reader.load_vocab(dataset_dir)
  seen = {}
  for split in ("train", "val_1"):
    for vid, ex in data_fixtures.read_examples(dataset_dir, split).items():
      seen[vid] = ex["label"].decode()
      ann = (real_ids["train_ann"] if split == "train" else real_ids["val_ann"])[vid]
      np.testing.assert_array_equal(ex["features/c3d"], feats[vid])
      sentences = [s.decode() for s in ex["sentences"]]
      assert sentences == [" ".join(s.split()) for s in ann["sentences"]]
      index = {t: i for i, t in enumerate(vocab)}
      assert data_fixtures.token_lists(ex) == [word_vocab.encode_words(s, index) for s in sentences]
      assert ex["duration"] == pytest.approx(ann["duration"], rel=1e-6)
  assert seen == expected
  # Every annotation is a labelled instance, in the file's order.
  t = real_ids["train"]
  want = {t[0]: [(1.0, 50.0, "Tango")],
          t[1]: [(0.0, 10.0, "Dodgeball"), (20.0, 25.0, "Dodgeball"), (0.0, 30.0, "Tango")],
          t[2]: [(5.0, 15.0, "Mopping floor"), (0.0, 10.0, "Ironing clothes")],
          t[3]: [(3.0, 9.0, "Mopping floor"), (3.5, 9.0, "Mopping floor")],
          real_ids["val_1"][0]: [(0.0, 12.0, "Dodgeball")]}
  for split in ("train", "val_1"):
    for vid, ex in data_fixtures.read_examples(dataset_dir, split).items():
      got = [(*map(float, seg), lab.decode())
             for seg, lab in zip(ex["instances/segments"], ex["instances/labels"])]
      assert got == want.get(vid, []), vid
      assert ex["instances/segments"].dtype == np.float64
  assert meta["instances"] == {"train": 8, "val_1": 1}
  assert counts["repaired"][al.BAD_INSTANCE] == 1
  assert counts["repaired"][al.REVERSED_INSTANCE] == 1
  assert counts["examples"][al.BAD_INSTANCE] == [t[3]]

  # --drop-unlabeled: the 3 unlabeled videos are skipped and counted.
  dataset_dir = prepare.prepare(
      ["activitynet_labels", "--labels", labels_file, "--annotations", *annotations,
       "--features", str(tmp_path / "c3d.hdf5"), "--feature-key", "c3d_features",
       "--video-ids", str(tmp_path / "ids.txt"), "--output", str(out), "--drop-unlabeled"])
  meta = reader.load_metadata(dataset_dir)
  assert meta["splits"] == {"train": 4, "val_1": 1}
  assert meta["counts"]["skipped"][al.NO_LABEL_DROPPED] == 3
  labels = [ex["label"].decode() for s in ("train", "val_1")
            for ex in data_fixtures.read_examples(dataset_dir, s).values()]
  assert sorted(labels) == sorted(v for v in expected.values() if v)


def test_label_hook_in_workers_writes_once(tmp_path, labels_file, real_ids):
  ids = real_ids["train"] + real_ids["val_1"]
  _write_features(tmp_path / "c3d.hdf5", ids)
  annotations = [str(real_ids["root"] / "train.json"), str(real_ids["root"] / "val_1.json")]
  runs, runs_dir = {}, {}
  for workers, drop in ((1, False), (2, False), (1, True)):
    out = tmp_path / f"w{workers}{drop}"
    path, _ = al.convert(annotations, str(tmp_path / "c3d.hdf5"), labels_file, str(out),
                         feature_key="c3d_features", video_ids=ids, num_workers=workers,
                         drop_unlabeled=drop, verbose=False)
    # Written once, straight into the dataset: no scratch data dir next to it.
    assert [p.name for p in out.iterdir()] == ["activitynet_labels"]
    meta = reader.load_metadata(path)
    meta.pop("vocab_file")
    runs[workers, drop] = (data_fixtures.shard_examples(path), meta)
    runs_dir[out.name] = path
  # Plain TFDS and Beam (labels set in the Beam workers): identical output, record for record.
  assert runs[1, False] == runs[2, False]
  meta = runs[1, True][1]
  assert meta["splits"] == {"train": 4, "val_1": 1}
  # Per split: the videos that had no label (here dropped), from the hook's counts.
  assert meta["extra"]["unlabeled"] == {"train": 2, "val_1": 1}
  assert meta["counts"]["skipped"][al.NO_LABEL_DROPPED] == 3
  expected = EXPECTED(real_ids)
  for split in ("train", "val_1"):
    for vid, ex in data_fixtures.read_examples(str(runs_dir["w1True"]), split).items():
      assert ex["label"].decode() == expected[vid] != ""


def test_failed_runs_leave_nothing(tmp_path, labels_file, real_ids):
  out = tmp_path / "out"
  out.mkdir()
  # A truncated feature file stops the conversion, naming the file; no work dir is left.
  ids = real_ids["train"][:2]
  _write_features(tmp_path / "c3d.hdf5", ids)
  data = (tmp_path / "c3d.hdf5").read_bytes()
  (tmp_path / "cut.hdf5").write_bytes(data[:len(data) // 2])
  with pytest.raises(features_lib.FeatureFileError, match=r"cut\.hdf5"):
    al.convert([str(real_ids["root"] / "train.json")], str(tmp_path / "cut.hdf5"),
               labels_file, str(out), feature_key="c3d_features", video_ids=ids,
               verbose=False)
  assert list(out.iterdir()) == []


def test_multi_label_counted_only_for_converted_videos(tmp_path, labels_file, real_ids):
  t = real_ids["train"]  # t[1] and t[2] carry several labels in the fixture.
  multi: set[str] = set()
  labels = al.label_map(labels_file, multi_labeled=multi)
  assert multi == {t[1], t[2]}
  # Converting only t[0] and t[1]: one multi-label video among them, not the database's two.
  ids = [t[0], t[1]]
  _write_features(tmp_path / "c3d.hdf5", ids)
  annotations = [str(real_ids["root"] / "train.json")]
  _, counter = al.convert(annotations, str(tmp_path / "c3d.hdf5"), labels_file,
                          str(tmp_path / "out"), feature_key="c3d_features", video_ids=ids,
                          verbose=False)
  assert counter.summary()["repaired"][al.MULTI_LABEL] == 1
  assert counter.summary()["examples"][al.MULTI_LABEL] == [t[1]]
  # The hook counts a bare YouTube id too.
  c = builder.SkipCounter()
  rec = al.label_record({"video_id": t[2][2:]}, c, labels=labels,
                        multi_labeled=frozenset(multi))
  assert rec["label"] == labels[t[2]] and c.summary()["repaired"] == {al.MULTI_LABEL: 1}
