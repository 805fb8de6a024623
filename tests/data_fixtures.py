"""Helpers shared by the data_prep tests: reading written datasets back, writing inputs."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from data_prep import writer


def read_examples(dataset_dir: str, split: str) -> dict[str, dict]:
  """A written split as {video_id: example} with numpy values (tokens stay ragged)."""
  return {ex["video_id"].decode(): ex
          for ex in writer.load_split(dataset_dir, split).as_numpy_iterator()}


def token_lists(example: dict) -> list[list[int]]:
  """An example's token ids as plain lists of ints (ragged or already nested)."""
  tokens = example["tokens"]
  rows = tokens.to_list() if hasattr(tokens, "to_list") else tokens
  return [[int(t) for t in row] for row in rows]


def write_json(path: pathlib.Path, obj: Any) -> str:
  """Writes `obj` as UTF-8 json; returns the path as a string."""
  path.write_text(json.dumps(obj), encoding="utf-8")
  return str(path)


def shard_bytes(dataset_dir: str) -> dict[str, bytes]:
  """{shard file name: contents} of a dataset dir."""
  return {p.name: p.read_bytes() for p in sorted(pathlib.Path(dataset_dir).glob("*.tfrecord*"))}
