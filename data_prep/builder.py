"""hvt_jax datasets as TFDS builders: canonical records -> TFRecord shards, plain or on Beam.

Every dataset of `data_prep/` is a `tfds.core.GeneratorBasedBuilder` (a subclass of
`HvtBuilder`) whose `BuilderConfig`s name the real choices (feature modality and dim,
tokenizer). TFDS's own machinery writes the dataset: `tfds build` (a package of builders:
`--imports data_prep.datasets`), `tfds.load(name, data_dir=...)` and `hvt-prepare <dataset>`
(the friendly front end that fills a builder from flags) all go through it.

What a conversion writes is a `Plan`: the `DatasetSpec` (modalities and dims, tokenizer,
vocabulary, extra metadata), the work items of every split and a picklable
`build(item, counter) -> record | None` that reads one video's features and assembles its
canonical record (the README's canonical schema), counting its repairs and skips in
`counter`. The builder

- validates each record against the spec (`validate_record`: feature dims, shapes, finite
  values, `len(sentences) == len(tokens) == S`, token ids inside the vocabulary) and raises a
  `ValueError` naming the video and the field on the first bad record;
- serializes it as the `tf.train.Example` of the `FeaturesDict` of the canonical schema
  (`make_features`), equal byte for byte to what TFDS's generic serializer writes after its
  deterministic re-serialization (`serialize_record`, ~4x faster), in input order
  (`disable_shuffling`);
- cuts each split into shards before building it: runs of consecutive items (`shard_runs`:
  `num_shards`, or TFDS's size-based count for the size the first items' records imply),
  each run's kept records one shard, written as they are built: nothing is held in a buffer,
  spilled or sent through a shuffle, so the cost per video does not grow with the corpus;
- runs `build` in this process (plain TFDS), or as an Apache Beam pipeline when beam options
  are given (`tfds build --beam_pipeline_options=...`, `hvt-prepare --num-workers N` = Beam's
  local FnApiRunner in multi-processing mode, `--beam-options` for Dataflow / Flink / Spark):
  a plain pipeline whose elements are the runs, each built and written by one worker. Both
  paths write the same shards, record for record;
- counts every repair and skip with its reason and the first example ids exactly under both
  paths: each item's counts travel with a small per-item report (under Beam a side output of
  JSON lines next to the shards, read back and deleted when the pipeline has finished), and
  the reports are merged in input order, after the counts of the planning stage;
- writes `metadata.json` (TFDS `MetadataDict`: spec, per-split counts, skip/repair summary,
  the splits left without records, unknown-token rates), `vocab.txt` (one token per line, line
  number = id) and the plan's extra files (e.g. `word_vectors.npy`) into TFDS's temporary
  dataset dir, so they appear together with the shards or not at all.

A split whose every item is skipped cannot be stored (TFDS cannot write an empty split): it is
found before anything is written (records are built until the split's first kept one and at
least `SIZE_SAMPLE` items; under Beam that look-ahead only decides, the pipeline builds every
record), and then either the
conversion fails with the repairs and skips so far (`empty_splits="error"`) or the split is
left out, counted (`SPLIT_EMPTY`, example id = the split name) and listed in
metadata["empty_splits"] (`"drop"`). Corpus splits (`DatasetSpec.corpus_splits`) may hold
records without sentences and label (TVR test_public's video corpus).

`prepare` runs a builder into a hidden temporary data dir next to the output and renames the
finished dataset into place, so an interrupted run never leaves a dataset that loads and
re-running replaces the previous one (the old one stays until the new one is complete).
`convert` is the skeleton every converter shares (plan, build, print the summary);
`write_dataset` writes in-memory records (tests, synthetic data) through the same builder.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
import shutil
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import shard_utils

from hvt_jax.input.reader import METADATA_FILE, VOCAB_FILE

VERSION = "1.0.0"
# Files the builder writes itself; extra files may not use these names.
_RESERVED_FILES = ("dataset_info.json", "features.json", METADATA_FILE, VOCAB_FILE)
_MAX_EXAMPLES = 20
_SCALAR_TEXT_FIELDS = ("video_id", "split", "label")
# Reason of a split left out under `empty_splits="drop"` (metadata["counts"]).
SPLIT_EMPTY = "split has no records (not written)"
# Per-item reports of a Beam build, beside the shards until the pipeline has finished.
_REPORTS_DIR = ".hvt_reports"


@dataclasses.dataclass
class DatasetSpec:
  """What every record of a dataset looks like.

  Attributes:
    name: dataset name, e.g. "activitynet_captions"; also the TFDS dataset name and the
      directory name under the output dir.
    modalities: modality name -> feature dim D_m. Every record has all of them.
    tokenizer: "word" or "wordpiece".
    vocab: id -> token. For the word tokenizer id 0 is "<pad>" and id 1 is "<unk>".
    description: free text stored in the TFDS DatasetInfo.
    extra: JSON-serialisable extra metadata (class names, generator parameters, ...).
    corpus_splits: splits whose records may have no sentences and no label: the videos of a
      corpus whose queries are stored elsewhere (metadata), e.g. TVR test_public. Stored as
      metadata["corpus_splits"].
  """
  name: str
  modalities: dict[str, int]
  tokenizer: str
  vocab: list[str]
  description: str = ""
  extra: dict = dataclasses.field(default_factory=dict)
  corpus_splits: tuple[str, ...] = ()

  def validate(self) -> None:
    """Raises ValueError when the spec itself is unusable."""
    if not self.name or not self.name.replace("_", "").isalnum() or not self.name.islower():
      raise ValueError(f"DatasetSpec.name must be lower_snake_case, got {self.name!r}")
    if not self.modalities:
      raise ValueError("DatasetSpec.modalities is empty: a dataset needs at least one modality")
    for m, d in self.modalities.items():
      if not m or not m.replace("_", "").isalnum():
        raise ValueError(f"modality name must be alphanumeric/underscore, got {m!r}")
      if not isinstance(d, (int, np.integer)) or d <= 0:
        raise ValueError(f"modality {m!r}: feature dim must be a positive int, got {d!r}")
    if self.tokenizer not in ("word", "wordpiece"):
      raise ValueError(f"DatasetSpec.tokenizer must be 'word' or 'wordpiece', got "
                       f"{self.tokenizer!r}")
    if not self.vocab:
      raise ValueError("DatasetSpec.vocab is empty")
    if len(set(self.vocab)) != len(self.vocab):
      dup = [t for t, c in collections.Counter(self.vocab).items() if c > 1][:5]
      raise ValueError(f"DatasetSpec.vocab has duplicate tokens, e.g. {dup}")
    if any("\n" in t or "\r" in t for t in self.vocab):
      raise ValueError("DatasetSpec.vocab tokens must not contain newlines (vocab.txt is "
                       "one token per line)")
    if isinstance(self.corpus_splits, str) or not all(
        isinstance(s, str) and s for s in self.corpus_splits):
      raise ValueError(f"DatasetSpec.corpus_splits must be a sequence of split names, got "
                       f"{self.corpus_splits!r}")
    json.dumps(self.extra)  # Fails early (TypeError) on non-serialisable extra metadata.


class SkipCounter:
  """Counts repaired and skipped records with their reasons and the ids concerned.

  Converters call `repair` when they fixed something in place (the record is kept) and `skip`
  when they dropped a sentence or a video. Counts are per call (e.g. per sentence).
  """

  def __init__(self) -> None:
    self._repaired: collections.Counter[str] = collections.Counter()
    self._skipped: collections.Counter[str] = collections.Counter()
    self._examples: dict[str, list[str]] = {}

  def _note(self, reason: str, video_id: str) -> None:
    ids = self._examples.setdefault(reason, [])
    if len(ids) < _MAX_EXAMPLES and video_id not in ids:
      ids.append(video_id)

  def repair(self, reason: str, video_id: str) -> None:
    """Counts one repair (the data was fixed and kept)."""
    self._repaired[reason] += 1
    self._note(reason, video_id)

  def skip(self, reason: str, video_id: str) -> None:
    """Counts one skip (a sentence or a video was dropped)."""
    self._skipped[reason] += 1
    self._note(reason, video_id)

  def merge(self, other: SkipCounter | dict) -> None:
    """Adds another counter (or its `summary()`) into this one, keeping example order."""
    summary = other.summary() if isinstance(other, SkipCounter) else other
    self._repaired.update(summary["repaired"])
    self._skipped.update(summary["skipped"])
    for reason, ids in summary["examples"].items():
      for video_id in ids:
        self._note(reason, video_id)

  def total(self) -> int:
    """Number of repairs and skips counted so far."""
    return sum(self._repaired.values()) + sum(self._skipped.values())

  def summary(self) -> dict:
    """Returns {"repaired": {reason: n}, "skipped": {reason: n}, "examples": {reason: ids}}.

    `examples` holds the first 20 distinct video ids seen for each reason.
    """
    return {"repaired": dict(sorted(self._repaired.items())),
            "skipped": dict(sorted(self._skipped.items())),
            "examples": {r: list(v) for r, v in sorted(self._examples.items())}}

  def format_table(self) -> str:
    """A human-readable table of every reason, its count and a few example ids."""
    rows = [("repaired", r, n) for r, n in sorted(self._repaired.items())]
    rows += [("skipped", r, n) for r, n in sorted(self._skipped.items())]
    if not rows:
      return "No records repaired or skipped."
    width = max(len(r) for _, r, _ in rows)
    lines = [f"{'kind':8}  {'reason':{width}}  {'count':>7}  examples",
             f"{'-' * 8}  {'-' * width}  {'-' * 7}  {'-' * 8}"]
    for kind, reason, n in rows:
      ids = self._examples.get(reason, [])
      shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
      lines.append(f"{kind:8}  {reason:{width}}  {n:>7}  {shown}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# The canonical schema: features and validation.


def make_features(modalities: Mapping[str, int]) -> tfds.features.FeaturesDict:
  """The TFDS `FeaturesDict` of the canonical schema for modalities {name: dim D}.

  Arrays use `Encoding.BYTES` (raw little-endian bytes): the default per-value proto
  encoding is ~200x slower to write for [T, 500] features and stores exactly the same values.
  Features and timestamps are float32; `duration`, `segments` and `instances/segments` are
  float64, the precision
  the annotation files are parsed in, so a view can reproduce the released code's
  arithmetic on them bit for bit (``hvt_jax.input.ops.time_to_rows``). Datasets written
  before (float32 times) still load: the views cast times to float64.
  """
  def array(d: int, dtype=np.float32):
    return tfds.features.Tensor(shape=(None, d), dtype=dtype, encoding="bytes")

  return tfds.features.FeaturesDict({
      "video_id": tfds.features.Text(),
      "duration": tfds.features.Tensor(shape=(), dtype=np.float64, encoding="bytes"),
      "split": tfds.features.Text(),
      "label": tfds.features.Text(),
      "features": tfds.features.FeaturesDict(
          {m: array(d) for m, d in sorted(modalities.items())}),
      "timestamps": tfds.features.FeaturesDict(
          {m: array(2) for m in sorted(modalities)}),
      "segments": array(2, np.float64),
      "sentences": tfds.features.Sequence(tfds.features.Text()),
      "tokens": tfds.features.Sequence(tfds.features.Sequence(np.int32)),
      # Labelled action instances (ActivityNet v1.3 annotations): I segments in seconds and
      # their class names; empty for datasets without them.
      "instances": tfds.features.FeaturesDict({
          "segments": array(2, np.float64),
          "labels": tfds.features.Sequence(tfds.features.Text()),
      }),
  })


def _bad(record: dict, field: str, msg: str) -> ValueError:
  vid = record.get("video_id", "<no video_id>") if isinstance(record, dict) else "<not a dict>"
  return ValueError(f"invalid record for video {vid!r}, field {field!r}: {msg}")


def _float_array(record: dict, field: str, value: Any, cols: int,
                 dtype: Any = np.float32) -> np.ndarray:
  """`value` as a finite [N, cols] array of `dtype`, or a ValueError naming the field."""
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise _bad(record, field, f"not an array ({e})") from e
  if arr.size == 0 and arr.ndim < 2:  # [] or np.zeros(0): no rows.
    arr = arr.reshape(0, cols)
  if arr.dtype.kind not in "fiu":
    raise _bad(record, field, f"expected a float array, got dtype {arr.dtype}")
  if arr.ndim != 2 or arr.shape[1] != cols:
    raise _bad(record, field, f"expected shape [N, {cols}], got {list(arr.shape)}")
  arr = arr.astype(dtype, copy=False)
  if not np.isfinite(arr).all():
    bad_rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    raise _bad(record, field, f"non-finite values (NaN/Inf) in rows {bad_rows[:5].tolist()}")
  return arr


def validate_record(record: dict, spec: DatasetSpec, split: str) -> dict:
  """Checks one canonical record against the spec and returns a normalised copy.

  Args:
    record: canonical record (the schema in README "Data" and this module's docstring).
    spec: the dataset spec.
    split: the split the record is written to; `record["split"]` must equal it.

  Returns:
    The record with arrays as float32 numpy arrays and `duration` as a float.

  Raises:
    ValueError: naming the video id and the field, for the first problem found.
  """
  if not isinstance(record, dict):
    raise _bad(record, "<record>", f"expected a dict, got {type(record).__name__}")
  expected = {"video_id", "duration", "split", "label", "features", "timestamps", "segments",
              "sentences", "tokens"}
  if missing := sorted(expected - record.keys()):
    raise _bad(record, missing[0], f"missing field(s) {missing}")
  if extra := sorted(record.keys() - expected - {"instances"}):
    raise _bad(record, extra[0], f"unknown field(s) {extra}")
  for field in _SCALAR_TEXT_FIELDS:
    if not isinstance(record[field], str):
      raise _bad(record, field, f"expected str, got {type(record[field]).__name__}")
  if not record["video_id"]:
    raise _bad(record, "video_id", "empty")
  if record["split"] != split:
    raise _bad(record, "split", f"is {record['split']!r} but the record is written to split "
               f"{split!r}")
  try:
    duration = float(record["duration"])
  except (TypeError, ValueError) as e:
    raise _bad(record, "duration", f"not a number: {record['duration']!r}") from e
  if not math.isfinite(duration) or duration <= 0:
    raise _bad(record, "duration", f"must be finite and > 0, got {duration}")

  out = dict(record, duration=duration, features={}, timestamps={})
  for group in ("features", "timestamps"):
    if not isinstance(record[group], dict) or set(record[group]) != set(spec.modalities):
      got = sorted(record[group]) if isinstance(record[group], dict) else record[group]
      raise _bad(record, group, f"modalities {got} != spec {sorted(spec.modalities)}")
  for m, d in spec.modalities.items():
    feats = _float_array(record, f"features/{m}", record["features"][m], d)
    times = _float_array(record, f"timestamps/{m}", record["timestamps"][m], 2)
    if len(times) != len(feats):
      raise _bad(record, f"timestamps/{m}", f"{len(times)} rows but features/{m} has "
                 f"{len(feats)}")
    if (times[:, 0] > times[:, 1]).any():
      raise _bad(record, f"timestamps/{m}", "a row has start > end")
    out["features"][m], out["timestamps"][m] = feats, times
  if all(len(f) == 0 for f in out["features"].values()):
    raise _bad(record, "features", "every modality is missing (0 rows)")

  segments = _spans(record, "segments", record["segments"])
  sentences, tokens = record["sentences"], record["tokens"]
  if not isinstance(sentences, (list, tuple)) or not all(isinstance(s, str) for s in sentences):
    raise _bad(record, "sentences", "expected a list of str")
  if any(not s or s != s.strip() for s in sentences):
    raise _bad(record, "sentences", "sentences must be stripped and non-empty")
  if not isinstance(tokens, (list, tuple)):
    raise _bad(record, "tokens", "expected a list of token-id lists")
  if not len(sentences) == len(tokens) == len(segments):
    raise _bad(record, "sentences", f"len(sentences)={len(sentences)}, len(tokens)="
               f"{len(tokens)} and len(segments)={len(segments)} must be equal")
  if not sentences and not record["label"] and split not in spec.corpus_splits:
    raise _bad(record, "sentences", "no sentences and no label: nothing to train on (only "
               "the videos of a corpus split, DatasetSpec.corpus_splits, may have none)")
  vocab_size = len(spec.vocab)
  clean_tokens = []
  for i, ids in enumerate(tokens):
    arr = np.asarray(ids, dtype=np.int64).reshape(-1) if len(ids) else np.zeros(0, np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
      raise _bad(record, "tokens", f"sentence {i} has ids outside [0, {vocab_size}): "
                 f"{arr.tolist()[:10]}")
    clean_tokens.append(arr.astype(np.int32))
  out.update(segments=segments, sentences=list(sentences), tokens=clean_tokens,
             instances=_instances(record))
  return out


def _spans(record: dict, field: str, value: Any) -> np.ndarray:
  """`value` as finite float64 [N, 2] (start, end) seconds with start <= end, or a
  ValueError naming the field."""
  spans = _float_array(record, field, value, 2, np.float64)
  if (spans[:, 0] > spans[:, 1]).any():
    raise _bad(record, field, f"a segment has start > end: "
               f"{spans[spans[:, 0] > spans[:, 1]][:3].tolist()}")
  return spans


def _instances(record: dict) -> dict:
  """The record's optional `instances` ({"segments": [I, 2], "labels": [I] str}, I may be 0;
  absent = none) as float64 segments with start <= end and non-empty stripped labels."""
  inst = record.get("instances")
  if inst is None:
    return {"segments": np.zeros((0, 2), np.float64), "labels": []}
  if not isinstance(inst, dict) or set(inst) != {"segments", "labels"}:
    raise _bad(record, "instances", "expected {'segments': [I, 2], 'labels': [I] str}, got "
               f"{sorted(inst) if isinstance(inst, dict) else type(inst).__name__}")
  segments = _spans(record, "instances/segments", inst["segments"])
  labels = inst["labels"]
  if not isinstance(labels, (list, tuple)) or not all(
      isinstance(l, str) and l and l == l.strip() for l in labels):
    raise _bad(record, "instances/labels", "expected a list of stripped, non-empty str")
  if len(labels) != len(segments):
    raise _bad(record, "instances/labels", f"{len(labels)} labels for {len(segments)} "
               "segments")
  return {"segments": segments, "labels": list(labels)}


# ----------------------------------------------------------------------------------------
# Serialized examples and shards: the plain path writes them itself.
#
# An example is the `tf.train.Example` that TFDS's own serializer builds from `make_features`
# (the generic `ExampleSerializer`, ~1 ms a video in Python), written here directly in the
# protobuf wire format: equal byte for byte to its `SerializeToString(deterministic=True)`
# (map entries sorted by key), which is how TFDS and tf.data decode it.


@functools.lru_cache(maxsize=1 << 16)
def _varint(value: int) -> bytes:
  """Protobuf's base-128 varint of an int >= 0."""
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _bytes_feature(values: Iterable[bytes | memoryview]) -> list:
  """A `Feature` holding a `BytesList` of `values`, as [size, *chunks]."""
  chunks, size = [], 0
  for value in values:
    head = b"\x0a" + _varint(len(value))  # BytesList.value
    chunks += (head, value)
    size += len(head) + len(value)
  head = b"\x0a" + _varint(size)  # Feature.bytes_list
  return [len(head) + size, head, *chunks]


def _int64_feature(values: np.ndarray) -> list:
  """A `Feature` holding an `Int64List` of `values` (ints >= 0, packed), as [size, *chunks]."""
  if values.size and values.max() < 0x80:
    packed = values.astype(np.uint8).tobytes()
  else:
    packed = b"".join(map(_varint, values.tolist()))
  int64_list = b"\x0a" + _varint(len(packed)) + packed if packed else b""  # Int64List.value
  head = b"\x1a" + _varint(len(int64_list))  # Feature.int64_list
  return [len(head) + len(int64_list), head, int64_list]


def _raw(array: np.ndarray, dtype: str) -> memoryview:
  """The little-endian bytes of `array` as `dtype` (no copy when it already is)."""
  return memoryview(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8))


def serialize_record(rec: dict) -> bytes:
  """The serialized `tf.train.Example` of a validated record (`validate_record`'s output).

  Equal byte for byte to `SerializeToString(deterministic=True)` of the example TFDS's
  generic serializer builds from `make_features(modalities)` (tests/test_convert_fast.py
  compares them), so `tfds.load`, `tfds.builder_from_directory` and the reader decode it.

  Returns:
    The example's bytes.
  """
  tokens = rec["tokens"]
  features = {
      "video_id": _bytes_feature([rec["video_id"].encode("utf-8")]),
      "duration": _bytes_feature([_raw(np.float64(rec["duration"]), "<f8")]),
      "split": _bytes_feature([rec["split"].encode("utf-8")]),
      "label": _bytes_feature([rec["label"].encode("utf-8")]),
      "segments": _bytes_feature([_raw(rec["segments"], "<f8")]),
      "sentences": _bytes_feature([s.encode("utf-8") for s in rec["sentences"]]),
      "tokens/ragged_flat_values": _int64_feature(
          np.concatenate(tokens) if tokens else np.zeros(0, np.int64)),
      "tokens/ragged_row_lengths_0": _int64_feature(np.array([len(t) for t in tokens],
                                                             np.int64)),
      "instances/segments": _bytes_feature([_raw(rec["instances"]["segments"], "<f8")]),
      "instances/labels": _bytes_feature([l.encode("utf-8")
                                          for l in rec["instances"]["labels"]]),
  }
  for m, array in rec["features"].items():
    features[f"features/{m}"] = _bytes_feature([_raw(array, "<f4")])
    features[f"timestamps/{m}"] = _bytes_feature([_raw(rec["timestamps"][m], "<f4")])
  chunks, size = [], 0
  for key in sorted(features):  # Deterministic serialization: map entries sorted by key.
    feature_size, *feature = features[key]
    name = key.encode("ascii")
    entry_head = b"\x0a" + _varint(len(name)) + name + b"\x12" + _varint(feature_size)
    entry_size = len(entry_head) + feature_size  # Map entry: key (1), value (2).
    head = b"\x0a" + _varint(entry_size)  # Features.feature
    chunks += (head, entry_head, *feature)
    size += len(head) + entry_size
  return b"".join([b"\x0a", _varint(size), *chunks])  # Example.features


# Items built before a split is written: their serialized sizes estimate the split's size,
# which sets the shard count when none is given.
SIZE_SAMPLE = 32


def shard_runs(num_items: int, num_shards: int | None, sample: Sequence[int | None]) -> list[int]:
  """Where a split's shards end: the end position of each run of consecutive plan items.

  Each run's kept records form one shard, so every writer (this process, Beam workers) cuts a
  split alike and before building it. With `num_shards` N the items are cut into N runs
  (`shard_utils.get_shard_boundaries`, as TFDS cuts records); without it N is TFDS's size-based
  count (`ShardConfig.calculate_number_shards`: shards of 64 MiB to 1 GiB) for the size the
  first items' records imply. A run without kept records adds no shard, so N is an upper
  bound and no shard is empty.

  Args:
    num_items: the split's items (> 0).
    num_shards: shards asked for, or None.
    sample: serialized size of each of the first items' records (None: skipped), at least
      one kept.

  Returns:
    Increasing end positions; the last is `num_items`.
  """
  if num_shards is None:
    kept = [size for size in sample if size is not None]
    num_shards = shard_utils.ShardConfig.calculate_number_shards(
        total_size=int(sum(kept) / len(sample) * num_items),
        num_examples=max(1, int(len(kept) / len(sample) * num_items)))
  return list(shard_utils.get_shard_boundaries(num_items, min(num_shards, num_items)))


def _incomplete_shard(prefix: str, run: int) -> epath.Path:
  return epath.Path(f"{prefix}.incomplete-run-{run:05d}")


def write_run(records: Iterable[tuple[int, bytes]], path: epath.PathLike,
              example_writer: Any) -> tuple[int, int]:
  """Writes serialized records into one shard file; returns (records, bytes without framing)."""
  count = size = 0

  def counted():
    nonlocal count, size
    for position, data in records:
      count += 1
      size += len(data)
      yield position, data

  example_writer.write(path, counted())
  return count, size


def finish_split(split: str, template: Any, runs: Mapping[int, tuple[int, int]]) -> Any:
  """Renames a split's run files (`write_run`, temporary names) to TFDS's shard names.

  Args:
    split: the split name.
    template: the builder's `naming.ShardedFileTemplate`.
    runs: run index -> (records, bytes) of each run that holds records.

  Returns:
    The split's `tfds.core.SplitInfo` (shard lengths, bytes without the TFRecord framing).
  """
  template = template.replace(split=split)
  order = sorted(runs)
  for index, run in enumerate(order):
    _incomplete_shard(template.filepath_prefix(), run).rename(
        template.sharded_filepath(shard_index=index, num_shards=len(order)))
  return tfds.core.SplitInfo(name=split, shard_lengths=[runs[r][0] for r in order],
                             num_bytes=sum(runs[r][1] for r in order),
                             filename_template=template)


def unknown_token_id(spec: DatasetSpec) -> int | None:
  """The id of the tokenizer's unknown token ("<unk>" or WordPiece "[UNK]"), None if absent."""
  token = "<unk>" if spec.tokenizer == "word" else "[UNK]"
  try:
    return spec.vocab.index(token)
  except ValueError:
    return None


# ----------------------------------------------------------------------------------------
# Plans and per-item building (the same functions run in this process and in Beam workers).


@dataclasses.dataclass
class Plan:
  """What a conversion writes (see the module docstring).

  Attributes:
    spec: the dataset spec; `spec.name` is the builder's name.
    items: split -> work items, in output order (one per video).
    build: picklable `build(item, counter) -> record or None` (module-level function or a
      `functools.partial` of one: under Beam it runs in worker processes). None: the items
      are canonical records already.
    extra_files: file name -> bytes or a function writing the file at the path it is given;
      written into the dataset dir with everything else (e.g. `word_vectors.npy`).
    extra_fn: called once every split is written with {"splits": {split: records},
      "missing": {split: {modality: n}}, "split_counts": {split: {"repaired": {reason: n},
      "skipped": {reason: n}}}} (the counts of that split's items); the mapping it returns is
      merged into metadata["extra"]. Splits left out are in none of these.
    empty_splits: "error" or "drop" (see the module docstring).
    report: prints the conversion summary, `report(dataset_dir, counter)`; None: quiet.
    resources: closed when the conversion ends (open feature files).
  """
  spec: DatasetSpec
  items: dict[str, Sequence[Any]]
  build: Callable[[Any, SkipCounter], dict | None] | None = None
  extra_files: Mapping[str, bytes | Callable[[str], None]] = dataclasses.field(
      default_factory=dict)
  extra_fn: Callable[[dict], Mapping[str, Any]] | None = None
  empty_splits: str = "error"
  report: Callable[[str, SkipCounter], None] | None = None
  resources: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)

  def validate(self) -> None:
    """Raises ValueError when the plan cannot be written (before anything is built)."""
    self.spec.validate()
    if not self.items:
      raise ValueError(f"{self.spec.name}: no splits given")
    for split in self.items:
      if not split or not split.replace("_", "").isalnum():
        raise ValueError(f"split name must be alphanumeric/underscore, got {split!r}")
    if self.empty_splits not in ("error", "drop"):
      raise ValueError(f"empty_splits must be 'error' or 'drop', got {self.empty_splits!r}")
    for name in self.extra_files:
      if (not isinstance(name, str) or not name or name != os.path.basename(name)
          or name.startswith(".") or name in _RESERVED_FILES or ".tfrecord" in name):
        raise ValueError(f"extra file name {name!r} must be a plain file name that does not "
                         f"start with '.' and is none of {_RESERVED_FILES} or a shard name")


def record_info(rec: dict, spec: DatasetSpec, unk_id: int | None) -> dict:
  """What the metadata needs of a validated record: id, sentences, missing, token counts."""
  return {"video_id": rec["video_id"], "sentences": len(rec["sentences"]),
          "instances": len(rec["instances"]["labels"]),
          "missing": [m for m, f in rec["features"].items() if len(f) == 0],
          "tokens": sum(len(ids) for ids in rec["tokens"]),
          "unknown": 0 if unk_id is None else sum(int(np.count_nonzero(ids == unk_id))
                                                  for ids in rec["tokens"])}


def build_example(build: Callable | None, spec: DatasetSpec, split: str, unk_id: int | None,
                  position_item: tuple[int, Any]) -> tuple[tuple[int, bytes] | None, dict]:
  """Builds, validates, serializes and reports one work item (here or in a Beam worker).

  Args:
    build: the plan's record builder (None: the item is a record).
    spec: the dataset spec.
    split: the split the record goes to.
    unk_id: the unknown token's id (`unknown_token_id`), or None.
    position_item: (position among the split's items, item).

  Returns:
    ((position, serialized example) or None when skipped, report) where report =
    {"position", "counts": SkipCounter.summary() (only when something was counted), "info":
    `record_info` (only for a kept record)}; JSON-serialisable.

  Raises:
    ValueError: the record does not match the spec (names the video and the field).
  """
  position, item = position_item
  counter = SkipCounter()
  record = item if build is None else build(item, counter)
  report: dict[str, Any] = {"position": position}
  if counter.total():
    report["counts"] = counter.summary()
  if record is None:
    return None, report
  rec = validate_record(record, spec, split)
  report["info"] = record_info(rec, spec, unk_id)
  return (position, serialize_record(rec)), report


def _build_run(build: Callable | None, spec: DatasetSpec, split: str, unk_id: int | None,
               prefix: str, reports_dir: str, example_writer: Any, items: Sequence[Any],
               bounds: Sequence[int], index: int) -> None:
  """A Beam worker's element, run `index` of a split: builds its items (those before
  `bounds[index]`, after the previous run's) into its shard file when any record is kept,
  and writes `<reports_dir>/<split>-<index>.jsonl`: {"run", "records", "bytes"} when it wrote
  a shard, then one report per item. A retried element rewrites both files alike."""
  start = bounds[index - 1] if index else 0
  reports = []

  def kept():
    for position in range(start, bounds[index]):
      example, report = build_example(build, spec, split, unk_id, (position, items[position]))
      reports.append(report)
      if example is not None:
        yield example

  records = iter(kept())
  first = next(records, None)  # No file for a run without records.
  lines = []
  if first is not None:
    count, size = write_run(_chain([first], records), _incomplete_shard(prefix, index),
                            example_writer)
    lines.append(json.dumps({"run": index, "records": count, "bytes": size}))
  lines += [json.dumps(r, sort_keys=True) for r in reports]
  (epath.Path(reports_dir) / f"{split}-{index:05d}.jsonl").write_text(
      "".join(line + "\n" for line in lines), encoding="utf-8")


def beam_pipeline_options(options: str | None = None, num_workers: int = 1):
  """Beam `PipelineOptions` from `tfds build`-style options or a local worker count.

  Args:
    options: comma-separated flags without "--", as `tfds build --beam_pipeline_options`
      takes them (e.g. "runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp").
    num_workers: without `options` and > 1: Beam's local FnApiRunner in multi-processing
      mode with this many worker processes. (It is the batch runner the DirectRunner
      delegates to, named directly: the DirectRunner first tries the Prism runner, which
      downloads a binary from GitHub.)

  Returns:
    PipelineOptions, or None for the plain (Beam-free) path.

  Raises:
    ImportError: Beam is needed but not installed (names the extra to install).
  """
  if not options and num_workers <= 1:
    return None
  try:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("a Beam conversion (--num-workers > 1 or --beam-options) needs "
                      "Apache Beam: pip install 'hvt_jax[beam]'") from e
  if options:
    return pipeline_options.PipelineOptions(flags=[f"--{o}" for o in options.split(",")])
  return pipeline_options.PipelineOptions(
      flags=[], runner="FnApiRunner", direct_num_workers=int(num_workers),
      direct_running_mode="multi_processing")


# ----------------------------------------------------------------------------------------
# The builder.


@dataclasses.dataclass(eq=False)
class HvtConfig(tfds.core.BuilderConfig):
  """A dataset's real choices: feature modalities with their dims, tokenizer, options.

  Attributes:
    modalities: modality -> feature dim D (the `FeaturesDict` shapes [T, D]).
    tokenizer: "word" or "wordpiece".
    options: converter options read from `manual_dir` builds (file names, feature key,
      feature rate, ...); each dataset documents its own.
  """
  modalities: Mapping[str, int] = dataclasses.field(default_factory=dict)
  tokenizer: str = "word"
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def config_name(modalities: Mapping[str, int], tokenizer: str) -> str:
  """The name of a config made from flags: modalities with their dims, then the tokenizer."""
  return "_".join([f"{m}{d}" for m, d in sorted(modalities.items())] + [tokenizer])


class HvtBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the hvt_jax dataset builders (see the module docstring).

  A dataset subclasses it with its `BUILDER_CONFIGS`, `MANUAL_DOWNLOAD_INSTRUCTIONS` and
  `make_plan(manual_dir, counter)`; `hvt-prepare` passes a ready `plan` instead (its inputs
  come from flags). After `download_and_prepare`, `counter` holds every repair and skip.
  """

  VERSION = tfds.core.Version(VERSION)
  DESCRIPTION = ""

  def __init__(self, *, plan: Plan | None = None, counter: SkipCounter | None = None,
               **kwargs: Any):
    self._plan = plan
    self.counter = SkipCounter() if counter is None else counter
    self._beam = False
    self._reports: dict[str, list[dict]] = {}
    self._dropped: list[str] = []
    super().__init__(**kwargs)

  @classmethod
  def config_for(cls, spec: DatasetSpec) -> HvtConfig | None:
    """The predefined config with `spec`'s modalities, dims and tokenizer, else a new one."""
    if not cls.BUILDER_CONFIGS:
      return None
    for config in cls.BUILDER_CONFIGS:
      if dict(config.modalities) == dict(spec.modalities) and config.tokenizer == spec.tokenizer:
        return config
    return HvtConfig(name=config_name(spec.modalities, spec.tokenizer),
                     description="made by hvt-prepare from its flags",
                     modalities=dict(spec.modalities), tokenizer=spec.tokenizer)

  def make_plan(self, manual_dir: pathlib.Path | None, counter: SkipCounter) -> Plan:
    """The plan of a `tfds build` from the files in `manual_dir` (see the instructions; None
    for a builder without MANUAL_DOWNLOAD_INSTRUCTIONS)."""
    raise ValueError(f"{self.name} is built from records given in memory "
                     "(data_prep.builder.write_dataset), not from a manual_dir")

  def _modalities(self) -> Mapping[str, int]:
    if self._plan is not None:
      return self._plan.spec.modalities
    return self.builder_config.modalities

  def _info(self) -> tfds.core.DatasetInfo:
    description = (self._plan.spec.description if self._plan is not None
                   else self.DESCRIPTION) or f"hvt_jax dataset {self.name}"
    return tfds.core.DatasetInfo(
        builder=self, description=description,
        features=make_features(self._modalities()),
        metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  # TFDS prints "Downloading and preparing dataset Unknown size ... to <tmp dir>" and
  # "... downloaded and prepared" to stdout; nothing is downloaded here and the dir is a
  # temporary one (`prepare` renames it), so both go to the INFO log instead.
  def _log_download_bytes(self) -> None:
    logging.info("TFDS: preparing %s in %s", self.name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("TFDS: %s prepared in %s", self.name, self.data_dir)

  def _download_and_prepare(self, dl_manager, download_config):  # pytype: disable=signature-mismatch
    self._beam = (download_config.beam_runner is not None
                  or download_config.beam_options is not None)
    super()._download_and_prepare(dl_manager, download_config)
    self._finalize()

  def _generate_splits(self, dl_manager, download_config):
    """Writes every split's shards; returns their `SplitInfo`s.

    Shards are runs of the plan's items (`shard_runs`), each written as its records are
    built, here (one after the other) or one Beam element per run: no example crosses a
    shuffle, is held in a buffer or written twice. Records are serialized by
    `serialize_record`, not TFDS's generic serializer.
    """
    splits = self._plan_splits(dl_manager, download_config.num_shards)
    example_writer = self._example_writer()
    if self._beam:
      return self._write_on_beam(splits, download_config, example_writer)
    infos = []
    for split, (bounds, head, rest) in splits.items():
      records = tfds.core.utils.tqdm(
          self._generate(split, head, rest), desc=f"Generating {split} examples...",
          unit=" examples", total=bounds[-1], leave=False, mininterval=1.0)
      if download_config.max_examples_per_split is not None:
        records = itertools.islice(records, download_config.max_examples_per_split)
      template = self._get_filename_template(split_name=split)
      prefix = template.filepath_prefix()
      runs = {}
      for run, group in itertools.groupby(records, key=lambda r: bisect.bisect_right(bounds,
                                                                                    r[0])):
        runs[run] = write_run(group, _incomplete_shard(prefix, run), example_writer)
      infos.append(finish_split(split, template, runs))
    return infos

  def _write_on_beam(self, splits: dict, download_config, example_writer) -> list:
    """One plain Beam pipeline for every split: a `Create` of every split's runs, each built
    and written by one worker with its per-item reports as JSON lines beside the shards."""
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
    options = download_config.beam_options or pipeline_options.PipelineOptions()
    options.view_as(pipeline_options.TypeOptions).pipeline_type_check = False
    plan, unk_id = self._plan, unknown_token_id(self._plan.spec)
    templates = {split: self._get_filename_template(split_name=split) for split in splits}
    reports_dir = epath.Path(self.data_dir) / _REPORTS_DIR
    reports_dir.mkdir(parents=True, exist_ok=True)
    # The elements are (split, run index) pairs: the items travel once with the function,
    # and Beam does not infer a type from (walk) every annotation. One stage for every split:
    # no barrier between the splits, whose runs share the workers.
    writers = {split: functools.partial(_build_run, plan.build, plan.spec, split, unk_id,
                                        templates[split].filepath_prefix(),
                                        os.fspath(reports_dir), example_writer,
                                        list(plan.items[split]), bounds)
               for split, (bounds, _, _) in splits.items()}
    elements = [(split, index) for split, (bounds, _, _) in splits.items()
                for index in range(len(bounds))]
    with beam.Pipeline(runner=download_config.beam_runner, options=options) as pipeline:
      _ = (pipeline | "Runs" >> beam.Create(elements)
           | "Build" >> beam.MapTuple(lambda split, index: writers[split](index)))
    runs = self._read_beam_reports()
    return [finish_split(split, templates[split], runs.get(split, {})) for split in splits]

  def _split_generators(self, dl_manager):  # Unused: _plan_splits prepares the splits.
    raise AssertionError("HvtBuilder._generate_splits writes the splits itself")

  def _plan_splits(self, dl_manager, num_shards: int | None) -> dict[str, tuple]:
    """Plans every split: split -> (shard run ends, (example, report) results built ahead,
    iterator of the remaining results), after the empty-split rules (module docstring)."""
    if self._plan is None:
      manual_dir = (pathlib.Path(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS
                    else None)
      self._plan = self.make_plan(manual_dir, self.counter)
      if dict(self._plan.spec.modalities) != dict(self._modalities()):
        raise ValueError(
            f"{self.name}/{self.builder_config.name}: the features in {dl_manager.manual_dir} "
            f"have modalities and dims {dict(self._plan.spec.modalities)}, the config declares "
            f"{dict(self._modalities())}; use the config that matches them (or hvt-prepare, "
            "which takes the dims from the files)")
    plan = self._plan
    plan.validate()
    if plan.spec.name != self.name:
      raise ValueError(f"plan for dataset {plan.spec.name!r} given to builder {self.name!r}")
    unk_id = unknown_token_id(plan.spec)
    splits = {}
    for split, items in plan.items.items():
      results = map(lambda pi, s=split: build_example(plan.build, plan.spec, s, unk_id, pi),
                    enumerate(items))
      head: list = []
      kept = False
      for result in results:  # The size sample, up to the split's first kept record.
        head.append(result)
        kept = kept or result[0] is not None
        if kept and len(head) >= SIZE_SAMPLE:
          break
      if kept:
        sample = [None if example is None else len(example[1]) for example, _ in head]
        splits[split] = (shard_runs(len(items), num_shards, sample), head, results)
        continue
      # Every item was skipped: TFDS cannot store the split.
      self._reports[split] = [report for _, report in head]
      if plan.empty_splits == "error":
        so_far = SkipCounter()
        so_far.merge(self.counter)
        so_far.merge(self._merged_counts(split))
        raise ValueError(f"split {split!r} of {plan.spec.name!r} has no records to write; "
                         f"repairs and skips so far:\n{so_far.format_table()}")
      self._dropped.append(split)
    if not splits:
      so_far = SkipCounter()
      so_far.merge(self.counter)
      for split in self._dropped:
        so_far.merge(self._merged_counts(split))
        so_far.skip(SPLIT_EMPTY, split)
      raise ValueError(f"no split of {plan.spec.name!r} has records to write (splits "
                       f"{sorted(plan.items)}); repairs and skips:\n{so_far.format_table()}")
    return splits

  def _generate(self, split: str, head: list, rest: Iterator) -> Iterator[tuple[int, bytes]]:
    reports = self._reports.setdefault(split, [])
    for example, report in _chain(head, rest):
      reports.append(report)
      if example is not None:
        yield example

  def _generate_examples(self, **kwargs):  # Unused: _generate_splits writes the splits.
    raise AssertionError("HvtBuilder._generate_splits writes the splits itself")

  def _merged_counts(self, split: str) -> SkipCounter:
    counter = SkipCounter()
    for report in sorted(self._reports.get(split, ()), key=lambda r: r["position"]):
      if "counts" in report:
        counter.merge(report["counts"])
    return counter

  def _read_beam_reports(self) -> dict[str, dict[int, tuple[int, int]]]:
    """Collects a Beam build's per-item reports; returns split -> run -> (records, bytes)."""
    directory = epath.Path(self.data_dir) / _REPORTS_DIR
    runs: dict[str, dict[int, tuple[int, int]]] = {}
    for path in sorted(directory.iterdir()):
      split = path.name.split("-", 1)[0]
      for line in path.read_text(encoding="utf-8").splitlines():
        report = json.loads(line)
        if "run" in report:
          runs.setdefault(split, {})[report["run"]] = (report["records"], report["bytes"])
        else:
          self._reports.setdefault(split, []).append(report)
    directory.rmtree()
    return runs

  def _finalize(self) -> None:
    """Merges the item reports into the counter and writes metadata, vocab and extra files."""
    plan, spec = self._plan, self._plan.spec
    counts, sentences, instances, missing, unknown, split_counts = {}, {}, {}, {}, {}, {}
    for split in plan.items:
      split_counter = self._merged_counts(split)
      self.counter.merge(split_counter)
      if split in self._dropped:
        self.counter.skip(SPLIT_EMPTY, split)
        continue
      infos = [r["info"] for r in sorted(self._reports[split], key=lambda r: r["position"])
               if "info" in r]
      seen: set[str] = set()
      for info in infos:
        if info["video_id"] in seen:
          raise ValueError(f"invalid record for video {info['video_id']!r}, field "
                           f"'video_id': duplicate video id in split {split!r}")
        seen.add(info["video_id"])
      counts[split] = len(infos)
      sentences[split] = sum(i["sentences"] for i in infos)
      instances[split] = sum(i["instances"] for i in infos)
      missing[split] = {m: sum(m in i["missing"] for i in infos) for m in sorted(spec.modalities)}
      num_tokens = sum(i["tokens"] for i in infos)
      num_unknown = sum(i["unknown"] for i in infos)
      unknown[split] = {"tokens": num_tokens, "unknown": num_unknown,
                        "rate": num_unknown / num_tokens if num_tokens else 0.0}
      summary = split_counter.summary()
      split_counts[split] = {k: summary[k] for k in ("repaired", "skipped")}
    extra = dict(spec.extra)
    if plan.extra_fn is not None:
      extra.update(plan.extra_fn({"splits": dict(counts), "missing": missing,
                                  "split_counts": split_counts}))
      json.dumps(extra)  # Fails (TypeError) before the dataset is renamed into place.
    unk = unknown_token_id(spec)
    self.info.metadata.update({
        "name": spec.name, "version": VERSION, "description": spec.description,
        "modalities": {m: int(d) for m, d in sorted(spec.modalities.items())},
        "tokenizer": spec.tokenizer, "vocab_size": len(spec.vocab), "vocab_file": VOCAB_FILE,
        "splits": counts, "sentences": sentences, "instances": instances,
        "missing": missing, "counts": self.counter.summary(), "extra": extra, "empty_splits": list(self._dropped),
        "corpus_splits": sorted(set(spec.corpus_splits) & set(counts)),
        "unknown_tokens": {"token": None if unk is None else spec.vocab[unk],
                           "splits": unknown},
    })
    logging.info("%s: repairs and skips\n%s", spec.name, self.counter.format_table())
    directory = pathlib.Path(self.data_dir)
    (directory / VOCAB_FILE).write_text("".join(t + "\n" for t in spec.vocab), encoding="utf-8")
    for name, content in plan.extra_files.items():
      path = directory / name
      if callable(content):
        content(os.fspath(path))
        if not path.is_file():
          raise ValueError(f"the writer of extra file {name!r} did not create {path}")
      else:
        path.write_bytes(bytes(content))


def _chain(head: list, rest: Iterator) -> Iterator:
  yield from head
  yield from rest


# ----------------------------------------------------------------------------------------
# Running a builder: atomic output, the shared convert() skeleton, in-memory records.


def pid_alive(pid: int) -> bool:
  """Whether a process with this id exists (on this machine)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Exists, owned by someone else.
  return True


def remove_stale_work_dirs(output_dir: pathlib.Path) -> list[str]:
  """Deletes the hidden work dirs (`.tmp-<pid>-*`, `.old-<pid>-*`) of killed conversions.

  `prepare` builds into `<output_dir>/.tmp-<pid>-<random>` and moves a replaced dataset to
  `.old-<pid>-<random>` beside it; only dirs whose process is gone are removed, as another
  conversion may still be running.

  Args:
    output_dir: the data dir, or a dataset's parent dir (both may hold such dirs).

  Returns:
    The removed paths.
  """
  removed = []
  for path in sorted(output_dir.glob(".tmp-*")) + sorted(output_dir.glob(".old-*")):
    pid = path.name.split("-")[1] if path.name.count("-") >= 2 else ""
    if path.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(os.fspath(path))
  return removed


def _check_num_shards(num_shards: int | None) -> None:
  if num_shards is not None and num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")


def prepare(builder_cls: type[HvtBuilder], output_dir: str, *, plan: Plan | None = None,
            config: HvtConfig | str | None = None, counter: SkipCounter | None = None,
            manual_dir: str | None = None, num_shards: int | None = None,
            num_workers: int = 1, beam_options: str | None = None,
            file_format: str | None = None) -> str:
  """Builds a dataset with TFDS into `output_dir` atomically; returns the dataset dir.

  The builder runs with a hidden temporary data dir inside `output_dir`; the finished dataset
  dir (`<name>[/<config>]/<version>`) is then renamed into place. A dataset already there is
  moved aside first and deleted once the new one is in place (idempotent re-runs: same input,
  same shards). On an error nothing is left behind. Work dirs of killed runs (their process
  gone) are removed first.

  Args:
    builder_cls: the dataset's builder class.
    output_dir: the data dir.
    plan: the records to write (hvt-prepare, in-memory records); None: the builder's
      `make_plan` reads `manual_dir`.
    config: the builder config (or its name) when the builder has configs.
    counter: receives every repair and skip (the plan's own counts are already in it).
    manual_dir: the files of a `make_plan` build.
    num_shards: shards per split, at most (None: by the split's estimated size, `shard_runs`).
    num_workers: > 1 runs the record building on Beam's local FnApiRunner with this many
      processes (`beam_pipeline_options`).
    beam_options: `tfds build`-style Beam pipeline options (any runner); overrides
      `num_workers`.
    file_format: "tfrecord" (default) or "array_record".

  Returns:
    The dataset dir.
  """
  _check_num_shards(num_shards)
  parent = pathlib.Path(output_dir)
  parent.mkdir(parents=True, exist_ok=True)
  remove_stale_work_dirs(parent)
  tmp_root = parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    builder = builder_cls(data_dir=os.fspath(tmp_root), config=config, plan=plan,
                          counter=counter)
    options = beam_pipeline_options(beam_options, num_workers)
    builder.download_and_prepare(
        file_format=file_format,
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir, num_shards=num_shards, beam_options=options,
            try_download_gcs=False))
    built = pathlib.Path(builder.data_dir)
    final = parent / built.relative_to(tmp_root)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(final.parent)
    # Some complete dataset exists at every moment except between the two renames.
    old = None
    if final.exists():
      old = final.parent / f".old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
      final.rename(old)
    built.rename(final)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return os.fspath(final)


def convert(builder_cls: type[HvtBuilder], make_plan: Callable[[SkipCounter], Plan],
            output_dir: str, *, config: HvtConfig | None = None,
            counter: SkipCounter | None = None,
            num_shards: int | None = None, num_workers: int = 1,
            beam_options: str | None = None, file_format: str | None = None,
            verbose: bool = True) -> tuple[str, SkipCounter]:
  """The conversion skeleton every converter shares: plan, build, print the summary.

  Args:
    builder_cls: the dataset's builder class.
    make_plan: reads the annotations (counting their repairs/skips in the counter it gets),
      sets up the tokenizer and opens the features: returns the `Plan`.
    output_dir: the data dir; the dataset goes to `output_dir/<name>/<config>/<version>`.
    config: the builder config; None: the predefined config whose modalities, dims and
      tokenizer match the plan's, else one named by them (`config_name`).
    counter: counter to add this conversion's repairs/skips to (default: a new one).
    num_shards: shards per split (None: by size).
    num_workers: > 1: build records on Beam's local FnApiRunner with this many processes.
    beam_options: Beam pipeline options for another runner (see `beam_pipeline_options`).
    file_format: "tfrecord" (default) or "array_record".
    verbose: print the plan's summary.

  Returns:
    (dataset dir, the SkipCounter with every repair and skip).
  """
  _check_num_shards(num_shards)
  counter = SkipCounter() if counter is None else counter
  plan = make_plan(counter)
  with plan.resources:
    dataset_dir = prepare(builder_cls, output_dir, plan=plan,
                          config=config or builder_cls.config_for(plan.spec), counter=counter,
                          num_shards=num_shards, num_workers=num_workers,
                          beam_options=beam_options, file_format=file_format)
  if verbose and plan.report is not None:
    plan.report(dataset_dir, counter)
  return dataset_dir, counter


_RECORD_BUILDERS: dict[str, type[HvtBuilder]] = {}


def records_builder(name: str) -> type[HvtBuilder]:
  """The builder class of in-memory records for dataset `name` (not registered with TFDS:
  `tfds.load(name, data_dir=...)` reads the written files)."""
  if name not in _RECORD_BUILDERS:
    _RECORD_BUILDERS[name] = types.new_class(
        "".join(p.title() for p in name.split("_")) + "Records", (HvtBuilder,),
        {"skip_registration": True}, lambda ns: ns.update(name=name, __module__=__name__))
  return _RECORD_BUILDERS[name]


def write_dataset(spec: DatasetSpec, splits: Mapping[str, Iterable[dict]], output_dir: str, *,
                  counter: SkipCounter | None = None, num_shards: int | None = None,
                  num_workers: int = 1,
                  extra_files: Mapping[str, bytes | Callable[[str], None]] | None = None,
                  extra_fn: Callable[[dict], Mapping[str, Any]] | None = None,
                  empty_splits: str = "error") -> str:
  """Writes canonical records held in memory as a dataset (tests, synthetic data).

  The records go through the same builder, validation, metadata and atomic output as every
  converter's (see the module docstring); the dataset goes to `output_dir/<spec.name>/1.0.0`.

  Args:
    spec: the dataset spec.
    splits: split name -> canonical records.
    output_dir: the data dir.
    counter: receives the repairs and skips (here only `SPLIT_EMPTY`); default a new one.
    num_shards: shards per split (None: by size).
    num_workers: > 1: through Beam's local FnApiRunner (records are pickled to workers).
    extra_files: see `Plan.extra_files`.
    extra_fn: see `Plan.extra_fn`.
    empty_splits: "error" or "drop" (see the module docstring).

  Returns:
    The dataset dir.

  Raises:
    ValueError: an invalid spec, a record that does not match it (names the video and the
      field), a duplicate video id, a split without records (under "drop": every split), a
      bad extra file name. Nothing is written then.
  """
  plan = Plan(spec=spec, items={s: list(r) for s, r in splits.items()},
              extra_files=dict(extra_files or {}), extra_fn=extra_fn,
              empty_splits=empty_splits)
  plan.validate()
  return prepare(records_builder(spec.name), output_dir, plan=plan, counter=counter,
                 num_shards=num_shards, num_workers=num_workers)
