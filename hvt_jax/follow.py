"""``hvt-eval --follow``: an evaluation job beside a trainer (docs/evaluation.md).

The job waits for committed checkpoints of ``<workdir>/checkpoints`` (the one completeness
rule, ``checkpoints.complete_steps``), evaluates each new step once with the config's
evaluators (or, with ``latest_only``, only the newest when it falls behind) and:

* writes each split's metrics, predictions and plots to ``eval/<split>/step_<N>/``;
* logs the scalars to TensorBoard at step N in the job's own event directory,
  ``eval/follow-<splits>/`` (``<splits>``: the job's splits joined by ``+``), so jobs of
  other splits never share one;
* keeps ``<workdir>/best`` when ``config.evals.<name>.best`` is set and the job evaluates
  that split (``checkpoints.keep_best``);
* records the steps it has done in ``eval/follow-<splits>/state.json`` (replaced
  atomically): a restarted job goes on where it stopped.

An evaluation is committed in that order (its files are written to a scratch directory and
renamed into place, then TensorBoard, best, state), so a job killed at any point (SIGTERM,
preemption) loses at most the evaluation in progress, which the restarted job redoes.

It never writes into ``checkpoints/`` and restores with this job's own mesh, whatever the
trainer's process or device count. It stops after the run's final step (the trainer's
``training_finished.json``, ``checkpoints.finished_step``) is done, or after ``timeout``
seconds without a new checkpoint. A recorded final step below ``config.num_train_steps`` is
a finished run that a trainer is resuming for more steps (the trainer removes the file once
it starts): the job waits for those.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from typing import Any, Callable

import jax
import ml_collections
from absl import logging
from clu import metric_writers

from hvt_jax import checkpoints, train
from hvt_jax.evaluation import evaluators

STATE_FILE = "state.json"


class _Scalars:
  """A metric writer that holds the scalars until their evaluation is committed."""

  def __init__(self):
    self.written: list[tuple[int, dict[str, Any]]] = []

  def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
    self.written.append((step, dict(scalars)))


def job_dir(workdir: str, splits: list[str]) -> str:
  """``<workdir>/eval/follow-<split>[+<split>...]``: the job's events and state."""
  return os.path.join(workdir, "eval", "follow-" + "+".join(sorted(set(splits))))


def load_state(path: str) -> dict[str, list[int]]:
  """``{"evaluated": [steps], "skipped": [steps]}`` of a job's state file ({} lists if none)."""
  state = {"evaluated": [], "skipped": []}
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      state.update({k: [int(n) for n in v] for k, v in json.load(f).items()
                    if k in state})
  return state


def follow(config: ml_collections.ConfigDict, workdir: str, *,
           splits: list[str] | None = None, timeout: float = 3600.0,
           latest_only: bool = False, poll: float = 10.0,
           say: Callable[[str], None] = print,
           on_result: Callable[[int, dict[str, float]], None] | None = None) -> list[int]:
  """Evaluates the run's checkpoints as they are committed (module doc) until it ends.

  Args:
    config: the run's config (the same as the trainer's).
    workdir: the run directory; it may not exist yet (the job waits, saying so once).
    splits: the splits to evaluate (default: those of ``config.evals``).
    timeout: seconds without a new checkpoint after which the job stops (> 0).
    latest_only: when several new steps wait, evaluate only the newest (the others are
      recorded as skipped and never evaluated).
    poll: seconds between looks at the checkpoints directory.
    say: prints the job's few status lines (waiting, skipped, stopping).
    on_result: called with (step, ``{split/metric: value}``) after each committed
      evaluation.

  Returns:
    The steps evaluated by this call, ascending.

  Raises:
    ValueError: more than one process, a bad ``timeout``, ``workdir`` a parameters-only
      checkpoint (an export), or a config or split error
      (``train.setup``, the evaluators).
  """
  if jax.process_count() > 1:
    raise ValueError("hvt-eval --follow runs as one process (it may follow a trainer of "
                     "any number of processes); start it without jax.distributed")
  if not timeout > 0:
    raise ValueError(f"--timeout={timeout}: give the seconds without a new checkpoint after "
                     "which the job stops (> 0)")
  if checkpoints.is_params_only(workdir):
    raise ValueError(f"--follow: {workdir} is a parameters-only checkpoint (an hvt-export "
                     "directory or a run's best/), not a run: give the trainer's --workdir")
  s = train.setup(config)
  evals = train.build_evaluators(s, splits=splits)
  if not evals:
    raise ValueError("config.evals is empty: an eval job has nothing to evaluate")
  best = checkpoints.best_spec(config)
  out = job_dir(workdir, [ev.split for ev in evals])
  state_path = os.path.join(out, STATE_FILE)
  state = load_state(state_path)
  handled = set(state["evaluated"]) | set(state["skipped"])
  for leftover in glob.glob(os.path.join(out, ".step_*.tmp")):   # a killed evaluation's
    shutil.rmtree(leftover)
  writer = None
  done: list[int] = []
  waiting_said = False
  last_new = time.monotonic()
  directory = os.path.join(workdir, checkpoints.CHECKPOINTS)
  stale_said = False
  while True:
    final = checkpoints.finished_step(workdir)   # first: its steps are all committed by now
    if final is not None and final < int(config.get("num_train_steps") or 0):
      if not stale_said:   # a finished run that a trainer is about to resume for more steps
        say(f"{workdir}/{checkpoints.FINISHED} records step {final}, config.num_train_steps="
            f"{config.num_train_steps}: waiting for the resumed trainer")
        stale_said = True
      final = None
    todo = [n for n in checkpoints.complete_steps(directory) if n not in handled]
    if latest_only and len(todo) > 1:
      say(f"falling behind: skipping steps {todo[:-1]}, evaluating step {todo[-1]}")
      state["skipped"].extend(todo[:-1])
      handled.update(todo[:-1])
      todo = todo[-1:]
    if todo:
      step = todo[0]
      if writer is None:
        os.makedirs(out, exist_ok=True)
        writer = metric_writers.create_default_writer(out, asynchronous=False)
      results = _evaluate(s, evals, best, workdir, out, step, writer)
      if results is None:
        state["skipped"].append(step)
      else:
        state["evaluated"].append(step)
        done.append(step)
        if on_result is not None:
          on_result(step, results)
      handled.add(step)
      checkpoints.write_json(state_path, state)
      last_new = time.monotonic()
      continue
    if final is not None:
      say(f"training finished at step {final}; every checkpoint is evaluated: stopping")
      break
    if not waiting_said and not os.path.isdir(directory):
      say(f"waiting for {directory}: no run there yet (stops after {timeout:g} s without a "
          "checkpoint)")
      waiting_said = True
    if time.monotonic() - last_new > timeout:
      say(f"no new checkpoint in {directory} for {timeout:g} s: stopping")
      break
    time.sleep(poll)
  if writer is not None:
    writer.close()
  return done


def _evaluate(s: train.Setup, evals: list[Any], best: checkpoints.BestSpec | None,
              workdir: str, out: str, step: int, writer: Any) -> dict[str, float] | None:
  """Evaluates ``step`` and commits its files, scalars and best (module doc); None if the
  trainer deleted the step meanwhile (``checkpoint.max_to_keep``)."""
  step_dir = os.path.join(workdir, checkpoints.CHECKPOINTS, str(step))
  scratch = os.path.join(out, f".step_{step}.tmp")
  shutil.rmtree(scratch, ignore_errors=True)
  scalars = _Scalars()
  logging.info("evaluating step %d (%s)", step, step_dir)
  try:
    state = train.restore(s, step_dir, changed=train.config_changes(workdir, s.config))
    with jax.set_mesh(s.mesh):
      results = evaluators.run_all(evals, state, step, scalars, scratch)
  except Exception:  # pylint: disable=broad-except
    if checkpoints.is_complete(step_dir):
      raise
    logging.warning("step %d was deleted while it was evaluated (the trainer keeps "
                    "checkpoint.max_to_keep steps): skipped", step)
    shutil.rmtree(scratch, ignore_errors=True)
    return None
  if best is not None:   # a best metric the split lacks: an error before anything is committed
    checkpoints.best_metrics(best, results)
  for split in sorted({ev.split for ev in evals}):
    target = os.path.join(workdir, "eval", split, f"step_{step}")
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(os.path.join(scratch, "eval", split), target)
  shutil.rmtree(scratch)
  for n, values in scalars.written:
    writer.write_scalars(n, values)
  writer.flush()
  if best is not None:
    checkpoints.keep_best(best, results, state["params"], step, workdir)
  return results
