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

Everything here except ``set_aside_incomplete`` is read-only: an evaluation job may run
beside a live trainer without touching its in-flight save (``N.orbax-checkpoint-tmp-*``).
Only the trainer (the writer) sets aside or cleans up its own leftovers.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

CHECKPOINTS = "checkpoints"
ITEM = "default"


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
      numpy arrays as saved.
  """
  with ocp.StandardCheckpointer() as ckptr:
    item = os.path.join(step_dir, ITEM)
    return ckptr.restore(item, target) if target is not None else ckptr.restore(item)


def saved_shapes(step_dir: str) -> dict[tuple[Any, ...], tuple[int, ...]] | None:
  """{key path: shape} of the arrays saved in ``step_dir`` (metadata only), or None."""
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(os.path.join(step_dir, ITEM))
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  if tree is None:
    return None
  return {k: tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]
          if hasattr(v, "shape")}


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
