"""The conversion's writing: direct serializer, shards from the plan, low-level h5py.

The builders write each example's `tf.train.Example` bytes themselves and cut shards from the
plan (`builder.serialize_record`, `builder.shard_runs`). TFDS's generic serializer
(`ExampleSerializer`) stays the reference: every record must equal, byte for byte, its
output after TFDS's deterministic re-serialization (protobuf writes a map in an order that
may vary between processes), on records built for the purpose and on the committed
annotation excerpts.
"""

import functools
import json
import os
import pathlib

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

from data_prep import activitynet_captions as anc
from data_prep import builder
from data_prep import features as features_lib
from hvt_jax.input import reader
from tests import test_builder


def deterministic(record: bytes) -> bytes:
  return tf.train.Example.FromString(record).SerializeToString(deterministic=True)


def split_records(dataset_dir: str) -> dict[str, list[bytes]]:
  """{split: its raw records, shard after shard, as dataset_info.json lists the shards}."""
  info = tfds.builder_from_directory(dataset_dir).info
  return {name: [r.numpy() for p in split.filepaths
                 for r in tf.data.TFRecordDataset(os.fspath(p))]
          for name, split in info.splits.items()}


def test_serialized_records_equal_tfds_serializer():
  vocab = [f"w{i}" for i in range(300)]  # Ids >= 128: multi-byte varints.
  spec = builder.DatasetSpec(**{**test_builder.SPEC.__dict__, "vocab": vocab,
                                "corpus_splits": ("train",)})
  recs = test_builder.records("train", 6)
  recs[1]["tokens"][0] = [299, 0, 128, 127]
  recs[2]["sentences"][0] = "Café – naïve 日本"
  recs.append(dict(test_builder.make_record(7, "train"), label="", sentences=[], tokens=[],
                   segments=np.zeros((0, 2))))  # A corpus record: S = 0, no instances.
  features = builder.make_features(spec.modalities)
  generic = example_serializer.ExampleSerializer(features.get_serialized_info())
  for rec in recs:
    rec = builder.validate_record(rec, spec, "train")
    expected = deterministic(generic.serialize_example(features.encode_example(rec)))
    assert builder.serialize_record(rec) == expected, rec["video_id"]


def test_converter_output_equals_generic_tfds_serializer(annotations, tmp_path):
  """ActivityNet Captions on the committed excerpts: every written record equals, byte for
  byte, TFDS's generic serializer applied to the plan's records, in item order."""
  files = [os.fspath(annotations / "activitynet_captions" / f"{s}.json")
           for s in ("train", "val_1")]
  ann = {s: json.loads(pathlib.Path(f).read_text()) for s, f in zip(("train", "val_1"), files)}
  rng = np.random.default_rng(0)
  with h5py.File(tmp_path / "c3d.hdf5", "w") as f:
    # Every 3rd video has no features (a counted skip), one has a NaN (another).
    for i, vid in enumerate(list(ann["train"])[:24] + list(ann["val_1"])[:9]):
      if i % 3 != 1:
        rows = rng.normal(size=(3 + i % 4, 500)).astype(np.float32)
        rows[0, 0] = np.nan if i == 5 else rows[0, 0]
        f.create_group(vid).create_dataset("c3d_features", data=rows)
  make = functools.partial(anc.make_plan, annotation_files=files,
                           features_path=os.fspath(tmp_path / "c3d.hdf5"),
                           feature_key="c3d_features", summary=False)
  path, counter = builder.convert(anc.ActivitynetCaptions, make, os.fspath(tmp_path / "out"),
                                  num_shards=3, verbose=False)
  written = split_records(path)
  plan = make(builder.SkipCounter())
  features = builder.make_features(plan.spec.modalities)
  generic = example_serializer.ExampleSerializer(features.get_serialized_info())
  with plan.resources:
    for split, items in plan.items.items():
      records = [plan.build(item, builder.SkipCounter()) for item in items]
      expected = [deterministic(generic.serialize_example(features.encode_example(
          builder.validate_record(rec, plan.spec, split)))) for rec in records if rec]
      assert written[split] == expected, split
  assert reader.load_metadata(path)["splits"] == {"train": 15, "val_1": 6}
  assert {k: v for k, v in counter.summary()["skipped"].items() if "features" in k} == {
      "features missing": len(ann["train"]) + len(ann["val_1"]) - 22,
      "features contain NaN/Inf": 1}


def skip_second_quarter(item, counter):
  """Items 12..23 of 48 are skipped (a run of the plan without records), odd ones too."""
  i, split = item
  if 12 <= i < 24 or i % 2:
    counter.skip("skipped", f"{split}_{i}")
    return None
  return test_builder.make_record(i, split)


def test_shards_from_the_plan_read_by_tfds(tmp_path):
  plan = builder.Plan(spec=test_builder.SPEC, items={"train": [(i, "train") for i in range(48)]},
                      build=skip_second_quarter)
  path = builder.prepare(builder.records_builder("toy"), os.fspath(tmp_path), plan=plan,
                         num_shards=4)
  kept = [f"train_{i}" for i in range(0, 48, 2) if not 12 <= i < 24]
  info = tfds.builder_from_directory(path).info
  split = info.splits["train"]
  # Runs of 12 items: the second has no records and adds no shard.
  assert split.shard_lengths == [6, 6, 6] and split.num_examples == 18
  assert [p.name for p in split.filepaths] == [
      f"toy-train.tfrecord-0000{i}-of-00003" for i in range(3)]
  records = [[r.numpy() for r in tf.data.TFRecordDataset(os.fspath(p))]
             for p in split.filepaths]
  assert [len(r) for r in records] == split.shard_lengths
  assert split.num_bytes == sum(len(r) for shard in records for r in shard)
  assert reader.shard_problems(path) == []
  sub = info.splits["train[4:14]"]
  assert [(pathlib.Path(fi.filename).name[-14:], fi.skip, fi.take)
          for fi in sub.file_instructions] == [
              ("00000-of-00003", 4, 2), ("00001-of-00003", 0, 6), ("00002-of-00003", 0, 2)]
  loaded = tfds.load("toy", data_dir=os.fspath(tmp_path), split="train[4:14]")
  assert [ex["video_id"].numpy().decode() for ex in loaded] == kept[4:14]
  read = [test_builder.as_numpy(ex) for ex in reader.load_split(path, "train")]
  assert [ex["video_id"] for ex in read] == kept
  for ex in read:
    test_builder.assert_matches(ex, test_builder.make_record(int(ex["video_id"][6:]), "train"))


def test_shard_runs():
  # num_shards: runs of the plan's items, as TFDS cuts records.
  assert builder.shard_runs(10, 4, [5]) == [2, 5, 8, 10]
  assert builder.shard_runs(3, 8, [5]) == [1, 2, 3]  # At most one per item.
  # None: TFDS's count for the size the sampled records imply (64 MiB..1 GiB a shard).
  mib = 1 << 20
  assert builder.shard_runs(1000, None, [mib, None]) == [250, 500, 750, 1000]  # 500 MiB.
  assert builder.shard_runs(1000, None, [1000] * 16) == [1000]  # 1 MB: one shard.
  assert len(builder.shard_runs(4000, None, [mib, mib, None, None])) == 16  # 2000 MiB.


def test_hdf5_lookups(tmp_path):
  with h5py.File(tmp_path / "f.h5", "w") as f:
    f.create_group("v1").create_dataset("a/b", data=np.ones((2, 3), ">f8"))
    f.create_group("v2").create_dataset("a/b", data=np.zeros((0, 3), np.float16))
    f.create_group("v3").create_group("a")
    f.create_group("v4").create_dataset("a", data=np.ones((2, 3)))
    f.create_group("v5").create_group("a").create_dataset("c", data=np.ones((1, 3)))
    f["s"] = np.array([b"x", b"y"])
  src = features_lib.open_feature_source(os.fspath(tmp_path / "f.h5"), "a/b")
  got = src.get("v1")
  assert got.dtype == np.float32 and got.tolist() == [[1, 1, 1]] * 2
  assert src.get("v2").shape == (0, 3) and src.get("v2").dtype == np.float32
  assert src.get("v3") is None and src.get("v4") is None and src.get("nope") is None
  with pytest.raises(features_lib.FeatureFileError, match=r"f.h5\['s'\].*dtype"):
    src.get("s")
  src = features_lib.open_feature_source(os.fspath(tmp_path / "f.h5"), "a")
  with pytest.raises(features_lib.FeatureFileError, match=r"\['v1'\]\['a'\] is not an array"):
    src.get("v1")
  unkeyed = features_lib.open_feature_source(os.fspath(tmp_path / "f.h5"))
  assert unkeyed.get("v4").shape == (2, 3)
  with pytest.raises(features_lib.FeatureFileError, match=r"\['v5'\]\['a'\] is not an array"):
    unkeyed.get("v5")
