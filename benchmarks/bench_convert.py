"""Throughput of the ActivityNet Captions converter and of reading the result back.

Generates ActivityNet-sized synthetic input in a temporary directory, in the real layouts:
- `c3d.hdf5`: `f["v_<id>"]["c3d_features"]` float [T, 500], T uniform in [100, 200];
- `train.json` / `val_1.json` (70 % / 30 % of the videos, like 10,009 / 4,917): `{"v_<id>":
  {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}` with 1 + Poisson(2.6)
  sentences per video (mean ~3.6), most starting with a space as in the real files.

For each `--num-videos` size (default 1,000 and 10,000, so one run shows whether throughput
holds as the corpus grows) it first times the I/O floor (copying the feature file: the bytes
any conversion reads and about those it writes), then runs the `ActivitynetCaptions` builder
once per `--runs` entry: `plain` (TFDS without Beam, one process), `beamN` (Apache Beam's
FnApiRunner in multi-processing mode with N worker processes, what `hvt-prepare
--num-workers N` runs) and prints videos/s and MB/s (feature bytes read from the HDF5 per
second, and shard bytes written per second), checks that every run wrote the same examples
(a digest of each split's records, in order, re-serialized deterministically), and reads
every split back through `hvt_jax.input.reader.load_split`, printing examples/s. A table of
every size and run ends the output. `--file-format array_record` writes ArrayRecord shards
instead and also times random access (`as_data_source()[i]` at random i). TensorFlow and
Beam are imported before the clock starts; Beam's worker start-up is part of the measured
time, as it is for a user. Before the first size, one small conversion (`--warm-up-videos`,
plain) pays the one-time costs of a process's first conversion (TFDS reading its checksum
files, the first TFRecord writer, lazy imports, the first large allocations; printed) so
that they are not charged to the first size's rate; the last lines give each run's marginal
rate between the smallest and the largest size (the extra videos over the extra seconds),
which fixed costs do not change. Inputs and outputs take about 0.3 MB per video under `--tmp-dir`
(default: the system temp dir), times (1 + number of runs); one size at a time.

    python benchmarks/bench_convert.py [--num-videos 1000 10000] [--runs plain beam1 beam2]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import pathlib
import shutil
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


def _split_digests(path: str) -> dict[str, str]:
  """{split: sha256 of its records in order (shard by shard), each re-serialized
  deterministically}.

  Protobuf writes an Example's feature map in an order that may differ between processes, so
  raw bytes are not comparable across runs; the parsed-and-reserialized records are. Splits,
  not shards: the plain path and Beam may cut a split into shards differently.
  """
  import tensorflow as tf

  digests = {}
  for p in sorted(pathlib.Path(path).glob("*-of-*")):
    split = p.name.split("-", 1)[1].split(".", 1)[0]
    if ".tfrecord" in p.name:
      records = (r.numpy() for r in tf.data.TFRecordDataset(os.fspath(p)))
    else:
      from array_record.python import array_record_module
      reader_ = array_record_module.ArrayRecordReader(os.fspath(p))
      records = iter(reader_.read_all())
    digest = digests.setdefault(split, hashlib.sha256())
    for record in records:
      digest.update(tf.train.Example.FromString(record).SerializeToString(deterministic=True))
  return {split: d.hexdigest() for split, d in digests.items()}


def _copy_seconds(src: pathlib.Path, dst: pathlib.Path) -> float:
  """Seconds to copy a file in 16 MiB reads and writes (the I/O floor of a conversion)."""
  t0 = time.perf_counter()
  with open(src, "rb") as fin, open(dst, "wb") as fout:
    while chunk := fin.read(16 << 20):
      fout.write(chunk)
  seconds = time.perf_counter() - t0
  dst.unlink()
  return seconds


def _dir_bytes(path: str) -> int:
  return sum(p.stat().st_size for p in pathlib.Path(path).glob("*-of-*"))


def _beam_options(run: str) -> str | None:
  """`beamN` -> Beam FnApiRunner options with N processes; `plain` -> None."""
  if run == "plain":
    return None
  if not run.startswith("beam") or not run[4:].isdigit():
    raise SystemExit(f"--runs: expected plain or beamN, got {run!r}")
  return (f"runner=FnApiRunner,direct_num_workers={int(run[4:])},"
          "direct_running_mode=multi_processing")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--num-videos", type=int, nargs="+", default=[1_000, 10_000])
  parser.add_argument("--runs", nargs="+", default=["plain", "beam1", "beam2"],
                      help="plain (TFDS without Beam) and/or beamN (FnApiRunner, N processes)")
  parser.add_argument("--file-format", default="tfrecord", choices=("tfrecord", "array_record"))
  parser.add_argument("--dim", type=int, default=500)
  parser.add_argument("--min-rows", type=int, default=100)
  parser.add_argument("--max-rows", type=int, default=200)
  parser.add_argument("--dtype", default="float32", help="HDF5 feature dtype")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tmp-dir", default=None, help="where the temporary inputs go")
  parser.add_argument("--warm-up-videos", type=int, default=200,
                      help="videos of the untimed first conversion (0 = none)")
  args = parser.parse_args(argv)

  import tensorflow as tf  # Imported up front so no timing includes it.
  import tensorflow_datasets as tfds  # pylint: disable=unused-import
  tf.config.set_visible_devices([], "GPU")
  if any(run != "plain" for run in args.runs):
    import apache_beam  # pylint: disable=unused-import

  if args.warm_up_videos:
    _warm_up(args)
  table = []
  for num_videos in args.num_videos:
    for run, rate in _bench_size(args, num_videos):
      table.append((num_videos, run, rate))
  print("\nvideos  run  videos/s")
  for num_videos, run, rate in table:
    print(f"{num_videos:>6}  {run}  {rate:.1f}")
  for run in ["copy floor", *args.runs]:
    rates = [(n, r) for n, k, r in table if k == run]
    if len(rates) > 1:
      (n0, r0), (n1, r1) = rates[0], rates[-1]
      print(f"{run}: {n1} videos at {r1 / r0:.2f}x the rate of {n0} videos; marginal rate "
            f"{(n1 - n0) / (n1 / r1 - n0 / r0):.1f} videos/s")


def _convert(run: str, files: list[str], root: pathlib.Path, out: pathlib.Path,
             file_format: str) -> str:
  """One conversion of the synthetic input under `root` into `out`; its dataset dir."""
  make = functools.partial(activitynet_captions.make_plan, annotation_files=files,
                           features_path=os.fspath(root / "c3d.hdf5"),
                           feature_key="c3d_features", summary=False)
  dataset_dir, _ = builder.convert(activitynet_captions.ActivitynetCaptions, make,
                                   os.fspath(out), beam_options=_beam_options(run),
                                   file_format=file_format, verbose=False)
  return dataset_dir


def _warm_up(args: argparse.Namespace) -> None:
  """The untimed first conversion of the process (plain, `--warm-up-videos` videos)."""
  with tempfile.TemporaryDirectory(prefix="bench_convert-", dir=args.tmp_dir) as tmp:
    root = pathlib.Path(tmp)
    files, _ = generate(root, args.warm_up_videos, args.dim, args.min_rows, args.max_rows,
                        args.dtype, args.seed)
    t0 = time.perf_counter()
    _convert("plain", files, root, root / "out", args.file_format)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    _convert("plain", files, root, root / "again", args.file_format)
    print(f"warm-up: the process's first conversion of {args.warm_up_videos} videos took "
          f"{first:.2f} s, the second {time.perf_counter() - t0:.2f} s (one-time costs, "
          "not in the rates below)")


def _bench_size(args: argparse.Namespace, num_videos: int) -> list[tuple[str, float]]:
  """Generates `num_videos` videos, times the I/O floor and each run; (run, videos/s)."""
  import tensorflow_datasets as tfds

  rates = []
  with tempfile.TemporaryDirectory(prefix="bench_convert-", dir=args.tmp_dir) as tmp:
    root = pathlib.Path(tmp)
    t0 = time.perf_counter()
    files, feature_bytes = generate(root, num_videos, args.dim, args.min_rows,
                                    args.max_rows, args.dtype, args.seed)
    print(f"generated {num_videos} videos, {feature_bytes / 1e6:.0f} MB of features in "
          f"{time.perf_counter() - t0:.1f} s")
    seconds = _copy_seconds(root / "c3d.hdf5", root / "copy.hdf5")
    rates.append(("copy floor", num_videos / seconds))
    print(f"I/O floor (copying c3d.hdf5): {seconds:.1f} s = {num_videos / seconds:.1f} "
          f"videos/s, {feature_bytes / 1e6 / seconds:.1f} MB/s")
    dataset_dir, first = None, None
    for run in args.runs:
      out = root / f"out_{run}"
      t0 = time.perf_counter()
      dataset_dir = _convert(run, files, root, out, args.file_format)
      seconds = time.perf_counter() - t0
      written = sum(reader.load_metadata(dataset_dir)["splits"].values())
      digests = _split_digests(dataset_dir)
      if first is not None and digests != first:
        raise SystemExit(f"run {run} wrote other examples than run {args.runs[0]}")
      first = first or digests
      rates.append((run, written / seconds))
      print(f"convert {run} ({args.file_format}): {written} videos in {seconds:.1f} s = "
            f"{written / seconds:.1f} videos/s, {feature_bytes / 1e6 / seconds:.1f} MB/s "
            f"features read, {_dir_bytes(dataset_dir) / 1e6 / seconds:.1f} MB/s shards written")
      if run != args.runs[-1]:
        shutil.rmtree(out)  # Keeps the disk footprint at one output.
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
  return rates


if __name__ == "__main__":
  main()
