"""Which checkpoints of a run are complete, and read-only access to them.

A run's checkpoints live in ``<workdir>/checkpoints/<step>/`` (orbax ``CheckpointManager``
layout, one ``default`` item holding the train state). This module is the one rule for
"which steps are complete", used by the trainer's resume, ``config.init_from``
(``format="checkpoint"``) and ``hvt-eval``:

* a step directory is a name orbax counts as a finalised step (``ocp.step.checkpoint_steps``:
  digits, no ``.orbax-checkpoint-tmp`` suffix), **and**
* its ``_CHECKPOINT_METADATA`` (read with orbax's metadata reader) records a commit time, and
  every item it lists is, by orbax's format checks (``ocp.path.format_utils``), an OCDBT
  pytree checkpoint: its ``_METADATA`` and ``manifest.ocdbt`` are there.

The second check exists because on local disk orbax takes any digit-named ``N/`` as
finalised, even one copied without its markers (an interrupted ``cp -r``, a file sync, a full
disk), and restoring it fails with a tensorstore ``NOT_FOUND`` far from the cause.

Everything about a run's ``checkpoints/`` here except ``set_aside_incomplete`` is
read-only: an evaluation job may run beside a live trainer without touching its in-flight
save (``N.orbax-checkpoint-tmp-*``). Only the trainer (the writer) sets aside or cleans up
its own leftovers.

**Parameters-only checkpoints** (``<run>/best/``, an ``hvt-export`` directory): a directory
holding ``<N>/default/`` (the ``params`` of step N, orbax's pytree format, no optimizer
state) and ``model.json`` (``{"step": N, "params": "<N>", ...}``: which step dir is current,
with its metrics). ``model.json`` is written last and replaced atomically, so it is the
commit: a directory without it holds no checkpoint. ``resolve`` and ``restore`` read such a
directory like a run (``init_from`` with ``source=<run>/best``, ``hvt-eval --step best``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import shutil
import time
from collections.abc import Iterator
from typing import IO, Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

CHECKPOINTS = "checkpoints"
ITEM = "default"
MODEL_FILE = "model.json"      # the commit of a parameters-only checkpoint
BEST = "best"                  # <run>/best: the best step so far (config.evals.<name>.best)
FINISHED = "training_finished.json"   # <run>/...: the trainer reached its final step


def is_complete(step_dir: str) -> bool:
  """Whether ``step_dir`` (``.../checkpoints/N``) is a committed orbax step (module doc)."""
  if not os.path.isdir(step_dir):
    return False
  try:
    meta = ocp.metadata.get_step_metadata(step_dir)
  except (OSError, ValueError, TypeError, KeyError):
    return False
  items = meta.item_handlers or {ITEM: None}
  items = items if isinstance(items, dict) else {ITEM: items}
  formats = ocp.path.format_utils
  return bool(meta.commit_timestamp_nsecs) and all(
      formats.is_ocdbt_checkpoint(path) and formats.is_pytree_checkpoint(path)
      for path in (pathlib.Path(step_dir) / item for item in items))


def checkpoints_dir(source: str) -> str:
  """``<run>/checkpoints`` for a run dir; a ``checkpoints`` dir itself is returned as is."""
  path = os.path.abspath(source)
  nested = os.path.join(path, CHECKPOINTS)
  return nested if os.path.isdir(nested) else path


def complete_steps(directory: str) -> list[int]:
  """The complete steps of a ``checkpoints`` dir (or a run dir), ascending; [] if none."""
  directory = checkpoints_dir(directory)
  if not os.path.isdir(directory):
    return []
  return sorted(s for s in ocp.step.checkpoint_steps(directory)
                if is_complete(os.path.join(directory, str(s))))


def _is_step_dir(path: str) -> bool:
  name = os.path.basename(os.path.normpath(path))
  return name.isdigit() and os.path.isdir(path)


def resolve(source: str, step: int | None = None, what: str = "checkpoint") -> tuple[str, int]:
  """The step directory a user means: a run dir, its ``checkpoints`` dir or one step dir.

  Args:
    source: ``<run>``, ``<run>/checkpoints`` or ``<run>/checkpoints/<N>``.
    step: a step of ``source`` (a run or checkpoints dir); None = the latest complete one.
    what: how the caller names the source in errors (``"init_from[0]"``, ``"--workdir"``).

  Returns:
    (step directory, step).

  Raises:
    FileNotFoundError: no complete step; or ``step`` (or the step dir given) does not exist.
    ValueError: the step named (by ``step`` or as a step dir) exists but is incomplete.
  """
  path = os.path.abspath(source)
  if is_params_only(path):
    info = params_info(path)
    if step is not None and step != info["step"]:
      raise ValueError(f"{what}: {path} is a parameters-only checkpoint of step "
                       f"{info['step']}, not step {step}")
    return os.path.join(path, info["params"]), int(info["step"])
  if _is_step_dir(path) and not os.path.isdir(os.path.join(path, CHECKPOINTS)):
    if step is not None and int(os.path.basename(path)) != step:
      raise ValueError(f"{what}: {path} is step {os.path.basename(path)}, not step {step}")
    step_dir, step = path, int(os.path.basename(path))
  else:
    directory = checkpoints_dir(path)
    steps = complete_steps(directory)
    if step is None:
      if not steps:
        raise FileNotFoundError(f"{what}: no complete checkpoint in {directory}"
                                f"{_incomplete_note(directory)}")
      step = steps[-1]
    step_dir = os.path.join(directory, str(step))
    if step not in steps and not os.path.isdir(step_dir):
      raise FileNotFoundError(f"{what}: no checkpoint for step {step} in {directory} "
                              f"(complete steps: {steps or 'none'})")
  if not is_complete(step_dir):
    if not os.path.isdir(step_dir):
      raise FileNotFoundError(f"{what}: checkpoint {step_dir} does not exist")
    raise ValueError(f"{what}: checkpoint {step_dir} is incomplete (no orbax commit markers: "
                     "an interrupted save or copy); use another step "
                     f"(complete: {complete_steps(os.path.dirname(step_dir)) or 'none'})")
  return step_dir, step


def _incomplete_note(directory: str) -> str:
  if not os.path.isdir(directory):
    return " (the directory does not exist)"
  other = sorted(n for n in os.listdir(directory) if n.split(".")[0].isdigit())
  return f" (incomplete or in progress: {other})" if other else ""


def restore(step_dir: str, target: Any = None) -> Any:
  """Reads the state saved in ``step_dir`` (read-only).

  Args:
    step_dir: a complete step directory (``resolve``).
    target: an abstract tree of ``jax.ShapeDtypeStruct`` with shardings, or None for host
      numpy arrays (whatever devices and processes saved them).
  """
  with ocp.StandardCheckpointer() as ckptr:
    item = os.path.join(step_dir, ITEM)
    if target is not None:
      return ckptr.restore(item, target)
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                          _saved_tree(ckptr, item))
    return jax.tree.map(np.asarray, ckptr.restore(item, target))


def _saved_tree(ckptr: ocp.StandardCheckpointer, item: str) -> Any:
  """The tree of array metadata (shape, dtype) saved in ``item`` (None for old formats)."""
  meta = ckptr.metadata(item)
  tree = getattr(meta, "item_metadata", meta)
  return getattr(tree, "tree", tree)


def saved_shapes(step_dir: str) -> dict[tuple[Any, ...], tuple[int, ...]] | None:
  """{key path: shape} of the arrays saved in ``step_dir`` (metadata only), or None."""
  with ocp.StandardCheckpointer() as ckptr:
    tree = _saved_tree(ckptr, os.path.join(step_dir, ITEM))
  if tree is None:
    return None
  return {k: tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]
          if hasattr(v, "shape")}


def commit_time(step_dir: str) -> int:
  """Orbax's commit time (ns since the epoch) of a complete step: a run's
  (``checkpoints/N``) or a parameters-only checkpoint's (``best/N``, an export's ``N``,
  whose metadata is its item's, ``N/default``)."""
  path = os.path.join(step_dir, ITEM) if params_only(step_dir) else step_dir
  return int(ocp.metadata.get_step_metadata(path).commit_timestamp_nsecs)


def custom_metadata(step_dir: str) -> dict[str, Any]:
  """The ``custom_metadata`` the trainer saved with a step ({} for older checkpoints)."""
  return dict(ocp.metadata.get_step_metadata(step_dir).custom_metadata or {})


def set_aside_incomplete(directory: str) -> list[str]:
  """Trainer only: renames digit-named step dirs that were never committed to
  ``N.incomplete-<time>``.

  They are kept (never deleted: the user may want them) but no longer count as steps, so a
  later save of step N is not blocked. Process 0 renames; every process then sees the same
  directory. Evaluation jobs never call this (they are read-only on a run's checkpoints).

  Returns:
    The new paths of the directories set aside (each also logged as a warning).
  """
  moved = []
  if jax.process_index() == 0 and os.path.isdir(directory):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in sorted(os.listdir(directory)):
      path = os.path.join(directory, name)
      if name.isdigit() and os.path.isdir(path) and not is_complete(path):
        new = f"{path}.incomplete-{stamp}"
        os.rename(path, new)
        logging.warning("checkpoint step %s in %s has no commit markers (an interrupted copy?):"
                        " set aside as %s; resuming from the last complete step", name,
                        directory, new)
        moved.append(new)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("hvt_jax:set_aside_incomplete_steps")
  return moved


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w") -> Iterator[IO[Any]]:
  """A file to write that replaces ``path`` when the block ends without an error: a
  temporary file beside it, then ``os.replace``, so a reader sees the old content or the
  new, never a part; after an error the temporary file is removed and ``path`` is kept."""
  tmp = f"{path}.tmp-{os.getpid()}-{time.monotonic_ns()}"
  try:
    with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON to ``path`` atomically (``atomic_file``)."""
  with atomic_file(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True)


def _read_json(path: str) -> dict[str, Any]:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


# -- the finished marker ----------------------------------------------------------------


def mark_finished(workdir: str, step: int) -> None:
  """Trainer only (process 0), after its last save is committed: ``<workdir>/training_finished
  .json`` = ``{"step": final step, "time": ...}``, which ends ``hvt-eval --follow`` jobs."""
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, FINISHED),
               {"step": int(step), "time": datetime.datetime.now().isoformat()})


def clear_finished(workdir: str) -> None:
  """Trainer only (process 0), at start: a resumed run (more steps) is not finished."""
  path = os.path.join(workdir, FINISHED)
  if jax.process_index() == 0 and os.path.exists(path):
    os.remove(path)


def finished_step(workdir: str) -> int | None:
  """The final step the trainer recorded (``mark_finished``), or None while it trains."""
  path = os.path.join(workdir, FINISHED)
  return int(_read_json(path)["step"]) if os.path.isfile(path) else None


# -- parameters-only checkpoints (best/, exports) ----------------------------------------


def is_params_only(path: str) -> bool:
  """Whether ``path`` is a committed parameters-only checkpoint (module doc)."""
  return os.path.isfile(os.path.join(path, MODEL_FILE))


def params_only(step_dir: str) -> bool:
  """Whether ``step_dir`` (from ``resolve``) is the step of a parameters-only checkpoint."""
  return is_params_only(os.path.dirname(os.path.abspath(step_dir)))


def params_info(path: str) -> dict[str, Any]:
  """``model.json`` of the parameters-only checkpoint ``path``: ``step``, ``params`` (the
  step dir's name) and what its writer added (the best metric, the source run, ...)."""
  return _read_json(os.path.join(path, MODEL_FILE))


def save_params(directory: str, params: Any, step: int, info: dict[str, Any]) -> str:
  """Writes ``params`` as step ``step`` of the parameters-only checkpoint ``directory``,
  then commits it: ``model.json`` = ``{"step", "params", **info}``, replaced atomically (the
  previous checkpoint stays readable until then). The step dir ``model.json`` named before
  is kept (a reader may be restoring it); older ones are removed.

  Every process calls it (orbax writes sharded arrays collectively); process 0 commits.

  Args:
    directory: e.g. ``<run>/best`` or an export directory; made if absent.
    params: the parameter tree (an ``nnx.State`` of arrays, sharded or host).
    step: the training step the parameters are from.
    info: JSON-serialisable fields stored in ``model.json`` beside the step.

  Returns:
    The step directory written (``<directory>/<step>``).
  """
  directory = os.path.abspath(directory)
  step_dir = os.path.join(directory, str(step))
  item = pathlib.Path(step_dir, ITEM)
  previous = params_info(directory)["params"] if is_params_only(directory) else None
  formats = ocp.path.format_utils
  if not (formats.is_ocdbt_checkpoint(item) and formats.is_pytree_checkpoint(item)):
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(str(item), {"params": params})
  if jax.process_index() == 0:
    write_json(os.path.join(directory, MODEL_FILE),
               {**info, "step": int(step), "params": str(step)})
    for name in os.listdir(directory):
      if name.isdigit() and name not in (str(step), previous):
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("hvt_jax:save_params")
  return step_dir


# -- the best checkpoint ----------------------------------------------------------------

BEST_FIELDS = ("best", "best_mode")   # of config.evals.<name>, read here, not by evaluators
BEST_MODES = ("max", "min")


class BestSpec:
  """Which metric keeps ``<run>/best``: ``config.evals.<name>.best`` (a metric name of the
  evaluator's split as in its metrics.json, e.g. ``"p2v/R@1"``) and ``best_mode``
  (``"max"``, the default: higher is better; ``"min"``: lower is better, e.g. ``MdR``)."""

  def __init__(self, name: str, split: str, metric: str, mode: str):
    self.name, self.split, self.metric, self.mode = name, split, metric, mode

  def better(self, value: float, than: float) -> bool:
    """Strictly better (a tie keeps the earlier step; NaN is never better)."""
    return bool(value > than if self.mode == "max" else value < than)

  def same(self, info: dict[str, Any]) -> bool:
    """Whether a ``best/model.json`` was kept by this metric, split and direction."""
    return (info.get("metric"), info.get("split"), info.get("mode")) == (
        self.metric, self.split, self.mode)


def best_spec(config: Any) -> BestSpec | None:
  """The ``config.evals`` entry with a ``best`` metric, or None.

  Raises:
    ValueError: two entries with ``best`` (one best checkpoint per run), ``best_mode`` not
      in ``BEST_MODES``, or ``best_mode="min"`` without ``best``.
  """
  specs = []
  for name, cfg in (config.get("evals") or {}).items():
    metric, mode = cfg.get("best"), cfg.get("best_mode", "max")
    if not metric:
      if mode != "max":
        raise ValueError(f"config.evals.{name}.best_mode is set but config.evals.{name}.best "
                         "(the metric) is not")
      continue
    if mode not in BEST_MODES:
      raise ValueError(f"config.evals.{name}.best_mode={mode!r}; valid: 'max' (higher is "
                       "better) or 'min' (lower is better)")
    specs.append(BestSpec(name, cfg.get("split"), str(metric), mode))
  if len(specs) > 1:
    raise ValueError(f"config.evals.{specs[0].name}.best and config.evals.{specs[1].name}.best"
                     " are both set: a run keeps one best checkpoint (set best on one entry)")
  return specs[0] if specs else None


def best_metrics(spec: BestSpec, results: dict[str, float]) -> dict[str, float]:
  """The metrics of ``spec``'s split in ``results`` (``{split/metric: value}``), without the
  ``<split>/`` prefix; {} when ``results`` lack the split.

  Raises:
    ValueError: the split was evaluated but has no ``spec`` metric (lists its metrics).
  """
  prefix = f"{spec.split}/"
  metrics = {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}
  if metrics and spec.metric not in metrics:
    raise ValueError(f"config.evals.{spec.name}.best={spec.metric!r} is not a metric of split "
                     f"{spec.split!r}; its metrics: {sorted(metrics)}")
  return metrics


def keep_best(spec: BestSpec, results: dict[str, float], params: Any, step: int,
              workdir: str) -> bool:
  """Makes ``<workdir>/best`` the parameters of ``step`` if its ``spec`` metric in
  ``results`` (``{split/metric: value}``) beats the kept one's (``save_params``, with
  ``metric``, ``split``, ``mode``, ``value`` and the split's ``metrics`` in model.json). A
  best kept under another metric or direction is replaced (and that logged).

  Returns:
    Whether ``best`` now holds ``step``; False also when ``results`` lack the split.

  Raises:
    ValueError: the split was evaluated but has no such metric (lists its metrics).
  """
  metrics = best_metrics(spec, results)
  if not metrics:
    return False
  value = float(metrics[spec.metric])
  directory = os.path.join(workdir, BEST)
  kept = params_info(directory) if is_params_only(directory) else None
  if kept is not None and kept["step"] == step and spec.same(kept):
    return True     # a restarted job redoing the step it kept
  save = bool(np.isfinite(value)) and (kept is None or not spec.same(kept)
                                       or spec.better(value, float(kept["value"])))
  if jax.process_count() > 1:   # one decision for the collective save
    save = bool(multihost_utils.broadcast_one_to_all(np.int32(save)))
  if not save:
    return False
  if kept is not None and not spec.same(kept):
    logging.warning("%s was kept by %s %s/%s: replaced by %s %s/%s", directory,
                    kept.get("mode"), kept.get("split"), kept.get("metric"), spec.mode,
                    spec.split, spec.metric)
  save_params(directory, params, step, {"metric": spec.metric, "split": spec.split,
                                        "mode": spec.mode, "value": value,
                                        "metrics": {k: float(v) for k, v in metrics.items()}})
  logging.info("best %s %s = %.4g at step %d: saved to %s", spec.split, spec.metric, value,
               step, directory)
  return True
