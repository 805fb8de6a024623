"""Streaming a split through a model and ranking a corpus: what every evaluator shares.

``stream`` runs a jitted function of (params, batch) over a split once, gathers the
outputs of the real rows (every process sees all rows, in global-batch order) and the
host-side strings it is asked for; ``score_fn`` adapts the prediction function ``score`` to
the device-side scorer (``evaluation.scorer``). Every evaluator builds on these.

Empty videos. A video with nothing to encode it from gets an encoding of padding only (for
HSE all zeros) that scores the same against everything, yet would count in R@k/MdR as an
all-ties entry. Each family's video view says which videos those are, from its inputs, in
a per-example ``empty_video`` flag (HSE/FSE: no clip, i.e. no segment covers a feature row,
``families/hse/view.py``; MCHA: no expert has a row, ``families/mcha/view.py``
``video_view``; HAMMER/FLAT: no row in any stream read, ``families/hammer/view.py``
``video_view``). ``stream(empty=True)`` returns it, and every
evaluator that ranks passes it to ``non_empty``: such videos are left out of the ranked set
on both sides (as queries and as candidates, with their texts), counted in the metrics as
``num_empty_videos`` and named in a warning. Left out rather than encoded from what remains
(the words, a whole-video context): what remains does not carry the annotated content
(HSE: the features end before the annotated moments), so the entry would measure the data
fault, not the model; and the same videos then drop out of every evaluator of the family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import json
import os
import zipfile
from typing import Any, Callable, Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from hvt_jax import checkpoints
from hvt_jax.evaluation import scorer
from hvt_jax.input import pipeline

# The views' per-example flag of a video with nothing to encode (module docstring).
EMPTY = "empty_video"


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What an evaluator receives (built by the trainer): the model's prediction functions
  and the data. Evaluators never see the model's name or the trainer's state.

  Attributes:
    preds: the prediction functions by name (``hvt_jax.models.base.PredictFns``:
      ``preds[name](params, *args)``); ``config.evals.<name>.pred`` picks among them.
    config: the run config, for the input (``config.input``, ``eval_batch_size``,
      ``progress_bar``) and any model field an evaluator's option refers to.
    mesh: the device mesh the batches are placed on.
    meta: the dataset's metadata (``hvt_jax.input.reader.load_metadata``).
    data_dir: the dataset directory.
    views: the family's input views by name; ``view`` is the model's own.
  """
  preds: Mapping[str, Callable[..., Any]]
  config: Any
  mesh: Mesh
  meta: dict[str, Any]
  data_dir: str
  views: Mapping[str, pipeline.View]
  view: pipeline.View

  def pred(self, name: str, evaluator: str) -> Callable[..., Any]:
    """The prediction function ``name``.

    Raises:
      ValueError: the model has no such prediction function (names the evaluator and the
        functions the model has).
    """
    if name not in self.preds:
      raise ValueError(f"{evaluator} evaluator: the model has no prediction function "
                       f"{name!r}; it has {list(self.preds)}")
    return self.preds[name]

  def get_view(self, name: str, evaluator: str) -> pipeline.View:
    """The family's input view ``name``.

    Raises:
      ValueError: the family has no such view (names the evaluator and the valid views).
    """
    if name not in self.views:
      raise ValueError(f"{evaluator} evaluator: the model's family has no input view "
                       f"{name!r}; it has {sorted(self.views)}")
    return self.views[name]


@functools.cache
def _encode_pair(encode_query: Callable[..., Any], encode_candidate: Callable[..., Any]):
  return jax.jit(lambda params, batch: (encode_query(params, batch),
                                        encode_candidate(params, batch)))


def encode_fn(ctx: EvalContext, evaluator: str = "retrieval"):
  """One jitted ``(params, batch) -> (encode_query, encode_candidate)`` per model graph,
  reused across splits."""
  return _encode_pair(ctx.pred("encode_query", evaluator),
                      ctx.pred("encode_candidate", evaluator))


@functools.cache
def score_fn(score: Callable[..., Any], reverse: bool):
  """The prediction function ``score(params, query, candidate)`` as the scorer calls it
  (stable: compiled once).

  ``reverse``: the queries are candidate encodings (videos) and the candidates query
  encodings (texts): score(text block, video block) transposed.
  """

  def fn(q, c, params):
    return score(params, c, q).T if reverse else score(params, q, c)

  return fn


def allgather_strings(values: list[str]) -> list[str]:
  """Concatenates every process's strings in process order (UTF-8 as padded bytes; every
  process contributes an array of the same shape, as collectives require)."""
  if jax.process_count() == 1:
    return list(values)
  data = [v.encode("utf-8") for v in values]
  sizes = multihost_utils.process_allgather(
      np.asarray([len(data), max(map(len, data), default=1)]))
  rows_per, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
  arr = np.zeros((rows_per, width), np.uint8)
  for i, d in enumerate(data):
    arr[i, :len(d)] = np.frombuffer(d, np.uint8)
  rows = multihost_utils.process_allgather(arr, tiled=True).reshape(-1, rows_per, width)
  return [bytes(r).rstrip(b"\0").decode("utf-8")
          for proc, n in zip(rows, sizes[:, 0]) for r in proc[:n]]


def ranking_mesh(mesh: Mesh) -> Mesh:
  """The training mesh with one process; each process's own devices otherwise (every
  process then ranks the gathered encodings; the scorer places inputs from its host)."""
  if jax.process_count() == 1:
    return mesh
  return Mesh(np.array(jax.local_devices()).reshape(-1, 1), ("data", "model"))


def host_params(state: dict[str, Any]) -> Any:
  """The parameters as the ranking mesh needs them (gathered when several processes)."""
  params = state["params"]
  if jax.process_count() > 1:
    params = multihost_utils.process_allgather(params, tiled=True)
  return params


def stream(ctx: EvalContext, split: str, fn: Callable[[Any, Any], Any], params: Any, *,
           view: pipeline.View | None = None, strings: tuple[str, ...] = (),
           stats: pipeline.InputStats | None = None, empty: bool = False
           ) -> Iterator[tuple[Any, dict[str, Any]]]:
  """Runs jitted ``fn(params, batch)`` over every example of ``split`` once.

  Args:
    view: the input view (default: the model's, ``ctx.view``).
    strings: host-only string keys to gather (e.g. ``video_id``, ``label``).
    stats: counts truncated examples and empty segments (this process's share).
    empty: also gather the view's ``EMPTY`` flag (module docstring).

  Yields:
    (outputs of the batch's real rows as numpy, {"video_index": [n], <string key>: [n],
    and with ``empty`` ``EMPTY``: [n] bool}), in global-batch order on every process.

  Raises:
    ValueError: ``empty`` and the view sets no ``EMPTY`` flag.
    RuntimeError: the number of real rows differs from the split's example count.
  """
  view = view or ctx.view
  ds, steps, total = pipeline.eval_dataset(ctx.config, split, view)
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  batches = tqdm.tqdm(
      pipeline.iterate(ds, ctx.mesh, view, stats, data_dir=ctx.data_dir), total=steps,
      desc=f"eval {split}",
      leave=False,
      disable=jax.process_index() > 0 or not ctx.config.get("progress_bar", True))
  seen = 0
  for batch, host in batches:
    out = multihost_utils.process_allgather(fn(params, batch), tiled=True)
    mask, index = (multihost_utils.process_allgather(host[k], tiled=True)
                   for k in ("example_mask", "video_index"))
    mask = mask.astype(bool)
    rows = {"video_index": index[mask]}
    if empty:
      if EMPTY not in host:
        raise ValueError(f"the input view {view.fn.__name__!r} sets no {EMPTY!r} flag: "
                         "which videos have nothing to encode is unknown")
      rows[EMPTY] = multihost_utils.process_allgather(host[EMPTY], tiled=True)[mask]
    for key in strings:
      values = allgather_strings([v.decode("utf-8") for v in host[key]])
      rows[key] = [v for v, m in zip(values, mask) if m]
    seen += int(mask.sum())
    yield jax.tree.map(lambda x: np.asarray(x)[mask], out), rows
  if seen != total:
    raise RuntimeError(f"evaluated {seen} examples of split {split!r}, expected {total}")


def non_empty(empty: np.ndarray, video_ids: Sequence[str], what: str) -> np.ndarray:
  """The positions of the videos to rank: those whose ``EMPTY`` flag is False.

  The others are to be left out on both sides (module docstring); a warning names how many
  and the first few ids.

  Args:
    empty: [N] bool, the videos' ``EMPTY`` flags from ``stream``.
    video_ids: [N] their ids.
    what: the evaluator and split, and what empty means there, for the message.

  Returns:
    [M] int64 sorted positions, M = N - empty.sum().

  Raises:
    ValueError: every video is empty (nothing to rank).
  """
  empty = np.asarray(empty, bool)
  keep = np.flatnonzero(~empty)
  if empty.any():
    names = [video_ids[i] for i in np.flatnonzero(empty)[:5]]
    if not keep.size:
      raise ValueError(f"{what}: all {empty.size} videos are empty; nothing to rank")
    logging.warning("%s: %d of %d videos are empty, left out of the ranking on both sides "
                    "(num_empty_videos): %s%s", what, int(empty.sum()), empty.size,
                    ", ".join(names), ", ..." if empty.sum() > len(names) else "")
  return keep


def take(tree: Any, rows: np.ndarray) -> Any:
  """The rows ``rows`` of every array of a host pytree."""
  return jax.tree.map(lambda x: np.asarray(x)[rows], tree)


# --------------------------------------------------------------------------------------
# Encodings on disk (free-text queries, ``evaluation.query``: one corpus encoding per
# checkpoint step, split and evaluator).

_FINGERPRINT, _DTYPES = "__fingerprint__", "__dtypes__"


def save_encodings(path: str, tree: dict[str, Any], fingerprint: dict[str, Any]) -> None:
  """Writes a host tree (nested dicts of arrays, lists of strings) and the ``fingerprint``
  of what produced it to ``path`` (.npz) atomically (``checkpoints.atomic_file``): a reader
  sees the old file or the new one, never a part."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}
  # ml_dtypes (bfloat16, ...) would be read back as raw bytes: stored as unsigned ints of
  # their width, with their names.
  dtypes = {k: v.dtype.name for k, v in flat.items() if v.dtype.kind == "V"}
  flat.update({k: flat[k].view(f"u{flat[k].dtype.itemsize}") for k in dtypes})
  flat[_DTYPES] = np.asarray(json.dumps(dtypes))
  flat[_FINGERPRINT] = np.asarray(json.dumps(fingerprint, sort_keys=True, default=str))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with checkpoints.atomic_file(path, "wb") as f:
    np.savez(f, **flat)


def load_encodings(path: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
  """The tree ``save_encodings`` wrote to ``path`` when it was written with the same
  ``fingerprint``; None when there is no such file, it has another fingerprint or cannot
  be read (logged: the caller encodes again and overwrites it)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    logging.warning("%s: unreadable encodings cache (%s); encoding again", path, e)
    return None
  if str(flat.pop(_FINGERPRINT, "")) != json.dumps(fingerprint, sort_keys=True, default=str):
    logging.info("%s: written for another checkpoint or config; encoding again", path)
    return None
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  for k, name in json.loads(str(flat.pop(_DTYPES))).items():
    flat[k] = flat[k].view(np.dtype(getattr(ml_dtypes, name)))
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
