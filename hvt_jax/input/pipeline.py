"""tf.data pipelines from canonical TFRecords to global, sharded jax.Array batches.

One pipeline for every family: the family only contributes its *view* (``VIEWS``).
Train: per-process shard, per-epoch seeded shuffle, exact resume, view, batch.
Eval: every example exactly once, the last batch padded with ``example_mask = False``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from data_prep import writer
from hvt_jax.input import hse_view, ops

# Model name -> view builder: (decoded example, config.input) -> fixed-shape features.
VIEWS: dict[str, Callable[..., dict[str, tf.Tensor]]] = {
    "hse": hse_view.hse_view,
    "fse": hse_view.hse_view,
}
# Host-side statistics that a view returns but models do not consume.
_STAT_KEYS = ("truncated", "empty_segments")


def get_view(model_name: str) -> Callable[..., dict[str, tf.Tensor]]:
  if model_name not in VIEWS:
    raise ValueError(f"no input view for model {model_name!r}; valid: {sorted(VIEWS)}")
  return VIEWS[model_name]


def view_config(config: Any, meta: dict[str, Any]) -> ml_collections.ConfigDict:
  """``config.input`` with dataset-dependent defaults resolved for the views.

  ``clip_rule="auto"`` becomes the dataset's stated rule (``ops.default_clip_rule``:
  "center" for DiDeMo's index-derived moments, else the released HSE code's "authors").
  """
  cfg = ml_collections.ConfigDict(config.input.to_dict())
  if cfg.get("clip_rule", "auto") == "auto":
    cfg.clip_rule = ops.default_clip_rule(meta.get("name", ""))
  return cfg


def dataset_info(config: Any) -> tuple[str, dict[str, Any]]:
  """Returns (dataset dir, metadata) for ``config.input.data_dir``."""
  data_dir = writer.find_dataset_dir(config.input.data_dir,
                                     config.input.get("dataset") or None)
  return data_dir, writer.load_metadata(data_dir)


def _process_slice(total: int) -> tuple[int, int]:
  """[start, end) of this process's contiguous share of a split of ``total`` examples."""
  pc, pi = jax.process_count(), jax.process_index()
  return pi * total // pc, (pi + 1) * total // pc


def local_batch_size(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size={global_batch} is not divisible by the "
                     f"{jax.process_count()} processes")
  return global_batch // jax.process_count()


def _views(config: Any, split: str) -> tuple[tf.data.Dataset, int, int, Callable]:
  """This process's share of ``split``: (decoded examples, local count, global count, view).

  Each process reads only its own contiguous slice of records (TFDS file instructions), so
  a pod does not read every record on every host.
  """
  data_dir, meta = dataset_info(config)
  if split not in meta["splits"]:
    raise ValueError(f"split {split!r} not in dataset {data_dir} "
                     f"(splits: {sorted(meta['splits'])})")
  total = int(meta["splits"][split])
  start, end = _process_slice(total)
  if end == start:
    raise ValueError(f"split {split!r} has {total} examples, fewer than the "
                     f"{jax.process_count()} processes")
  ds = writer.load_split(data_dir, f"{split}[{start}:{end}]")
  view, cfg = get_view(config.model.name), view_config(config, meta)
  return ds, end - start, total, lambda ex: view(ex, cfg)


def train_dataset(config: Any, start_step: int = 0) -> tf.data.Dataset:
  """Infinite training stream of local batches, positioned at ``start_step``.

  Each epoch is shuffled with seed ``config.seed + epoch``, so the order is a pure function
  of the step: a resumed run skips to exactly the example where the previous one stopped
  (at most one epoch of records is skipped, before decoding into views).
  """
  ds, n_local, _, view = _views(config, config.input.train_split)
  batch = local_batch_size(config.batch_size)
  if n_local < batch:
    raise ValueError(f"split {config.input.train_split!r} has {n_local} examples on this "
                     f"process, fewer than one batch ({batch})")
  position = start_step * batch
  first_epoch, offset = divmod(position, n_local)
  buffer = min(config.input.shuffle_buffer, n_local)

  def epoch(e):
    return ds.shuffle(buffer, seed=tf.cast(config.seed, tf.int64) * 100003 + e,
                      reshuffle_each_iteration=False)

  # Shuffle, then repeat (epochs), then map: boundaries between epochs stay clean.
  stream = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)
  stream = stream.map(view, num_parallel_calls=tf.data.AUTOTUNE)
  return stream.batch(batch, drop_remainder=True).prefetch(2)


def eval_dataset(config: Any, split: str) -> tuple[tf.data.Dataset, int, int]:
  """Every example of ``split`` once, padded to whole global batches.

  Returns:
    (dataset of local batches, number of batches, number of real examples).
  """
  ds, n_local, total, view = _views(config, split)
  ds = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE)
  batch = local_batch_size(config.eval_batch_size)
  steps = max(1, math.ceil(total / config.eval_batch_size))
  n_pad = steps * batch - n_local
  pad = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec))
  ds = ds.concatenate(pad.repeat(n_pad)).batch(batch, drop_remainder=True)
  return ds.prefetch(2), steps, total


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
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items() if k not in _STAT_KEYS}


def iterate(ds: tf.data.Dataset, mesh: Mesh,
            stats: InputStats | None = None) -> Iterator[dict[str, jax.Array]]:
  """Yields global batches; ``stats`` (if given) counts truncated examples."""
  for batch in ds.as_numpy_iterator():
    if stats is not None:
      stats.update(batch)
    yield to_global(batch, mesh)
