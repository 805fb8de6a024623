"""configs/hse/didemo.py on a DiDeMo that ``hvt-prepare didemo`` converts from the real
per-video files (the committed excerpts, tests/testdata/didemo) and features written here,
one ``<video>.npy`` per video whose rows carry their own row number: HSE trains and
evaluates on the paper's test split end to end, FSE's variant builds, and the clips are the
rows the authors' ``didemo_dev/data.py`` cuts."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from configs.hse import didemo as didemo_config
from hvt_jax import train
from hvt_jax.cli import prepare
from hvt_jax.input import pipeline
from hvt_jax.input import reader

DIM = 4
VIDEOS = 8        # the first 8 videos of each split file


def _rows(video_id: str, n: int) -> np.ndarray:
  """[n, DIM] float32: column 0 is the row number, the rest tell videos apart."""
  seed = sum(map(ord, video_id))
  out = np.empty((n, DIM), np.float32)
  out[:, 0] = np.arange(n)
  out[:, 1:] = np.sin(seed + np.arange(n * (DIM - 1))).reshape(n, DIM - 1)
  return out


@pytest.fixture(scope="module")
def didemo(annotations, tmp_path_factory):
  """(data dir written by hvt-prepare didemo, {split: {video: its annotation}})."""
  root = tmp_path_factory.mktemp("didemo_release")
  files, kept = [], {}
  for split in ("train", "val", "test"):
    path = annotations / "didemo" / f"{split}_data_bwzhang.json"
    kept[split] = dict(list(json.loads(path.read_text()).items())[:VIDEOS])
    files.append(str(path))
  features = root / "didemo_inception"
  features.mkdir()
  for videos in kept.values():
    for vid, ann in videos.items():
      np.save(features / f"{vid}.npy", _rows(vid, ann["feature_leng"]))
  out = root / "data" / "didemo"
  prepare.prepare(["didemo", "--annotations", *files, "--features", str(features),
                   "--max-videos", str(VIDEOS), "--output", str(out), "--num-shards", "1"])
  return str(out), kept


def test_didemo_config_trains_and_evaluates_on_the_test_split(didemo, tmp_path):
  """`hvt-prepare didemo` then the DiDeMo config (runlocal): the splits it names exist, so
  training ends with the test split's retrieval metrics (the ActivityNet configs' val_1
  is not a DiDeMo split)."""
  data_dir, kept = didemo
  meta = reader.load_metadata(reader.find_dataset_dir(data_dir))
  assert meta["splits"] == {"train": VIDEOS, "val": VIDEOS, "test": VIDEOS}
  c = didemo_config.get_config("runlocal")
  c.input.data_dir = data_dir
  results = train.train_and_evaluate(c, str(tmp_path))
  metrics = json.loads((tmp_path / "eval" / "test" / "metrics.json").read_text())
  assert metrics["step"] == c.num_train_steps == 4
  assert metrics["num_examples"] == len(kept["test"])
  for key in ("p2v/R@1", "p2v/R@5", "p2v/R@50", "p2v/MdR", "v2p/R@1", "v2p/MdR"):
    assert 0 <= metrics[key] == results[f"test/{key}"], key
  ranked = [json.loads(line)["query"] for line in
            (tmp_path / "eval" / "test" / "p2v_predictions.jsonl").read_text().splitlines()]
  assert sorted(ranked) == sorted(kept["test"])


def test_didemo_fse_variant_builds(didemo):
  """`:model=fse` builds FSE on the converted DiDeMo and evaluates the test split
  (tests/test_configs.py traces its loss and batches on a tiny dataset)."""
  data_dir, _ = didemo
  c = didemo_config.get_config("runlocal,model=fse")
  c.input.data_dir = data_dir
  s = train.setup(c)
  assert type(nnx.merge(s.graphdef, train.abstract_state(s)["params"])).__name__ == "FSE"
  assert [e.split for e in train.build_evaluators(s)] == ["test"]


def test_didemo_clips_are_the_authors_rows(didemo):
  """The paper config's clips and whole-video context are the feature rows that the
  authors' loader takes (CMHSE@a861130 didemo_dev/data.py:54-83): sentence i's clip is rows
  ``times[i][0] .. times[i][1]`` (the end clipped to the last row), more than 80 rows
  subsampled by ``np.arange(0, n, n / 80).astype(int)``, and the video every row likewise."""
  data_dir, kept = didemo
  c = didemo_config.get_config()
  c.input.data_dir = data_dir
  c.eval_batch_size = 8
  s = train.setup(c)
  ds, _, _ = pipeline.eval_dataset(c, "test")
  seen = 0
  for batch, host in pipeline.iterate(ds, s.mesh, pipeline.get_view("hse")):
    batch = jax.device_get(batch)
    for j, vid in enumerate(host["video_id"]):
      if not host["example_mask"][j]:
        continue
      ann = kept["test"][vid.decode()]
      num_rows = ann["feature_leng"]

      def authors(start, end):
        rows = np.arange(num_rows)[start:end + 1]
        if len(rows) > 80:
          rows = rows[np.arange(0, len(rows), len(rows) / 80.0).astype(int)]
        return rows.tolist()

      assert batch["clip_mask"][j].sum() == len(ann["times"])
      for i, (start, end) in enumerate(ann["times"]):
        mask = batch["clip_frame_mask"][j, i]
        got = batch["clip_frames"][j, i, mask, 0].astype(int).tolist()
        assert got == authors(start, end), (vid, i, start, end)
      got = batch["video_frames"][j, batch["video_frame_mask"][j], 0].astype(int).tolist()
      assert got == authors(0, num_rows - 1)
      seen += 1
  assert seen == len(kept["test"])
