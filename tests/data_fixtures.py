"""Helpers shared by the data_prep tests: reading written datasets back, writing inputs."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from data_prep import reader


def read_examples(dataset_dir: str, split: str) -> dict[str, dict]:
  """A written split as {video_id: example} with numpy values (tokens stay ragged)."""
  return {ex["video_id"].decode(): ex
          for ex in reader.load_split(dataset_dir, split).as_numpy_iterator()}


def token_lists(example: dict) -> list[list[int]]:
  """An example's token ids as plain lists of ints (ragged or already nested)."""
  tokens = example["tokens"]
  rows = tokens.to_list() if hasattr(tokens, "to_list") else tokens
  return [[int(t) for t in row] for row in rows]


def write_json(path: pathlib.Path, obj: Any) -> str:
  """Writes `obj` as UTF-8 json; returns the path as a string."""
  path.write_text(json.dumps(obj), encoding="utf-8")
  return str(path)


def shard_examples(dataset_dir: str) -> dict[str, list]:
  """{shard file name: its records as parsed `tf.train.Example` protos, in file order}.

  Two datasets with equal results hold the same examples, record for record and shard for
  shard. (Not the raw bytes: protobuf writes the entries of an Example's feature map in an
  order that may differ between processes; the parsed messages compare the values.)
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {p.name: [tf.train.Example.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(str(p))]
          for p in sorted(pathlib.Path(dataset_dir).glob("*.tfrecord*"))}
