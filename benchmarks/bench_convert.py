"""Throughput of the ActivityNet Captions converter and of reading the result back.

Generates ActivityNet-sized synthetic input in a temporary directory, in the real layouts:
- `c3d.hdf5`: `f["v_<id>"]["c3d_features"]` float [T, 500], T uniform in [100, 200];
- `train.json` / `val_1.json` (70 % / 30 % of the videos, like 10,009 / 4,917): `{"v_<id>":
  {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}` with 1 + Poisson(2.6)
  sentences per video (mean ~3.6), most starting with a space as in the real files.

Then runs the `ActivitynetCaptions` builder once per `--runs` entry: `plain` (TFDS without
Beam, one process), `beamN` (Apache Beam's DirectRunner in multi-processing mode with N
worker processes, what `hvt-prepare --num-workers N` runs) and prints videos/s and MB/s
(feature bytes read from the HDF5 per second, and shard bytes written per second), checks that
every run wrote the same examples (a digest of each shard's records re-serialized
deterministically), and reads every split back through `hvt_jax.input.reader.load_split`,
printing examples/s. `--file-format array_record` writes ArrayRecord shards instead and also
times random access (`as_data_source()[i]` at random i). TensorFlow and Beam are imported
before the clock starts; Beam's worker start-up is part of the measured time, as it is for a
user. Inputs and outputs take about 0.6 MB per video under `--tmp-dir` (default: the system
temp dir), times (1 + number of runs).

    python benchmarks/bench_convert.py --num-videos 1000 [--runs plain beam1 beam2]
"""

from __future__ import annotations

import argparse
import functools
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
from data_prep import builder
from hvt_jax.input import reader

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
  """{shard name: sha256 of its records, each re-serialized deterministically}.

  Protobuf writes an Example's feature map in an order that may differ between processes, so
  raw bytes are not comparable across runs; the parsed-and-reserialized records are.
  """
  import tensorflow as tf

  out = {}
  for p in sorted(pathlib.Path(path).glob("*-of-*")):
    if ".tfrecord" in p.name:
      records = (r.numpy() for r in tf.data.TFRecordDataset(os.fspath(p)))
    else:
      from array_record.python import array_record_module
      reader_ = array_record_module.ArrayRecordReader(os.fspath(p))
      records = iter(reader_.read_all())
    digest = hashlib.sha256()
    for record in records:
      digest.update(tf.train.Example.FromString(record).SerializeToString(deterministic=True))
    out[p.name] = digest.hexdigest()
  return out


def _dir_bytes(path: str) -> int:
  return sum(p.stat().st_size for p in pathlib.Path(path).glob("*-of-*"))


def _beam_options(run: str) -> str | None:
  """`beamN` -> Beam DirectRunner options with N processes; `plain` -> None."""
  if run == "plain":
    return None
  if not run.startswith("beam") or not run[4:].isdigit():
    raise SystemExit(f"--runs: expected plain or beamN, got {run!r}")
  return (f"runner=DirectRunner,direct_num_workers={int(run[4:])},"
          "direct_running_mode=multi_processing")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--num-videos", type=int, default=10_000)
  parser.add_argument("--runs", nargs="+", default=["plain", "beam1", "beam2"],
                      help="plain (TFDS without Beam) and/or beamN (DirectRunner, N processes)")
  parser.add_argument("--file-format", default="tfrecord", choices=("tfrecord", "array_record"))
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
  if any(run != "plain" for run in args.runs):
    import apache_beam  # pylint: disable=unused-import

  with tempfile.TemporaryDirectory(prefix="bench_convert-", dir=args.tmp_dir) as tmp:
    root = pathlib.Path(tmp)
    t0 = time.perf_counter()
    files, feature_bytes = generate(root, args.num_videos, args.dim, args.min_rows,
                                    args.max_rows, args.dtype, args.seed)
    print(f"generated {args.num_videos} videos, {feature_bytes / 1e6:.0f} MB of features in "
          f"{time.perf_counter() - t0:.1f} s")
    dataset_dir, first_shards = None, None
    for run in args.runs:
      out = root / f"out_{run}"
      make = functools.partial(activitynet_captions.make_plan, annotation_files=files,
                               features_path=os.fspath(root / "c3d.hdf5"),
                               feature_key="c3d_features", summary=False)
      t0 = time.perf_counter()
      dataset_dir, _ = builder.convert(activitynet_captions.ActivitynetCaptions, make,
                                       os.fspath(out), beam_options=_beam_options(run),
                                       file_format=args.file_format, verbose=False)
      seconds = time.perf_counter() - t0
      written = sum(reader.load_metadata(dataset_dir)["splits"].values())
      shards = _shard_digests(dataset_dir)
      if first_shards is not None and shards != first_shards:
        raise SystemExit(f"run {run} wrote other examples than run {args.runs[0]}")
      first_shards = first_shards or shards
      print(f"convert {run} ({args.file_format}): {written} videos in {seconds:.1f} s = "
            f"{written / seconds:.1f} videos/s, {feature_bytes / 1e6 / seconds:.1f} MB/s "
            f"features read, {_dir_bytes(dataset_dir) / 1e6 / seconds:.1f} MB/s shards written")
    meta = reader.load_metadata(dataset_dir)
    t0 = time.perf_counter()
    count = 0
    for split in meta["splits"]:
      if args.file_format == "array_record":  # TFDS reads ArrayRecord only as a data source.
        source = tfds.builder_from_directory(dataset_dir).as_data_source(split=split)
        examples = (source[i] for i in range(len(source)))
      else:
        examples = reader.load_split(dataset_dir, split).as_numpy_iterator()
      for _ in examples:
        count += 1
    seconds = time.perf_counter() - t0
    print(f"sequential read-back: {count} examples in {seconds:.1f} s = "
          f"{count / seconds:.1f} examples/s, {_dir_bytes(dataset_dir) / 1e6 / seconds:.1f} "
          "MB/s")
    if args.file_format == "array_record":
      source = tfds.builder_from_directory(dataset_dir).as_data_source(split="train")
      picks = np.random.default_rng(0).integers(0, len(source), size=min(500, len(source)))
      t0 = time.perf_counter()
      for i in picks:
        _ = source[int(i)]
      seconds = time.perf_counter() - t0
      print(f"random access (as_data_source()[i]): {len(picks)} examples in {seconds:.2f} s = "
            f"{len(picks) / seconds:.1f} examples/s")


if __name__ == "__main__":
  main()
