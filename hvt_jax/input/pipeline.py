"""tf.data pipelines from canonical TFRecords to global, sharded jax.Array batches.

One pipeline for every family: the family only contributes its *view* (``get_view``), which
turns one decoded record into one example (HSE, MCHA's sampled caption) or one example per
sentence (HAMMER: per (sentence, video)).

Train: this process's contiguous slice of the split; each epoch the records are shuffled
with seed (config.seed, epoch), every record is viewed with a seed of its own (config.seed,
epoch, record index) for stateless random ops, and the examples are shuffled again at
example level; the stream is a pure function of the example position, so a resumed run
continues at exactly the next example (the position its checkpoint recorded).
Eval: every example exactly once, the last batch padded with ``example_mask = False``.

Every example carries ``video_index`` (int32: the record's index in its split, so losses can
mask pairs of one video) and, on the host only, ``video_id``. ``iterate`` yields
(device batch, host batch): keys a view declares host-only (ids, strings) and the input
statistics never become device arrays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hvt_jax import families
from hvt_jax.input import ops, reader
from hvt_jax.vocab import wordpiece


@dataclasses.dataclass(frozen=True)
class View:
  """A family's view of a canonical record.

  Attributes:
    fn: (decoded record, resolved ``config.input``, int64 seed) -> fixed-shape tensors of one
      example, or of N examples along a leading axis when ``per_row``; among them
      ``example_mask`` (bool, True: a real example; the pipeline pads the last eval batch
      with False).
    per_row: "" = one example per record; else the record key whose rows are the examples
      (N = its number of rows): "tokens" = one per sentence, "instances/labels" = one per
      labelled action instance. Their counts come from the metadata (``ROW_COUNTS``).
    host_keys: keys that stay on the host (ids, strings); ``video_id`` and ``empty_video``
      (a view's flag for a video with nothing to encode, read by the evaluators) always do.
    stat_keys: host-side statistics counted by ``InputStats`` (not fed to the model).
  """
  fn: Callable[[dict[str, Any], Any, tf.Tensor], dict[str, tf.Tensor]]
  per_row: str = ""
  host_keys: tuple[str, ...] = ()
  stat_keys: tuple[str, ...] = ()

  @property
  def host_only(self) -> tuple[str, ...]:
    return ("video_id", "empty_video", *self.host_keys, *self.stat_keys)


def get_view(model: str, name: str | None = None) -> View:
  """The input view ``name`` (default: the model's own) of ``model``'s family
  (``hvt_jax.families``: each family declares its views).

  Raises:
    ValueError: an unknown model, or its family has no view ``name`` (lists the valid ones).
  """
  family = families.of_model(model)
  name = name or model
  if name not in family.views:
    raise ValueError(f"family {family.name!r} (model {model!r}) has no input view {name!r}; "
                     f"valid: {sorted(family.views)}")
  return family.views[name]


def view_config(config: Any, meta: dict[str, Any]) -> ml_collections.ConfigDict:
  """``config.input`` with dataset-dependent defaults resolved for the views.

  ``clip_rule="auto"`` becomes the dataset's stated rule (``ops.default_clip_rule``:
  "center" for DiDeMo's index-derived moments, else the released HSE code's "authors").
  """
  cfg = ml_collections.ConfigDict(config.input.to_dict())
  if cfg.get("clip_rule", "auto") == "auto":
    cfg.clip_rule = ops.default_clip_rule(meta.get("name", ""))
  if meta.get("special_ids"):
    cfg.special_ids = meta["special_ids"]
  if meta.get("extra", {}).get("classes"):
    cfg.classes = list(meta["extra"]["classes"])
  return cfg


def dataset_info(config: Any) -> tuple[str, dict[str, Any]]:
  """Returns (dataset dir, metadata) for ``config.input.data_dir``; a WordPiece dataset's
  metadata gains ``special_ids`` ({"pad", "unk", "cls", "sep", "mask"} present in its
  vocabulary)."""
  data_dir = reader.find_dataset_dir(config.input.data_dir,
                                     config.input.get("dataset") or None)
  meta = reader.load_metadata(data_dir)
  if meta.get("tokenizer") == "wordpiece":
    meta["special_ids"] = wordpiece.special_token_ids(reader.load_vocab(data_dir),
                                                      required=())
  return data_dir, meta


def _process_slice(total: int) -> tuple[int, int]:
  """[start, end) of this process's contiguous share of a split of ``total`` records."""
  pc, pi = jax.process_count(), jax.process_index()
  return pi * total // pc, (pi + 1) * total // pc


def local_batch_size(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size={global_batch} is not divisible by the "
                     f"{jax.process_count()} processes")
  return global_batch // jax.process_count()


@dataclasses.dataclass
class _Split:
  """This process's share of a split: indexed records and example counts."""
  records: tf.data.Dataset      # (record index in the split, decoded record)
  local_records: int
  local_examples: int
  total_examples: int
  view: View
  cfg: ml_collections.ConfigDict


# A per-row view's row key -> the metadata entry counting its rows per split.
ROW_COUNTS = {"tokens": "sentences", "instances/labels": "instances"}


def _count_rows(ds: tf.data.Dataset, key: str) -> int:
  if key not in ds.element_spec:
    raise ValueError(f"the dataset has no {key!r} field (written before it was part of the "
                     "schema?); convert it again")

  def rows(ex):
    value = ex[key]
    n = value.nrows() if isinstance(value, tf.RaggedTensor) else tf.shape(value)[0]
    return tf.cast(n, tf.int64)

  return int(ds.map(rows).reduce(tf.constant(0, tf.int64), lambda a, b: a + b))


def _split(config: Any, split: str, view: View | None = None) -> _Split:
  """This process's contiguous slice of ``split`` (TFDS file instructions: a pod does not
  read every record on every host), with its example counts under ``view`` (default: the
  model's)."""
  data_dir, meta = dataset_info(config)
  if split not in meta["splits"]:
    raise ValueError(f"split {split!r} not in dataset {data_dir} "
                     f"(splits: {sorted(meta['splits'])})")
  total = int(meta["splits"][split])
  start, end = _process_slice(total)
  if end == start:
    raise ValueError(f"split {split!r} has {total} records, fewer than the "
                     f"{jax.process_count()} processes")
  ds = reader.load_split(data_dir, f"{split}[{start}:{end}]")
  indexed = tf.data.Dataset.zip(
      tf.data.Dataset.range(start, end).map(lambda i: tf.cast(i, tf.int32)), ds)
  view = view or get_view(config.model.name)
  local, total_examples = end - start, total
  if view.per_row:
    counted = meta.get(ROW_COUNTS.get(view.per_row, ""), {}).get(split)
    local = (counted if counted is not None and jax.process_count() == 1
             else _count_rows(ds, view.per_row))
    total_examples = counted if counted is not None else local * jax.process_count()
  return _Split(indexed, end - start, local, int(total_examples), view,
                view_config(config, meta))


def num_train_examples(config: Any, meta: dict[str, Any]) -> int:
  """Examples per epoch of the training split (records, or sentences for per-sentence
  views), from the dataset metadata."""
  split = config.input.train_split
  if get_view(config.model.name).per_row == "tokens" and "sentences" in meta:
    return int(meta["sentences"].get(split, 0))
  return int(meta["splits"].get(split, 0))


def _viewed(sp: _Split, seed_fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.data.Dataset:
  """Records -> examples: the view, plus ``video_index`` and ``video_id`` per example."""
  view, cfg = sp.view, sp.cfg

  def one(index, record):
    out = dict(view.fn(record, cfg, seed_fn(index)))
    if "example_mask" not in out:   # the contract every batch relies on (View)
      raise ValueError(f"input view {getattr(view.fn, '__name__', view.fn)!r} returns no "
                       f"'example_mask' (its keys: {sorted(out)}); a view marks its real "
                       "examples with example_mask (bool, True)")
    n = tf.shape(next(iter(out.values())))[0] if view.per_row else None
    for key, value in (("video_index", index), ("video_id", record["video_id"])):
      out[key] = tf.fill([n], value) if view.per_row else value
    return out

  ds = sp.records.map(one, num_parallel_calls=tf.data.AUTOTUNE)
  if view.per_row:
    ds = ds.flat_map(tf.data.Dataset.from_tensor_slices)
  return ds


def _mix(*values) -> tf.Tensor:
  """A deterministic int64 seed from integers (FNV-style mixing)."""
  h = tf.constant(1469598103934665603 & 0x7FFFFFFFFFFFFFFF, tf.int64)
  for v in values:
    h = (h * 1099511628211 + tf.cast(v, tf.int64)) % (2**61 - 1)
  return h


def train_dataset(config: Any, position: int = 0) -> tf.data.Dataset:
  """Infinite training stream of local batches, starting after ``position`` examples.

  Each epoch is shuffled with seed ``config.seed + epoch`` (records, then examples), so the
  order is a pure function of the example position: a resumed run skips to exactly the
  example where the previous one stopped (at most one epoch of records is skipped before
  decoding into views), whatever the batch size was before.

  Args:
    position: examples of this process's stream already consumed (the trainer records the
      count in each checkpoint; a run that never changed its batch size is at
      ``step × local batch``).
  """
  sp = _split(config, config.input.train_split)
  batch = local_batch_size(config.batch_size)
  if sp.local_examples < batch:
    raise ValueError(f"split {config.input.train_split!r} has {sp.local_examples} examples "
                     f"on this process, fewer than one batch ({batch})")
  first_epoch, offset = divmod(position, sp.local_examples)
  record_buffer = min(config.input.shuffle_buffer, sp.local_records)
  example_buffer = min(config.input.shuffle_buffer, sp.local_examples)
  seed = int(config.seed)

  def epoch(e):
    records = sp.records.shuffle(record_buffer, seed=_mix(seed, e, 0),
                                 reshuffle_each_iteration=False)
    examples = _viewed(dataclasses.replace(sp, records=records),
                       lambda index: _mix(seed, e, index))
    if sp.view.per_row:
      examples = examples.shuffle(example_buffer, seed=_mix(seed, e, 1),
                                  reshuffle_each_iteration=False)
    return examples

  # Shuffle, then repeat (epochs), then batch: boundaries between epochs stay clean.
  stream = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)
  return stream.batch(batch, drop_remainder=True).prefetch(2)


def eval_dataset(config: Any, split: str,
                 view: View | None = None) -> tuple[tf.data.Dataset, int, int]:
  """Every example of ``split`` once (views seeded with 0: deterministic), padded to whole
  global batches.

  Args:
    view: the model's view by default; evaluators that look at a split differently
      (``hvt_jax.families.hse.tasks``: observed prefixes, labels) pass their own.

  Returns:
    (dataset of local batches, number of batches, number of real examples).
  """
  sp = _split(config, split, view)
  ds = _viewed(sp, lambda index: tf.constant(0, tf.int64))
  batch = local_batch_size(config.eval_batch_size)
  steps = max(1, math.ceil(sp.total_examples / config.eval_batch_size))
  n_pad = steps * batch - sp.local_examples
  pad = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec))
  pad = pad.map(lambda ex: dict(ex, video_index=tf.constant(-1, tf.int32)))
  ds = ds.concatenate(pad.repeat(n_pad)).batch(batch, drop_remainder=True)
  return ds.prefetch(2), steps, sp.total_examples


class InputStats:
  """Counts (on this process) examples whose content a static shape limit cut, and
  segments that cover no feature row (dropped from the clip level, ``ops.time_to_rows``)."""

  def __init__(self):
    self.examples = 0
    self.truncated = 0
    self.empty_segments = 0

  def update(self, batch: dict[str, np.ndarray]) -> None:
    real = batch["example_mask"].astype(bool)
    self.examples += int(real.sum())
    if "truncated" in batch:
      self.truncated += int((batch["truncated"].astype(bool) & real).sum())
    if "empty_segments" in batch:
      self.empty_segments += int(np.sum(np.where(real, batch["empty_segments"], 0)))

  def fraction(self) -> float:
    return self.truncated / max(self.examples, 1)


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local numpy batch -> global jax.Arrays sharded over the mesh's "data" axis."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _batches(ds: tf.data.Dataset, data_dir: str | None) -> Iterator[dict[str, np.ndarray]]:
  """``ds.as_numpy_iterator()``; a damaged shard met mid-run raises a FileNotFoundError
  naming it (``reader.read_error``) instead of TensorFlow's file-less DataLossError."""
  it = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
      if data_dir is None:
        raise
      raise reader.read_error(data_dir, e) from None
    yield batch


def iterate(ds: tf.data.Dataset, mesh: Mesh, view: View, stats: InputStats | None = None,
            data_dir: str | None = None
            ) -> Iterator[tuple[dict[str, jax.Array], dict[str, np.ndarray]]]:
  """Yields (global device batch, process-local host batch).

  The host batch holds ``view.host_only`` keys (``video_id``, statistics) plus
  ``example_mask`` and ``video_index``; ``stats`` (if given) counts truncated examples.
  ``data_dir`` (the dataset read) lets a read error name the damaged shard.
  """
  for batch in _batches(ds, data_dir):
    if stats is not None:
      stats.update(batch)
    host = {k: batch[k] for k in (*view.host_only, "example_mask", "video_index")
            if k in batch}
    device = {k: v for k, v in batch.items() if k not in view.host_only}
    yield to_global(device, mesh), host
