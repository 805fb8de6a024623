"""Throughput of the ActivityNet Captions converter and of reading the result back.

Generates ActivityNet-sized synthetic input in a temporary directory, in the real layouts:
- `c3d.hdf5`: `f["v_<id>"]["c3d_features"]` float [T, 500], T uniform in [100, 200];
- `train.json` / `val_1.json` (70 % / 30 % of the videos, like 10,009 / 4,917): `{"v_<id>":
  {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}` with 1 + Poisson(2.6)
  sentences per video (mean ~3.6), most starting with a space as in the real files.

Then runs `data_prep.activitynet_captions.convert` once per `--num-workers` value and prints
videos/s and MB/s (feature bytes read from the HDF5 per second, and shard bytes written per
second), checks that every worker count wrote byte-identical shards, and reads every split
back through `data_prep.writer.load_split`, printing examples/s. TensorFlow is imported (by
the parent) before the clock starts; worker start-up (spawned processes, which import numpy,
h5py and the converter but not TensorFlow) is part of the measured time, as it is for a
user. Inputs and outputs take about 0.6 MB per video under `--tmp-dir` (default: the system
temp dir), times (1 + number of worker counts).

    python benchmarks/bench_convert.py --num-videos 1000 [--num-workers 1 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import string
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.fspath(pathlib.Path(__file__).resolve().parents[1]))

# pylint: disable=g-import-not-at-top,wrong-import-position
from data_prep import activitynet_captions
from data_prep import writer

_WORDS = ("a man woman person is are the then and in on with while of to camera shows "
          "playing dancing running ball field water room people group continues talking "
          "holding stands sits jumps around front back again").split()


def generate(root: pathlib.Path, num_videos: int, dim: int, min_rows: int, max_rows: int,
             dtype: str, seed: int) -> tuple[list[str], int]:
  """Writes the synthetic HDF5 + annotation jsons; returns (annotation files, feature bytes)."""
  import h5py

  rng = np.random.default_rng(seed)
  alphabet = np.array(list(string.ascii_letters + string.digits + "-_"))
  ids = sorted({"v_" + "".join(rng.choice(alphabet, 11)) for _ in range(num_videos)})
  while len(ids) < num_videos:  # Collisions are vanishingly rare; top up if any.
    ids = sorted(set(ids) | {"v_" + "".join(rng.choice(alphabet, 11))})
  rng.shuffle(ids)
  n_train = int(round(0.7 * num_videos))
  splits = {"train": ids[:n_train], "val_1": ids[n_train:]}
  feature_bytes = 0
  with h5py.File(root / "c3d.hdf5", "w") as f:
    for vid in ids:
      rows = int(rng.integers(min_rows, max_rows + 1))
      arr = rng.standard_normal((rows, dim), dtype=np.float32).astype(dtype)
      f.create_group(vid).create_dataset("c3d_features", data=arr)
      feature_bytes += arr.nbytes
  files = []
  for split, vids in splits.items():
    data = {}
    for vid in vids:
      duration = float(np.round(rng.uniform(20, 240), 2))
      n = 1 + int(rng.poisson(2.6))
      starts = np.sort(rng.uniform(0, duration * 0.8, n))
      ends = np.minimum(starts + rng.uniform(5, duration * 0.5, n), duration)
      sentences = [(" " if rng.random() < 0.7 else "")
                   + " ".join(rng.choice(_WORDS, int(rng.integers(6, 20)))).capitalize() + "."
                   for _ in range(n)]
      data[vid] = {"duration": duration,
                   "timestamps": np.round(np.stack([starts, ends], 1), 2).tolist(),
                   "sentences": sentences}
    path = root / f"{split}.json"
    path.write_text(json.dumps(data))
    files.append(os.fspath(path))
  return files, feature_bytes


def _shard_digests(path: str) -> dict[str, str]:
  """{shard name: sha256} (streamed: the shards of 10,000 videos take 3 GB)."""
  out = {}
  for p in sorted(pathlib.Path(path).glob("*.tfrecord*")):
    digest = hashlib.sha256()
    with open(p, "rb") as f:
      while block := f.read(1 << 24):
        digest.update(block)
    out[p.name] = digest.hexdigest()
  return out


def _dir_bytes(path: str) -> int:
  return sum(p.stat().st_size for p in pathlib.Path(path).glob("*.tfrecord*"))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--num-videos", type=int, default=10_000)
  parser.add_argument("--num-workers", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--dim", type=int, default=500)
  parser.add_argument("--min-rows", type=int, default=100)
  parser.add_argument("--max-rows", type=int, default=200)
  parser.add_argument("--dtype", default="float32", help="HDF5 feature dtype")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tmp-dir", default=None, help="where the temporary inputs go")
  args = parser.parse_args(argv)

  import tensorflow as tf  # Imported up front so no timing includes it.
  import tensorflow_datasets as tfds  # pylint: disable=unused-import
  tf.config.set_visible_devices([], "GPU")

  with tempfile.TemporaryDirectory(prefix="bench_convert-", dir=args.tmp_dir) as tmp:
    root = pathlib.Path(tmp)
    t0 = time.perf_counter()
    files, feature_bytes = generate(root, args.num_videos, args.dim, args.min_rows,
                                    args.max_rows, args.dtype, args.seed)
    print(f"generated {args.num_videos} videos, {feature_bytes / 1e6:.0f} MB of features in "
          f"{time.perf_counter() - t0:.1f} s")
    dataset_dir, first_shards = None, None
    for workers in args.num_workers:
      out = root / f"out_w{workers}"
      t0 = time.perf_counter()
      dataset_dir, _ = activitynet_captions.convert(
          files, os.fspath(root / "c3d.hdf5"), os.fspath(out), feature_key="c3d_features",
          num_workers=workers, verbose=False)
      seconds = time.perf_counter() - t0
      written = sum(writer.load_metadata(dataset_dir)["splits"].values())
      shards = _shard_digests(dataset_dir)
      if first_shards is not None and shards != first_shards:
        raise SystemExit(f"--num-workers {workers} wrote different shards")
      first_shards = first_shards or shards
      print(f"convert --num-workers {workers}: {written} videos in {seconds:.1f} s = "
            f"{written / seconds:.1f} videos/s, {feature_bytes / 1e6 / seconds:.1f} MB/s "
            f"features read, {_dir_bytes(dataset_dir) / 1e6 / seconds:.1f} MB/s shards written")
    meta = writer.load_metadata(dataset_dir)
    t0 = time.perf_counter()
    count = 0
    for split in meta["splits"]:
      for _ in writer.load_split(dataset_dir, split).as_numpy_iterator():
        count += 1
    seconds = time.perf_counter() - t0
    print(f"load_split read-back: {count} examples in {seconds:.1f} s = "
          f"{count / seconds:.1f} examples/s, {_dir_bytes(dataset_dir) / 1e6 / seconds:.1f} "
          "MB/s")


if __name__ == "__main__":
  main()
