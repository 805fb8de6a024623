"""Writes and reads hvt_jax datasets: TFRecord shards in a TFDS dataset directory.

Every converter in `data_prep/` produces canonical records (one dict per video, see
DESIGN.md "Canonical example schema") and hands them to `write_dataset`, which

- validates each record against the `DatasetSpec` (feature dims, shapes, finite values,
  `len(sentences) == len(tokens) == S`, token ids inside the vocabulary) and raises a
  `ValueError` naming the video and the field on the first bad record;
- serializes it as a `tf.train.Example` (optionally in worker processes) and writes TFRecord
  shards named `<name>-<split>.tfrecord-<index>-of-<count>`;
- writes `dataset_info.json` + `features.json` (loadable by `tfds.builder_from_directory` in a
  fresh process), `metadata.json` (spec, per-split counts, skip/repair summary, the splits
  left without records),
  `vocab.txt` (one token per line, line number = id) and any extra files the converter
  passes (e.g. `word_vectors.npy`);
- does all of that in a hidden temporary directory that is renamed into place only when
  complete, so an interrupted run never leaves a dataset that loads (or one that loads
  without its extra files), and re-running replaces the previous output.

A split that ends up without records cannot be stored (TFDS cannot read an empty split): by
default that is an error; with `empty_splits="drop"` the split is left out, counted
(`SPLIT_EMPTY`, example id = the split name) and listed in metadata["empty_splits"], and the
other splits are written (one split's problem never loses the others).

Corpus splits (`DatasetSpec.corpus_splits`): records of these splits may have no sentences
(S = 0) and no label. They hold the videos of a retrieval corpus whose queries name no video
(TVR test_public); the converter stores those queries in the metadata.

Layout: `write_dataset(spec, ..., output_dir)` writes `output_dir/<name>/<version>/`, the
standard TFDS layout, so `tfds.load(name, data_dir=output_dir)` works as well as `load_split`.

Serialization does not use TensorFlow: `serialize_record` writes the protobuf wire format of
the `tf.train.Example` that TFDS's own serializer produces for `make_features(spec)`, byte for
byte (deterministic: map keys sorted), so TFDS decodes it unchanged.

Parallelism: a split may be given as `map_records(fn, items)` instead of an iterable of
records. `fn(item, counter) -> record | None` then runs, with validation and serialization, in
`num_workers` processes: `num_workers - 1` spawned ones plus this one, which writes the shards
and builds records itself whenever the next result is not ready yet. One pool serves every
split of a `write_dataset` call; the spawned workers import numpy, h5py and the converter
module but never TensorFlow, so they start in about 0.2 s. Only the serialized bytes and the
skip/repair events travel back, in input order and with a bounded number of items in flight,
so the output is identical for any `num_workers` and memory stays flat.
"""

from __future__ import annotations

import collections
from concurrent import futures
import dataclasses
import functools
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

VERSION = "1.0.0"
# Shards roll over at this size when `num_shards` is not given: big enough for fast
# sequential reads, small enough that a split has several shards to spread over hosts.
TARGET_SHARD_BYTES = 128 * 1024 * 1024
METADATA_FILE = "metadata.json"
VOCAB_FILE = "vocab.txt"
# Files write_dataset writes itself; extra files may not use these names.
_RESERVED_FILES = ("dataset_info.json", "features.json", METADATA_FILE, VOCAB_FILE)
_MAX_EXAMPLES = 20
_SCALAR_TEXT_FIELDS = ("video_id", "split", "label")
# Reason of a split left out by `write_dataset(..., empty_splits="drop")` (metadata["counts"]).
SPLIT_EMPTY = "split has no records (not written)"


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


@dataclasses.dataclass(frozen=True)
class MappedRecords:
  """A split given as work items + a pure record builder (see `map_records`)."""
  fn: Callable[[Any, SkipCounter], dict | None]
  items: Sequence[Any]


def map_records(fn: Callable[[Any, SkipCounter], dict | None],
                items: Sequence[Any]) -> MappedRecords:
  """Declares a split whose records `write_dataset` builds, possibly in parallel.

  Args:
    fn: picklable (module-level) function `fn(item, counter) -> record dict or None`. It
      counts its own repairs/skips in `counter` and returns None for a skipped video. With
      `num_workers > 1` it runs in spawned worker processes (and in this one), so it must not
      rely on global state that the parent process set up after import.
    items: picklable work items, one per video (e.g. the video's annotation).

  Returns:
    A `MappedRecords` to use as a value of `write_dataset`'s `splits`.
  """
  return MappedRecords(fn=fn, items=list(items))


def _call_chunk(fn: Callable[[Any], Any], chunk: list) -> list:
  return [fn(item) for item in chunk]


class _LocalChunk:
  """A chunk the calling process ran itself; an error is raised when its turn comes."""

  def __init__(self, fn: Callable[[Any], Any], chunk: list):
    self._results, self._error = None, None
    try:
      self._results = _call_chunk(fn, chunk)
    except Exception as e:  # pylint: disable=broad-except
      self._error = e  # Re-raised in input order, as a worker's error would be.

  def result(self) -> list:
    if self._error is not None:
      raise self._error
    return self._results


class WorkerPool:
  """Processes that map a function over items in order, with a bound on items in flight.

  `num_workers <= 1` runs everything in the calling process (the initializer is called once,
  here). Otherwise processes are *spawned* (fork is unsafe once TensorFlow or h5py have
  started threads in the parent); like any spawn-based pool, the calling script needs an
  `if __name__ == "__main__":` guard, and a worker imports the modules of the functions it
  runs and the main module (keep those free of heavy imports such as TensorFlow at module
  level: each worker would pay for them). The pool may serve several `imap` calls (e.g. all
  splits of a dataset), so workers start once.

  With `caller_helps=True` the calling process is one of the `num_workers`: it spawns
  `num_workers - 1` processes and, whenever the oldest result is not ready yet, runs the next
  chunk itself instead of waiting (its results still come out in input order, and its errors
  in their turn). That suits a caller whose own per-item work (e.g. writing) is light: no core
  idles, and fewer results travel between processes.

  Use as a context manager; leaving it shuts the processes down (pending work is cancelled
  when leaving with an exception).
  """

  def __init__(self, num_workers: int = 1, *, initializer: Callable[..., None] | None = None,
               initargs: tuple = (), caller_helps: bool = False):
    self.num_workers = max(1, int(num_workers))
    self._processes = self.num_workers - 1 if caller_helps else self.num_workers
    self._caller_helps = caller_helps
    self._initializer, self._initargs = initializer, initargs
    self._executor: futures.ProcessPoolExecutor | None = None
    self._local_ready = False

  def __enter__(self) -> WorkerPool:
    if self.num_workers > 1:
      # ProcessPoolExecutor rather than multiprocessing.Pool: when a worker dies (a crash,
      # the OOM killer, a failing initializer) it raises BrokenProcessPool instead of hanging.
      self._executor = futures.ProcessPoolExecutor(
          self._processes, mp_context=multiprocessing.get_context("spawn"),
          initializer=self._initializer, initargs=self._initargs)
    return self

  def __exit__(self, exc_type, *exc: Any) -> None:
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)
      self._executor = None

  def _run_here(self, fn: Callable[[Any], Any], chunk: list) -> _LocalChunk:
    if self._initializer is not None and not self._local_ready:
      self._initializer(*self._initargs)
      self._local_ready = True
    return _LocalChunk(fn, chunk)

  def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], *, window: int | None = None,
           chunksize: int = 1) -> Iterator[Any]:
    """Yields `fn(item)` for every item, in input order.

    Args:
      fn: picklable function of one item (module-level when `num_workers > 1`).
      items: work items.
      window: maximum number of chunks submitted to the processes but not yet consumed
        (default 4 per process), so results the consumer has not taken yet never pile up in
        memory; chunks the caller runs itself add at most as many again.
      chunksize: items per task (fewer, larger messages).

    Yields:
      `fn(item)` for each item, in order. An exception in `fn` is re-raised here.
    """
    if self._executor is None:
      for item in items:
        yield from self._run_here(fn, [item]).result()
      return
    window = window or 4 * self._processes
    it = iter(items)
    slots: collections.deque = collections.deque()  # Futures and _LocalChunks, in order.
    in_flight = 0

    def next_chunk() -> list:
      return list(itertools.islice(it, max(1, chunksize)))

    def submit_next() -> bool:
      nonlocal in_flight
      chunk = next_chunk()
      if not chunk:
        return False
      slots.append(self._executor.submit(_call_chunk, fn, chunk))
      in_flight += 1
      return True

    try:
      while in_flight < window and submit_next():
        continue  # submit_next() does the work; loop until the window is full
      while slots:
        head = slots[0]
        if (self._caller_helps and isinstance(head, futures.Future) and not head.done()
            and len(slots) < 2 * window):
          chunk = next_chunk()
          if chunk:
            slots.append(self._run_here(fn, chunk))
            continue
        slots.popleft()
        if isinstance(head, futures.Future):
          in_flight -= 1
        results = head.result()
        while in_flight < window and submit_next():  # Refill the processes' window.
          continue
        yield from results
    finally:
      for slot in slots:
        if isinstance(slot, futures.Future):
          slot.cancel()


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], num_workers: int = 1,
                 desc: str | None = None, *, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), window: int | None = None) -> Iterator[Any]:
  """Yields `fn(item)` for every item, in input order, with a tqdm progress bar.

  A one-off `WorkerPool` (see there for the spawn rules): with `num_workers > 1` the calls
  run in spawned processes, at most `window` items in flight.

  Args:
    fn: picklable function of one item.
    items: work items (a sequence, so the progress bar knows the total).
    num_workers: number of processes; 1 runs everything in this process.
    desc: progress bar label; None disables the bar.
    initializer: optional per-worker setup function (also called once in-process when
      `num_workers == 1`).
    initargs: arguments of `initializer`.
    window: maximum number of items submitted but not yet consumed (default 4 per worker).

  Yields:
    `fn(item)` for each item, in order. An exception in `fn` is re-raised here.
  """
  import tqdm  # pylint: disable=g-import-not-at-top

  items = list(items)
  with tqdm.tqdm(total=len(items), desc=desc, unit="video", disable=desc is None,
                 mininterval=1.0, dynamic_ncols=True) as bar:
    with WorkerPool(num_workers, initializer=initializer, initargs=initargs) as pool:
      for result in pool.imap(fn, items, window=window or 4 * num_workers):
        yield result
        bar.update(1)

# ----------------------------------------------------------------------------------------
# Feature connectors, validation and serialization.


def make_features(spec: DatasetSpec):
  """The TFDS `FeaturesDict` of the canonical schema for `spec`.

  Arrays use `Encoding.BYTES` (raw little-endian bytes): the default per-value proto
  encoding is ~200x slower to write for [T, 500] features and stores exactly the same values.
  Features and timestamps are float32; `duration` and `segments` are float64, the precision
  the annotation files are parsed in, so a view can reproduce the released code's
  arithmetic on them bit for bit (``hvt_jax.input.ops.time_to_rows``). Datasets written
  before (float32 times) still load: the views cast times to float64.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def array(d: int, dtype=np.float32):
    return tfds.features.Tensor(shape=(None, d), dtype=dtype, encoding="bytes")

  return tfds.features.FeaturesDict({
      "video_id": tfds.features.Text(),
      "duration": tfds.features.Tensor(shape=(), dtype=np.float64, encoding="bytes"),
      "split": tfds.features.Text(),
      "label": tfds.features.Text(),
      "features": tfds.features.FeaturesDict(
          {m: array(d) for m, d in sorted(spec.modalities.items())}),
      "timestamps": tfds.features.FeaturesDict(
          {m: array(2) for m in sorted(spec.modalities)}),
      "segments": array(2, np.float64),
      "sentences": tfds.features.Sequence(tfds.features.Text()),
      "tokens": tfds.features.Sequence(tfds.features.Sequence(np.int32)),
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
  if extra := sorted(record.keys() - expected):
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

  segments = _float_array(record, "segments", record["segments"], 2, np.float64)
  if (segments[:, 0] > segments[:, 1]).any():
    raise _bad(record, "segments", f"a segment has start > end: "
               f"{segments[segments[:, 0] > segments[:, 1]][:3].tolist()}")
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
  out.update(segments=segments, sentences=list(sentences), tokens=clean_tokens)
  return out


# ----------------------------------------------------------------------------------------
# tf.train.Example wire format, without TensorFlow.
#
# Example   { Features features = 1; }
# Features  { map<string, Feature> feature = 1; }   (entry: key = 1, value = 2)
# Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
#                     Int64List int64_list = 3; } }
# *List     { repeated ... value = 1; }             (float/int64 packed)
# A length-delimited field is its tag byte ((number << 3) | 2), a varint length, the payload.
# TFDS stores a Text as one UTF-8 bytes value, a bytes-encoded Tensor (scalar or array) as
# its raw little-endian bytes, a Sequence(Text) as a BytesList and a
# Sequence(Sequence(int32)) as two Int64Lists "<key>/ragged_flat_values" and
# "<key>/ragged_row_lengths_0".


@functools.lru_cache(maxsize=65536)
def _varint(value: int) -> bytes:
  if value < 0:  # int64 two's complement, as protobuf writes negative int64 values.
    value += 1 << 64
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


class _Message:
  """A protobuf message as a list of byte chunks, joined once (arrays are not copied before).

  Length-delimited fields need the length of their payload up front, which the chunk list
  tracks, so nesting a field costs two small chunks instead of a copy of its payload.
  """

  def __init__(self) -> None:
    self.parts: list = []
    self.size = 0

  def add(self, chunk) -> None:
    self.parts.append(chunk)
    self.size += len(chunk)

  def field(self, tag: bytes, payload: _Message | bytes | memoryview) -> None:
    """Appends a length-delimited field (tag byte, varint length, payload)."""
    self.add(tag)
    if isinstance(payload, _Message):
      self.add(_varint(payload.size))
      self.parts.extend(payload.parts)
      self.size += payload.size
    else:
      self.add(_varint(len(payload)))
      self.add(payload)


def _raw(array: np.ndarray, dtype: str = "<f4") -> memoryview:
  """The little-endian bytes of an array (float32 by default), without copying a contiguous
  one of that dtype."""
  return memoryview(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8))


def _bytes_feature(values: Iterable[bytes | memoryview]) -> _Message:
  values_msg = _Message()
  for value in values:
    values_msg.field(b"\x0a", value)  # BytesList.value
  feature = _Message()
  feature.field(b"\x0a", values_msg)  # Feature.bytes_list
  return feature


def _int64_feature(values: Iterable[int]) -> _Message:
  int64_list = _Message()
  packed = b"".join(map(_varint, values))
  if packed:
    int64_list.field(b"\x0a", packed)  # Int64List.value, packed
  feature = _Message()
  feature.field(b"\x1a", int64_list)  # Feature.int64_list
  return feature


def unknown_token_id(spec: DatasetSpec) -> int | None:
  """The id of the tokenizer's unknown token ("<unk>" or WordPiece "[UNK]"), None if absent."""
  token = "<unk>" if spec.tokenizer == "word" else "[UNK]"
  try:
    return spec.vocab.index(token)
  except ValueError:
    return None


def serialize_record(record: dict, spec: DatasetSpec, split: str, *,
                     unk_id: int | None = None) -> tuple[bytes, dict]:
  """Validates one record and serializes it as a `tf.train.Example` (no TensorFlow needed).

  The bytes equal `SerializeToString(deterministic=True)` of the example TFDS builds from
  `make_features(spec)`, so `load_split` (and `tfds.builder_from_directory`) decode them.

  Args:
    record: canonical record.
    spec: the dataset spec.
    split: the split it is written to.
    unk_id: the unknown token's id (`unknown_token_id`), counted in the info; None: not
      counted.

  Returns:
    (serialized example, {"video_id": str, "sentences": int, "missing": [modalities with 0
    rows]}, plus
    "tokens" (token ids in the record) and "unknown" (how many are `unk_id`) when `unk_id` is
    given).

  Raises:
    ValueError: the record does not match the spec (names the video and the field).
  """
  rec = validate_record(record, spec, split)
  feature = {
      "video_id": _bytes_feature([rec["video_id"].encode("utf-8")]),
      "duration": _bytes_feature([_raw(np.float64(rec["duration"]), "<f8")]),
      "split": _bytes_feature([rec["split"].encode("utf-8")]),
      "label": _bytes_feature([rec["label"].encode("utf-8")]),
      "segments": _bytes_feature([_raw(rec["segments"], "<f8")]),
      "sentences": _bytes_feature(s.encode("utf-8") for s in rec["sentences"]),
      "tokens/ragged_flat_values": _int64_feature(
          i for ids in rec["tokens"] for i in ids.tolist()),
      "tokens/ragged_row_lengths_0": _int64_feature(len(ids) for ids in rec["tokens"]),
  }
  for m in spec.modalities:
    feature[f"features/{m}"] = _bytes_feature([_raw(rec["features"][m])])
    feature[f"timestamps/{m}"] = _bytes_feature([_raw(rec["timestamps"][m])])
  features_msg = _Message()
  # Deterministic serialization orders map entries by key (byte order); keys are ASCII.
  for key in sorted(feature):
    entry = _Message()
    entry.field(b"\x0a", key.encode("ascii"))  # map entry key
    entry.field(b"\x12", feature[key])  # map entry value
    features_msg.field(b"\x0a", entry)  # Features.feature
  example = _Message()
  example.field(b"\x0a", features_msg)  # Example.features
  info = {"video_id": rec["video_id"], "sentences": len(rec["sentences"]),
          "missing": [m for m, f in rec["features"].items() if len(f) == 0]}
  if unk_id is not None:
    info["tokens"] = sum(len(ids) for ids in rec["tokens"])
    info["unknown"] = sum(int(np.count_nonzero(ids == unk_id)) for ids in rec["tokens"])
  return b"".join(example.parts), info


# Per-process state of the worker pool (set by `_init_worker`).
_WORKER: dict[str, Any] = {}


def _init_worker(spec: DatasetSpec, fns: dict[str, Callable]) -> None:
  _WORKER.update(spec=spec, fns=fns, unk_id=unknown_token_id(spec))


def _build(spec: DatasetSpec, fn: Callable, split: str, item: Any, unk_id: int | None = None
           ) -> tuple[bytes | None, dict | None, dict | None]:
  """Builds, validates and serializes one item's record; returns (bytes, info, counts)."""
  counter = SkipCounter()
  record = fn(item, counter)
  data, info = ((None, None) if record is None
                else serialize_record(record, spec, split, unk_id=unk_id))
  return data, info, counter.summary() if counter.total() else None


def _build_in_worker(task: tuple[str, Any]) -> tuple[bytes | None, dict | None, dict | None]:
  split, item = task
  return _build(_WORKER["spec"], _WORKER["fns"][split], split, item, _WORKER["unk_id"])


def _serialized_records(spec: DatasetSpec, split: str, records: Iterable[dict] | MappedRecords,
                        counter: SkipCounter, pool: WorkerPool
                        ) -> Iterator[tuple[int, bytes, dict]]:
  """Yields (input position, serialized example, info), merging worker skip counts."""
  import tqdm  # pylint: disable=g-import-not-at-top

  unk_id = unknown_token_id(spec)
  if isinstance(records, MappedRecords):
    total = len(records.items)
    if pool.num_workers > 1:
      # Small chunks: fewer messages, while every process still gets work on small splits.
      chunksize = max(1, min(4, total // (8 * pool.num_workers)))
      results = pool.imap(_build_in_worker, ((split, item) for item in records.items),
                          chunksize=chunksize)
    else:
      results = (_build(spec, records.fn, split, item, unk_id) for item in records.items)
  else:
    total = len(records) if hasattr(records, "__len__") else None
    results = (serialize_record(record, spec, split, unk_id=unk_id) + (None,)
               for record in records)
  with tqdm.tqdm(results, desc=f"{spec.name}/{split}", total=total, unit="video",
                 mininterval=1.0, dynamic_ncols=True) as bar:
    for position, (data, info, counts) in enumerate(bar):
      if counts is not None:
        counter.merge(counts)
      if data is not None:
        yield position, data, info


# ----------------------------------------------------------------------------------------
# Writing.


class _ShardWriter:
  """Writes one split's shards.

  With a fixed shard count and a known number of input items, item i goes to shard
  `i * num_shards // num_items` (contiguous, so reading without shuffling follows the input
  order shard by shard); for an unsized iterable it goes round-robin; without a fixed count a
  new shard starts every `TARGET_SHARD_BYTES`.
  """

  def __init__(self, directory: pathlib.Path, name: str, split: str, num_shards: int | None,
               num_items: int | None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self._dir, self._prefix = directory, f"{name}-{split}.tfrecord"
    self._fixed, self._num_items = num_shards, num_items
    self._writers: list = []
    self.lengths: list[int] = []
    self.sizes: list[int] = []
    if num_shards is not None:
      for _ in range(num_shards):
        self._open()

  def _open(self) -> None:
    path = self._dir / f"{self._prefix}-tmp{len(self._writers):05d}"
    self._writers.append(self._tf.io.TFRecordWriter(os.fspath(path)))
    self.lengths.append(0)
    self.sizes.append(0)

  def write(self, data: bytes, position: int) -> None:
    """Writes one serialized example; `position` is its index among the input items."""
    if self._fixed is not None and self._num_items:
      idx = min(position * self._fixed // self._num_items, self._fixed - 1)
    elif self._fixed is not None:
      idx = position % self._fixed
    else:
      if not self._writers or self.sizes[-1] >= TARGET_SHARD_BYTES:
        self._open()
      idx = len(self._writers) - 1
    self._writers[idx].write(data)
    self.lengths[idx] += 1
    self.sizes[idx] += len(data)

  def discard(self) -> None:
    """Closes and deletes every shard of the split (a split left without records)."""
    for w in self._writers:
      w.close()
    for i in range(len(self._writers)):
      (self._dir / f"{self._prefix}-tmp{i:05d}").unlink(missing_ok=True)

  def close(self) -> tuple[list[int], int]:
    """Closes all shards, renames them to the TFDS template; returns (lengths, bytes)."""
    for w in self._writers:
      w.close()
    keep = [i for i, n in enumerate(self.lengths) if n > 0] or [0]
    if not self._writers:  # An empty split still gets one (empty) shard file.
      self._open()
      self._writers[0].close()
    for i in range(len(self._writers)):
      if i not in keep:
        (self._dir / f"{self._prefix}-tmp{i:05d}").unlink()
    for new, old in enumerate(keep):
      (self._dir / f"{self._prefix}-tmp{old:05d}").rename(
          self._dir / f"{self._prefix}-{new:05d}-of-{len(keep):05d}")
    return [self.lengths[i] for i in keep], sum(self.sizes)


def _counts_delta(before: dict, after: dict) -> dict:
  """Repairs/skips counted between two `SkipCounter.summary()` snapshots (no examples)."""
  return {kind: {r: n - before[kind].get(r, 0) for r, n in after[kind].items()
                 if n != before[kind].get(r, 0)}
          for kind in ("repaired", "skipped")}


def _check_extra_file_names(extra_files: Mapping[str, Any]) -> None:
  for name in extra_files:
    if (not isinstance(name, str) or not name or name != os.path.basename(name)
        or name.startswith(".") or name in _RESERVED_FILES or ".tfrecord" in name):
      raise ValueError(f"extra file name {name!r} must be a plain file name that does not "
                       f"start with '.' and is none of {_RESERVED_FILES} or a shard name")


def _write_extra_files(directory: pathlib.Path,
                       extra_files: Mapping[str, bytes | Callable[[str], None]]) -> None:
  for name, content in extra_files.items():
    path = directory / name
    if callable(content):
      content(os.fspath(path))
      if not path.is_file():
        raise ValueError(f"the writer of extra file {name!r} did not create {path}")
    else:
      path.write_bytes(bytes(content))


def pid_alive(pid: int) -> bool:
  """Whether a process with this id exists (on this machine)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Exists, owned by someone else.
  return True


def remove_stale_work_dirs(parent: pathlib.Path) -> list[str]:
  """Deletes the `.tmp-*` / `.old-*` dirs that killed writes left in a dataset's dir.

  Their names hold the writing process's id (`.tmp-<version>-<pid>-<random>`); only dirs
  whose process is gone are removed, as another conversion may still be writing.

  Args:
    parent: `output_dir/<name>`.

  Returns:
    The removed paths.
  """
  removed = []
  for path in sorted(parent.glob(".tmp-*")) + sorted(parent.glob(".old-*")):
    parts = path.name.split("-")
    pid = parts[2] if len(parts) >= 4 else ""
    if path.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(os.fspath(path))
  return removed


def write_dataset(spec: DatasetSpec, splits: dict[str, Iterable[dict] | MappedRecords],
                  output_dir: str, *, counter: SkipCounter, num_shards: int | None = None,
                  num_workers: int = 1,
                  extra_files: Mapping[str, bytes | Callable[[str], None]] | None = None,
                  extra_fn: Callable[[dict], Mapping[str, Any]] | None = None,
                  empty_splits: str = "error") -> str:
  """Writes TFRecord shards (a TFDS-loadable dataset) for each split.

  Atomic: writes into a hidden temp dir and renames it into place when complete, so an
  interrupted run never leaves a half-written dataset that loads; re-running into the same
  output replaces it (idempotent: same records -> byte-identical files). Temp dirs that killed
  runs left behind (their process gone) are removed first (`remove_stale_work_dirs`).
  metadata["unknown_tokens"] holds, per split, the token ids written, how many are the
  vocabulary's unknown token ("<unk>" / "[UNK]") and their rate.

  Args:
    spec: the dataset spec (modalities and dims, tokenizer, vocab, extra metadata).
    splits: split name -> records (an iterable of canonical record dicts, built in this
      process) or `map_records(fn, items)` (built by `fn` in `num_workers` processes; one
      pool serves all splits).
    output_dir: the data dir; the dataset goes to `output_dir/<spec.name>/<VERSION>`.
    counter: the converter's skip/repair counter; worker counts are merged into it, and its
      summary is stored in the metadata.
    num_shards: shards per split (contiguous runs of the input when its length is known,
      round-robin otherwise; empty shards are dropped); None rolls over to a new shard every
      `TARGET_SHARD_BYTES`.
    num_workers: processes building `MappedRecords` splits, this one included
      (`num_workers - 1` are spawned; this one builds while it would otherwise wait).
    extra_files: file name -> content (bytes) or a function that writes the file at the
      path it is given; written into the temporary dir with everything else, so they appear
      together with the dataset or not at all (e.g. `word_vectors.npy`).
    extra_fn: called after every split is written and before the metadata is, with
      {"splits": {split: records written}, "missing": {split: {modality: n}},
      "split_counts": {split: {"repaired": {reason: n}, "skipped": {reason: n}}}} (the
      repairs/skips counted while that split's records were built here: by the
      `map_records` function or while iterating the split); the mapping it returns is merged
      into the metadata's `extra` (e.g. per-split statistics of a record hook). Splits left
      out under `empty_splits="drop"` are in none of these.
    empty_splits: what a split left without records does: "error" (ValueError with the
      repairs and skips so far) or "drop" (left out of the dataset, counted as `SPLIT_EMPTY`
      with the split name as example id, listed in metadata["empty_splits"]; the other
      splits are written). When every split is empty it is an error either way.

  Returns:
    The dataset directory (contains dataset_info.json, features.json, metadata.json,
    vocab.txt, the extra files and the shards).

  Raises:
    ValueError: on an invalid spec, a record that does not match it (names the video and the
      field), a split left without records (TFDS cannot read empty splits; under
      `empty_splits="drop"` only when every split is empty) or a bad extra file name;
      nothing is written to `output_dir/<name>/<VERSION>` in that case.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import dataset_info as dataset_info_lib  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import naming  # pylint: disable=g-import-not-at-top

  spec.validate()
  if not splits:
    raise ValueError("write_dataset: no splits given")
  for split in splits:
    if not split or not split.replace("_", "").isalnum():
      raise ValueError(f"split name must be alphanumeric/underscore, got {split!r}")
  if num_shards is not None and num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  if empty_splits not in ("error", "drop"):
    raise ValueError(f"empty_splits must be 'error' or 'drop', got {empty_splits!r}")
  _check_extra_file_names(extra_files or {})

  parent = pathlib.Path(output_dir) / spec.name
  parent.mkdir(parents=True, exist_ok=True)
  remove_stale_work_dirs(parent)
  final = parent / VERSION
  tmp = parent / f".tmp-{VERSION}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  tmp.mkdir()
  mapped = {split: r.fn for split, r in splits.items() if isinstance(r, MappedRecords)}
  try:
    split_infos, counts, split_counts, dropped, sentences = [], {}, {}, [], {}
    missing: dict[str, dict[str, int]] = {}
    unknown: dict[str, dict[str, Any]] = {}
    with WorkerPool(num_workers if mapped else 1, initializer=_init_worker,
                    initargs=(spec, mapped), caller_helps=True) as pool:
      for split, records in splits.items():
        num_items = (len(records.items) if isinstance(records, MappedRecords)
                     else len(records) if hasattr(records, "__len__") else None)
        shards = _ShardWriter(tmp, spec.name, split, num_shards, num_items)
        seen: set[str] = set()
        missing[split] = {m: 0 for m in sorted(spec.modalities)}
        num_tokens = num_unknown = num_sentences = 0
        before = counter.summary()
        for position, data, info in _serialized_records(spec, split, records, counter, pool):
          if info["video_id"] in seen:
            raise ValueError(f"invalid record for video {info['video_id']!r}, field "
                             f"'video_id': duplicate video id in split {split!r}")
          seen.add(info["video_id"])
          for m in info["missing"]:
            missing[split][m] += 1
          num_tokens += info.get("tokens", 0)
          num_unknown += info.get("unknown", 0)
          num_sentences += info["sentences"]
          shards.write(data, position)
        if not any(shards.lengths):
          # TFDS cannot read a split without examples: leave it out, or fail with the reasons.
          shards.discard()
          del missing[split]
          if empty_splits == "error":
            raise ValueError(f"split {split!r} of {spec.name!r} has no records to write; "
                             f"repairs and skips so far:\n{counter.format_table()}")
          counter.skip(SPLIT_EMPTY, split)
          dropped.append(split)
          continue
        unknown[split] = {"tokens": num_tokens, "unknown": num_unknown,
                          "rate": num_unknown / num_tokens if num_tokens else 0.0}
        lengths, num_bytes = shards.close()
        split_counts[split] = _counts_delta(before, counter.summary())
        counts[split] = sum(lengths)
        sentences[split] = num_sentences
        template = naming.ShardedFileTemplate(
            data_dir=tmp, template=naming.DEFAULT_FILENAME_TEMPLATE, dataset_name=spec.name,
            split=split, filetype_suffix="tfrecord")
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths,
                                               num_bytes=num_bytes, filename_template=template))

    if not counts:
      raise ValueError(f"no split of {spec.name!r} has records to write (splits "
                       f"{sorted(splits)}); repairs and skips:\n{counter.format_table()}")
    extra = dict(spec.extra)
    if extra_fn is not None:
      extra.update(extra_fn({"splits": dict(counts), "missing": missing,
                             "split_counts": split_counts}))
      json.dumps(extra)  # Fails (TypeError) before anything is renamed into place.
    metadata = {
        "name": spec.name, "version": VERSION, "description": spec.description,
        "modalities": {m: int(d) for m, d in sorted(spec.modalities.items())},
        "tokenizer": spec.tokenizer, "vocab_size": len(spec.vocab), "vocab_file": VOCAB_FILE,
        "splits": counts, "sentences": sentences, "missing": missing,
        "counts": counter.summary(), "extra": extra,
        "empty_splits": dropped, "corpus_splits": sorted(set(spec.corpus_splits) & set(counts)),
        "unknown_tokens": {"token": None if (i := unknown_token_id(spec)) is None
                           else spec.vocab[i], "splits": unknown},
    }
    identity = dataset_info_lib.DatasetIdentity(
        name=spec.name, version=tfds.core.Version(VERSION), data_dir=os.fspath(tmp),
        module_name=__name__)
    info = tfds.core.DatasetInfo(
        builder=identity, description=spec.description or f"hvt_jax dataset {spec.name}",
        features=make_features(spec), metadata=tfds.core.MetadataDict(metadata))
    info.set_file_format("tfrecord")
    info.set_splits(tfds.core.SplitDict(split_infos))
    info.write_to_directory(tmp)
    (tmp / VOCAB_FILE).write_text("".join(t + "\n" for t in spec.vocab), encoding="utf-8")
    _write_extra_files(tmp, extra_files or {})
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  # Swap in the finished directory; the old one (if any) is moved aside first and deleted
  # only after the new one is in place, so some complete dataset exists at every moment
  # except between the two renames.
  old = None
  if final.exists():
    old = parent / f".old-{VERSION}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    final.rename(old)
  tmp.rename(final)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
  return os.fspath(final)

# ----------------------------------------------------------------------------------------
# Reading.


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


def _flatten_example(example: dict) -> dict:
  flat = {}
  for key, value in example.items():
    if isinstance(value, dict):
      for sub, v in value.items():
        flat[f"{key}/{sub}"] = v
    else:
      flat[key] = value
  return flat


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
    "tokens": int32 tf.RaggedTensor [S, None]}.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder_from_directory(os.fspath(dataset_dir))
  names = set(builder.info.splits.keys())
  for part in str(split).split("+"):
    base = part.split("[")[0].strip()
    if base not in names:
      raise ValueError(f"split {base!r} not in dataset {dataset_dir}: available "
                       f"{sorted(names)}")
  ds = builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)
  return ds.map(_flatten_example)


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
        if child.is_dir() and not child.name.startswith("."):
          (found if _is_dataset_dir(child) else nxt).append(child)
    frontier = nxt
  matching = [p for p in found if name is None or dataset_name(p) == name]
  if len(matching) == 1:
    return os.fspath(matching[0])
  listing = ", ".join(f"{p} ({dataset_name(p)})" for p in found) or "none"
  what = f"dataset {name!r}" if name else "exactly one dataset"
  raise FileNotFoundError(f"expected {what} under {data_dir!r}; found: {listing}")
