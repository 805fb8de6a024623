"""`tfds build` of our package of builders on the real annotation files, and `tfds.load`.

The annotation files are the committed excerpts of the real ones (tests/testdata).

The exact README command (TFDS's own CLI, `--imports data_prep.datasets`, Beam's
FnApiRunner in multi-processing mode) builds ActivityNet Captions from a manual_dir holding
the real train.json / val_1.json and a C3D HDF5 written here for a few of their videos; the
result must equal, record for record and count for count, what `hvt-prepare` writes from the
same files without Beam.
"""

import json
import os
import pathlib
import subprocess
import sys

import h5py
import numpy as np

from data_prep import activitynet_captions as anc
from data_prep import common
from hvt_jax.input import reader
from hvt_jax.cli import prepare
from tests import data_fixtures

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tfds_build_on_beam_equals_hvt_prepare(annotations, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  ann = {}
  for split in ("train", "val_1"):
    (manual / f"{split}.json").symlink_to(annotations / "activitynet_captions" / f"{split}.json")
    ann[split] = json.loads((manual / f"{split}.json").read_text())
  with_features = {"train": list(ann["train"])[:5] + ["v_N7ppHQNikv8"],
                   "val_1": list(ann["val_1"])[:3]}
  rng = np.random.default_rng(0)
  with h5py.File(manual / "sub_activitynet_v1-3.c3d.hdf5", "w") as f:
    for vid in with_features["train"] + with_features["val_1"]:
      rows = rng.normal(size=(4 + len(vid) % 5, 500)).astype(np.float32)
      f.create_group(vid).create_dataset("c3d_features", data=rows)

  data = tmp_path / "tfds_data"
  command = [os.fspath(pathlib.Path(sys.executable).parent / "tfds"), "build",
             "activitynet_captions", "--imports", "data_prep.datasets", "--config", "c3d_word",
             f"--manual_dir={manual}", f"--data_dir={data}",
             "--beam_pipeline_options=runner=FnApiRunner,direct_num_workers=2,"
             "direct_running_mode=multi_processing"]
  env = dict(os.environ, PYTHONPATH=os.fspath(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  built = data / "activitynet_captions" / "c3d_word" / "1.0.0"

  # tfds.load through the registered builder (its config declares the features).
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_prep import datasets  # pylint: disable=g-import-not-at-top,unused-import
  for split, ids in with_features.items():
    loaded = [ex["video_id"].decode() for ex in tfds.as_numpy(
        tfds.load("activitynet_captions/c3d_word", data_dir=os.fspath(data), split=split))]
    assert loaded == [v for v in ann[split] if v in ids]  # Annotation-file order.

  # hvt-prepare (plain TFDS, no Beam) from the same files: the same dataset.
  prepared = prepare.prepare(
      ["activitynet_captions", "--annotations", os.fspath(manual / "train.json"),
       os.fspath(manual / "val_1.json"), "--features",
       os.fspath(manual / "sub_activitynet_v1-3.c3d.hdf5"), "--feature-key", "c3d_features",
       "--output", os.fspath(tmp_path / "prepared")])
  assert pathlib.Path(prepared).relative_to(tmp_path / "prepared").parts == (
      "activitynet_captions", "c3d_word", "1.0.0")
  assert data_fixtures.shard_examples(prepared) == data_fixtures.shard_examples(os.fspath(built))
  meta_built, meta_prepared = reader.load_metadata(built), reader.load_metadata(prepared)
  for meta in (meta_built, meta_prepared):
    meta.pop("vocab_file")
  assert meta_built == meta_prepared
  assert reader.load_vocab(built) == reader.load_vocab(prepared)
  # Every annotated video without features is counted, with the first ids in file order.
  counts = meta_built["counts"]
  annotated = [v for s in ("train", "val_1") for v in ann[s]]
  assert counts["skipped"][common.FEATURES_MISSING] == len(annotated) - 9
  missing = [v for s in ("train", "val_1") for v in ann[s] if v not in with_features[s]]
  assert counts["examples"][common.FEATURES_MISSING] == missing[:20]
  assert counts["repaired"][common.SEGMENT_ZERO_LENGTH] == 2
  assert meta_built["splits"] == {"train": 6, "val_1": 3}
  assert anc.ActivitynetCaptions.MANUAL_DOWNLOAD_INSTRUCTIONS.count(".json") >= 2
