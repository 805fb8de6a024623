"""Reads hvt_jax datasets: the metadata, vocabulary and splits that `data_prep` builders write.

A dataset dir is a TFDS dataset dir (`<data_dir>/<name>[/<config>]/<version>`: shards,
`dataset_info.json`, `features.json`) plus the hvt_jax files `metadata.json` (the dataset
metadata: dims, tokenizer, counts of every repair and skip) and `vocab.txt`.
`load_split` reads it with `tfds.builder_from_directory`, so no builder class needs to be
imported; `find_dataset_dir` resolves it from the data dir given to hvt-prepare.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

METADATA_FILE = "metadata.json"
VOCAB_FILE = "vocab.txt"


def load_metadata(dataset_dir: str) -> dict:
  """Returns the dataset metadata (no TensorFlow needed).

  Args:
    dataset_dir: a dataset directory (see `find_dataset_dir`).

  Returns:
    {"name", "version", "description", "modalities": {m: D}, "tokenizer", "vocab_size",
     "vocab_file" (absolute path of vocab.txt), "splits": {split: records},
     "sentences": {split: sentences (queries, captions)}, "missing": {split: {m: n videos
     with 0 rows}}, "counts": SkipCounter.summary(), "extra": {...}, "empty_splits": [splits
     left out for having no records], "corpus_splits": [written splits whose records may
     have no sentences]} (datasets written before "sentences", "empty_splits" and
     "corpus_splits" existed lack them).
  """
  path = pathlib.Path(dataset_dir) / METADATA_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {dataset_dir!r} is not an hvt_jax dataset "
                            "directory (use find_dataset_dir on the --output dir)")
  meta = json.loads(path.read_text(encoding="utf-8"))
  meta["vocab_file"] = os.fspath(pathlib.Path(dataset_dir).resolve() / meta["vocab_file"])
  return meta


def load_vocab(dataset_dir: str) -> list[str]:
  """The vocabulary stored with the dataset (id -> token)."""
  text = (pathlib.Path(dataset_dir) / VOCAB_FILE).read_text(encoding="utf-8")
  return text.split("\n")[:-1]


def load_split(dataset_dir: str, split: str, *, shuffle_files: bool = False,
               read_config: Any = None):
  """Reads one split as a `tf.data.Dataset` of decoded examples with flat keys.

  Args:
    dataset_dir: a dataset directory (see `find_dataset_dir`).
    split: a split name, or any TFDS split expression ("train[:10%]", "val_1+val_2", the
      output of `tfds.split_for_jax_process("train")`).
    shuffle_files: shuffle the shard order (training).
    read_config: optional `tfds.ReadConfig` (seeds, interleave, ...).

  Returns:
    A `tf.data.Dataset` of {"video_id": tf.string, "duration": tf.float64, "split": tf.string,
    "label": tf.string, "features/<m>": float32 [T, D], "timestamps/<m>": float32 [T, 2],
    "segments": float64 [S, 2], "sentences": tf.string [S],
    "tokens": int32 tf.RaggedTensor [S, None], "instances/segments": float64 [I, 2] seconds,
    "instances/labels": tf.string [I]} (the two instance keys are absent from datasets
    written before they were part of the schema).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  builder = tfds.builder_from_directory(os.fspath(dataset_dir))
  names = set(builder.info.splits.keys())
  for part in str(split).split("+"):
    base = part.split("[")[0].strip()
    if base not in names:
      raise ValueError(f"split {base!r} not in dataset {dataset_dir}: available "
                       f"{sorted(names)}")
  ds = builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)
  return ds.map(lambda example: traverse_util.flatten_dict(example, sep="/"))


# TFRecord framing per record: uint64 length, uint32 CRC of the length, data, uint32 CRC.
_FRAMING_BYTES = 16
_REBUILD = "re-run hvt-prepare (or tfds build) to rebuild the dataset"


def _scan_tfrecord(path: str) -> tuple[int, str]:
  """(complete records, "" or what is wrong) from the record headers alone (one seek per
  record; the data and its checksums are not read)."""
  import struct  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = tf.io.gfile.stat(path).length
  records, pos = 0, 0
  with tf.io.gfile.GFile(path, "rb") as f:
    while pos < size:
      header = f.read(12)
      if len(header) < 12:
        return records, f"ends inside a record header at byte {pos} of {size}"
      (length,) = struct.unpack("<Q", header[:8])
      end = pos + 12 + length + 4
      if end > size:
        return records, (f"record {records} needs bytes {pos}-{end} but the file has {size} "
                         "(truncated)")
      f.seek(end)
      pos, records = end, records + 1
  return records, ""


def shard_problems(dataset_dir: str) -> list[str]:
  """What is wrong with the TFRecord shards that a dataset's ``dataset_info.json`` lists.

  Every listed shard must exist and be non-empty, and each split's files must add up to its
  recorded ``numBytes`` plus the TFRecord framing (16 bytes per record): one ``stat`` per
  shard. Only when a split's total is off are its shards' record headers scanned, to name
  the damaged file (a split that scans clean is accepted).

  Returns:
    One line per damaged shard (path and what is wrong); [] when all are intact.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  info = tfds.builder_from_directory(os.fspath(dataset_dir)).info
  problems = []
  for name, split in info.splits.items():
    paths = [os.fspath(p) for p in split.filepaths]
    lengths = [int(n) for n in split.shard_lengths]
    sizes, where = [], f"split {name!r}"
    for path, n in zip(paths, lengths):
      if not tf.io.gfile.exists(path):
        problems.append(f"shard {path} ({where}, {n} records) is missing")
      elif (size := tf.io.gfile.stat(path).length) == 0 and n:
        problems.append(f"shard {path} ({where}, {n} records) is empty")
      else:
        sizes.append(size)
    if len(sizes) < len(paths) or not split.num_bytes:
      continue
    if sum(sizes) == int(split.num_bytes) + _FRAMING_BYTES * sum(lengths):
      continue
    for path, n in zip(paths, lengths):
      records, wrong = _scan_tfrecord(path)
      if wrong or records != n:
        problems.append(f"shard {path} ({where}) {wrong or 'is damaged'}: {records} complete "
                        f"records of the {n} dataset_info.json lists")
  return problems


def check_shards(dataset_dir: str) -> None:
  """Raises before any step if a listed shard is missing, empty or truncated
  (``shard_problems``).

  Raises:
    FileNotFoundError: a shard is missing, empty or truncated; the message names it and says
      how to rebuild the dataset.
  """
  problems = shard_problems(dataset_dir)
  if problems:
    more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:4])})" if problems[1:] else ""
    raise FileNotFoundError(f"dataset {dataset_dir}: {problems[0]}{more}; {_REBUILD}")


def read_error(dataset_dir: str, error: Exception) -> Exception:
  """A read error met mid-run (``tf.errors.DataLossError``, ``NotFoundError``), as a
  FileNotFoundError naming the damaged shard (found by ``shard_problems``) or, when the shards
  look intact (a corrupt record inside), the dataset."""
  problems = shard_problems(dataset_dir)
  cause = " ".join(str(getattr(error, "message", error)).split())[:300]
  what = problems[0] if problems else "a record failed to read (shard sizes are intact)"
  return FileNotFoundError(f"reading dataset {dataset_dir} failed: {what}; {_REBUILD} "
                           f"(TensorFlow: {cause})")


def _is_dataset_dir(path: pathlib.Path) -> bool:
  return (path / "dataset_info.json").is_file() and (path / METADATA_FILE).is_file()


def find_dataset_dir(data_dir: str, name: str | None = None) -> str:
  """Resolves a dataset directory from itself or a parent holding exactly one dataset.

  Args:
    data_dir: the dataset dir itself, `<data_dir>/<name>`, or the `--output DATA_DIR` given to
      hvt-prepare (searched up to three levels deep; hidden temp dirs are ignored).
    name: if given, only datasets with this name match.

  Returns:
    The dataset directory.

  Raises:
    FileNotFoundError: if no dataset or more than one dataset matches (lists what was found).
  """
  root = pathlib.Path(data_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"dataset dir {data_dir!r} does not exist")

  def dataset_name(path: pathlib.Path) -> str:
    return json.loads((path / METADATA_FILE).read_text(encoding="utf-8")).get("name", "")

  if _is_dataset_dir(root):
    if name is not None and dataset_name(root) != name:
      raise FileNotFoundError(f"{data_dir!r} holds dataset {dataset_name(root)!r}, not "
                              f"{name!r}")
    return os.fspath(root)
  found = []
  frontier = [root]
  for _ in range(3):
    nxt = []
    for d in frontier:
      for child in sorted(d.iterdir()):
        # Hidden work dirs and TFDS's incomplete dirs are never datasets.
        if child.is_dir() and not child.name.startswith((".", "incomplete.")):
          (found if _is_dataset_dir(child) else nxt).append(child)
    frontier = nxt
  matching = [p for p in found if name is None or dataset_name(p) == name]
  if len(matching) == 1:
    return os.fspath(matching[0])
  listing = ", ".join(f"{p} ({dataset_name(p)})" for p in found) or "none"
  what = f"dataset {name!r}" if name else "exactly one dataset"
  raise FileNotFoundError(f"expected {what} under {data_dir!r}; found: {listing}")
