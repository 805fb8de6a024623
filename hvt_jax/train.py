"""train_and_evaluate(config, workdir): the one trainer for every model family.

Mesh from ``config.mesh``; parameters placed from their logical names; one jitted train
step (model + losses + optax) over global batches sharded on "data", so contrastive losses
see the global batch; orbax checkpoints (async, resumable, SIGTERM-safe); clu metric
writers (TensorBoard + logs); evaluators run in the loop and from ``hvt-eval``.
"""

from __future__ import annotations

import dataclasses
import datetime
import filecmp
import glob
import json
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions
from flax import nnx
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hvt_jax.input import reader
from hvt_jax import checkpoints, families, flops, pretrained, schedules, sharding
from hvt_jax.evaluation import corpus, evaluators
from hvt_jax.input import pipeline
from hvt_jax.models import base

State = dict[str, Any]


@dataclasses.dataclass
class Setup:
  """What a run needs besides its state: built once per process."""
  config: ml_collections.ConfigDict
  mesh: Mesh
  meta: dict[str, Any]
  data_dir: str
  graphdef: Any
  tx: optax.GradientTransformation
  state_shardings: Any
  steps_per_epoch: int
  num_train_steps: int


def eval_context(s: Setup) -> corpus.EvalContext:
  """What the evaluators receive: the model's prediction functions (its class's
  ``PREDICT_FNS``, ``models.base.PredictFns``) and the data, never the trainer's setup."""
  family = families.of_model(s.config.model.name)
  model_cls = family.models[s.config.model.name]
  return corpus.EvalContext(
      preds=base.PredictFns(s.graphdef, getattr(model_cls, "PREDICT_FNS", ())),
      config=s.config, mesh=s.mesh, meta=s.meta, data_dir=s.data_dir, views=family.views,
      view=family.views[s.config.model.name])


def build_evaluators(s: Setup, splits: list[str] | None = None) -> list[Any]:
  """``config.evals`` built over ``eval_context(s)``: the shared evaluator types and the
  model family's own (``evaluators.from_config``)."""
  family = families.of_model(s.config.model.name)
  return evaluators.from_config(s.config, eval_context(s), family.evaluators,
                                splits=splits)


def make_optimizer(config: Any, steps_per_epoch: int, num_train_steps: int,
                   params: Any = None) -> optax.GradientTransformation:
  """Adam (``config.optax``) driven by ``config.schedule`` (``hvt_jax.schedules``: HSE's
  ×0.1 every 10 epochs, HAMMER's warm-up + cuts, MCHA's ×0.95 every 1,000 steps).

  With ``config.trainable`` (a regex over parameter paths, ``hvt_jax.pretrained``), the
  (abstract) ``params`` give the labels: non-matching parameters are frozen.
  """
  o = config.optax
  schedule = schedules.make_schedule(config.schedule, steps_per_epoch, num_train_steps,
                                     num_epochs=config.get("num_epochs"))
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.get("grad_clip") else []
  parts.append(optax.adam(schedule, b1=o.b1, b2=o.b2, eps=o.eps))
  tx = optax.chain(*parts)
  pattern = config.get("trainable")
  if not pattern:
    return tx
  # Frozen parameters get a zero update (bit-identical) and no Adam moments.
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                               pretrained.trainable_labels(params, pattern))


# The fields the trainer reads from every config (configs/common.py sets the trainer's own;
# a family's config adds model, input, loss, schedule, evals).
REQUIRED_FIELDS = ("seed", "batch_size", "eval_batch_size", "mesh", "sharding_rules",
                   "checkpoint.every_steps", "checkpoint.max_to_keep", "log_every_steps",
                   "model.name", "input.data_dir", "input.train_split",
                   "input.shuffle_buffer", "schedule.name", "optax.b1", "optax.b2",
                   "optax.eps", "evals")


def check_config(config: ml_collections.ConfigDict) -> None:
  """The fields every run needs are there, and the model is one a family declares.

  Raises:
    ValueError: naming each missing ``config.<field>``, or ``config.model.name`` with the
      valid model names.
  """
  missing = []
  for field in REQUIRED_FIELDS:
    node = config
    for key in field.split("."):
      if not hasattr(node, "keys") or key not in node:
        missing.append(f"config.{field}")
        break
      node = node[key]
  if not config.get("num_train_steps") and not config.get("num_epochs"):
    missing.append("config.num_train_steps (or config.num_epochs)")
  if missing:
    raise ValueError(f"the config lacks {', '.join(missing)} (a complete example: "
                     "docs/adding_a_family.md)")
  try:
    families.of_model(config.model.name)
  except ValueError as e:
    raise ValueError(f"config.model.name={config.model.name!r}: {e}") from None
  checkpoints.best_spec(config)


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Builds mesh, abstract model, optimizer and state shardings.

  Raises:
    ValueError: a missing or wrong config field (``check_config``), data or options.
  """
  check_config(config)
  mesh = sharding.make_mesh(config.mesh, config.get("mesh_devices", 0))
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % mesh.shape["data"]:
      raise ValueError(f"config.{key}={config[key]} is not divisible by the mesh's data "
                       f"axis ({mesh.shape['data']} devices)")
  data_dir, meta = pipeline.dataset_info(config)
  reader.check_shards(data_dir)        # a missing or truncated shard: now, not steps later
  for i, entry in enumerate(config.get("init_from") or []):
    pretrained.check_entry(entry, i)   # a wrong entry: before init, not after
  meta = dict(meta, data_dir=data_dir)
  steps_per_epoch = max(1, pipeline.num_train_examples(config, meta) // config.batch_size)
  num_steps = config.get("num_train_steps") or int(config.num_epochs * steps_per_epoch)
  abstract = nnx.eval_shape(lambda: families.create_model(config, meta, rngs=nnx.Rngs(0)))
  # Gradients and optax see only nnx.Params; other variables ride along in "other".
  graphdef, abstract_params, abstract_other = nnx.split(abstract, nnx.Param, ...)
  tx = make_optimizer(config, steps_per_epoch, num_steps, abstract_params)
  param_sh = sharding.param_shardings(abstract_params, mesh, config.sharding_rules)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  # Optimizer moments mirror the parameter tree: they take the parameters' shardings.
  rep = sharding.replicated(mesh)
  # (Frozen parameters have no moments: optax marks them with MaskedNode.)
  masked = optax.transforms.MaskedNode
  opt_sh = optax.tree_map_params(tx, lambda x, sh: x if isinstance(x, masked) else sh,
                                 abstract_opt, param_sh, transform_non_params=lambda _: rep,
                                 is_leaf=lambda x: isinstance(x, (NamedSharding, masked)))
  state_sh = {"params": param_sh, "opt_state": opt_sh, "step": rep}
  if jax.tree.leaves(abstract_other):
    state_sh["other"] = jax.tree.map(lambda _: rep, abstract_other)
  return Setup(config, mesh, meta, data_dir, graphdef, tx, state_sh, steps_per_epoch,
               num_steps)


def _init_fn(s: Setup) -> Callable[[], State]:
  def init():
    model = families.create_model(s.config, s.meta, rngs=nnx.Rngs(s.config.seed))
    _, params, other = nnx.split(model, nnx.Param, ...)
    state = {"params": params, "opt_state": s.tx.init(params),
             "step": jnp.zeros((), jnp.int32)}
    if "other" in s.state_shardings:
      state["other"] = other
    return state
  return init


def init_state(s: Setup, pretrained_weights: bool = True) -> State:
  """Random initialisation placed with the target shardings, then the pretrained weights of
  ``config.init_from`` and of the model's own ``pretrained_entries`` (``hvt_jax.pretrained``),
  loaded on the host: none of them is a constant of the jitted init. A missing source (e.g.
  a text tower not in the Hugging Face cache offline) is an error before the init runs.
  ``pretrained_weights=False``: the random initialisation only (benchmarks: weights do not
  change the cost)."""
  entries = list(s.config.get("init_from") or []) + list(
      families.model_class(s.config.model.name).pretrained_entries(s.config, s.data_dir))
  entries = entries if pretrained_weights else []
  for i, entry in enumerate(entries):
    pretrained.check_entry(entry, i)
  with jax.set_mesh(s.mesh):
    state = jax.jit(_init_fn(s), out_shardings=s.state_shardings)()
  state["params"] = pretrained.load_into(state["params"], entries)
  return state


def abstract_state(s: Setup) -> State:
  """Shapes, dtypes and shardings of the state, without materialising it (restore target)."""
  shapes = jax.eval_shape(_init_fn(s))
  return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                      shapes, s.state_shardings)


def make_train_step(s: Setup) -> Callable[[State, dict[str, jax.Array]], tuple[State, Any]]:
  """The jitted step: forward, Eq. 11 (or the family's loss), Adam update."""
  graphdef, tx, loss_cfg = s.graphdef, s.tx, s.config.loss

  seed = s.config.seed

  def step(state: State, batch: dict[str, jax.Array]):
    # Dropout and masking keys are a function of (seed, step): a resumed run draws the same.
    rngs = jax.random.fold_in(jax.random.key(seed), state["step"])
    other = state.get("other", nnx.State({}))

    def loss_fn(params):
      model = nnx.merge(graphdef, params, other)
      out = model(batch, train=True, rngs=rngs)
      return model.loss(out, batch, loss_cfg)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, **{f"loss/{k}": v for k, v in terms.items()},
               "norm/grad": optax.global_norm(grads),
               "norm/param": optax.global_norm(params),
               "norm/update": optax.global_norm(updates)}
    new_state = dict(state, params=params, opt_state=opt_state, step=state["step"] + 1)
    return new_state, metrics

  batch_sh = NamedSharding(s.mesh, P("data"))
  return jax.jit(step, in_shardings=(s.state_shardings, batch_sh),
                 out_shardings=(s.state_shardings, sharding.replicated(s.mesh)),
                 donate_argnums=0)


def checkpoint_manager(workdir: str, config: Any) -> ocp.CheckpointManager:
  """The trainer's orbax manager (the run's only writer); step directories that were never
  committed are set aside first (``checkpoints.set_aside_incomplete``)."""
  directory = os.path.join(os.path.abspath(workdir), checkpoints.CHECKPOINTS)
  checkpoints.set_aside_incomplete(directory)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.checkpoint.max_to_keep,
      save_interval_steps=config.checkpoint.every_steps,
      enable_async_checkpointing=config.checkpoint.asynchronous,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(directory, options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


def _path_str(path: tuple[Any, ...]) -> str:
  """"params/video_low/gru/w_i" for a key path (an nnx Variable's trailing "value" dropped)."""
  return jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")


def _check_restorable(step_dir: str, target: State,
                      changed: dict[str, tuple[Any, Any]]) -> None:
  """Raises one clear ValueError when the checkpoint's arrays do not fit ``target``.

  A config change that alters parameter shapes or the parameter set (``model.hidden``,
  ``model.reconstruction``, ...) cannot be resumed; the message names the first differing
  array, both shapes and the config fields that changed since the checkpoint was written. A
  checkpoint with parameter paths from before the flax.nnx layers
  (``pretrained.LEGACY_PATHS``) cannot either; the message names the old path and how to
  train on from its parameters (``init_from`` converts them).
  """
  shapes = checkpoints.saved_shapes(step_dir)
  if shapes is None:
    return
  saved = {_path_str(k): v for k, v in shapes.items()}
  keys = sorted(saved, key=lambda k: (not k.startswith("params/"), k))
  if old := next((k for k in keys if pretrained.legacy_path(k)), None):
    run = os.path.dirname(os.path.dirname(os.path.abspath(step_dir)))
    raise ValueError(f"cannot restore step {os.path.basename(step_dir)} ({step_dir}): it was "
                     "written before the transformer and LSTM layers became flax.nnx layers "
                     f"({old!r} is now {pretrained.legacy_path(old)[0]!r}). Resume or evaluate "
                     "it with the hvt_jax that wrote it, or train a new run from its "
                     "parameters, which init_from converts: --config.init_from=\"({'source': "
                     f"'{run}', 'format': 'checkpoint'}},)\"")
  wanted = {_path_str(k): tuple(v.shape)
            for k, v in jax.tree_util.tree_flatten_with_path(target)[0]}
  keys = sorted(set(saved) | set(wanted), key=lambda k: (not k.startswith("params/"), k))
  problems = [f"{k}: {saved.get(k, 'absent')} in the checkpoint, {wanted.get(k, 'absent')} "
              "under this config" for k in keys if saved.get(k) != wanted.get(k)]
  if problems:
    fields = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items()) or "none"
    raise ValueError(f"cannot restore step {os.path.basename(step_dir)} ({step_dir}): "
                     f"{problems[0]}"
                     f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                     f"config fields changed since it was written: {fields}. Revert them "
                     "or use a new --workdir.")


def restore(s: Setup, step_dir: str, changed: dict[str, tuple[Any, Any]] | None = None
            ) -> State:
  """The state saved in a complete step directory (``checkpoints.resolve``), placed with the
  target shardings; read-only on the run's checkpoints. Of a parameters-only checkpoint
  (``best/``, an export), only ``{"params"}``.

  Args:
    changed: config fields changed since the checkpoint was written (named in the error
      when their shapes no longer fit).
  """
  target = abstract_state(s)
  if checkpoints.params_only(step_dir):
    target = {"params": target["params"]}
  _check_restorable(step_dir, target, changed or {})
  logging.info("restoring %s", step_dir)
  return checkpoints.restore(step_dir, target)


def restore_or_init(s: Setup, mngr: ocp.CheckpointManager, step: int | None = None,
                    changed: dict[str, tuple[Any, Any]] | None = None) -> State:
  """``step`` (or the latest complete step) of ``mngr``'s directory; fresh init when
  ``step`` is None and the run has no complete step."""
  directory = str(mngr.directory)
  if step is None and not checkpoints.complete_steps(directory):
    return init_state(s)
  step_dir, _ = checkpoints.resolve(directory, step)
  return restore(s, step_dir, changed)


class _StopSignals:
  """SIGTERM (TPU preemption, a scheduler's stop) and SIGINT (Ctrl-C) set a flag; the loop
  saves and exits at the next step. A second Ctrl-C interrupts at once.

  Installed before the slow start-up (mesh, compile, restore), so a signal that arrives
  then is not lost. A flag, not an exception: a KeyboardInterrupt raised inside a jax
  callback (e.g. during garbage collection) can be swallowed, and training would run on.
  Single process only: with several processes, jax.distributed's preemption service owns
  SIGTERM and ``CheckpointManager.reached_preemption`` makes every host stop at the same
  step (a host stopping alone would deadlock the others in the next collective).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested: str | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self):
    if jax.process_count() > 1:
      return self
    if threading.current_thread() is not threading.main_thread():
      # Python only lets the main thread install handlers; from another thread (e.g. a
      # notebook worker) the orbax preemption check in the loop still stops the run.
      logging.warning("train_and_evaluate outside the main thread: SIGTERM/Ctrl-C are not "
                      "caught (only jax's preemption check stops the run cleanly)")
      return self
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    logging.warning("%s received: saving a checkpoint at the end of this step, then "
                    "exiting%s", self.requested,
                    " (Ctrl-C again to stop without saving)" if signum == signal.SIGINT
                    else "")

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


class _NonFinite(Exception):
  """A step produced a non-finite loss or norm (turned into a FloatingPointError)."""

  def __init__(self, step: int, bad: dict[str, float], loss: float):
    super().__init__(step, bad, loss)
    self.step, self.bad, self.loss = step, bad, loss

  def describe(self, last_good: str | None) -> str:
    what = ", ".join(f"{k} = {v}" for k, v in self.bad.items())
    finite = "" if "loss" in self.bad else f" (the loss, {self.loss:.6g}, is finite)"
    return (f"non-finite {what} at step {self.step}{finite}; last good checkpoint: "
            f"{last_good}")


class _StepRate:
  """The train step's FLOPs (XLA's count for the compiled step, once) and, between two log
  points, achieved TFLOP/s and MFU (``hvt_jax.flops``; MFU only where the device kind's peak
  is known, e.g. not on CPUs)."""

  def __init__(self, compiled: Any, mesh: Mesh, dtype: str):
    self.devices = mesh.size
    self.flops = flops.program_flops(compiled, self.devices)
    self.peak = flops.peak_flops(mesh.devices.flat[0].device_kind, dtype)
    logging.info("train step: %.4g FLOP (XLA cost analysis, %d device(s)); peak %s per "
                 "device (%s, %s): MFU %s", self.flops, self.devices,
                 "unknown" if self.peak is None else f"{self.peak / 1e12:.1f} TFLOP/s",
                 mesh.devices.flat[0].device_kind, dtype,
                 "n/a" if self.peak is None else "logged as perf/mfu")
    self.restart(0)

  def restart(self, step: int) -> None:
    """Times from now and ``step`` on (after compiling, after evaluations)."""
    self.time, self.step = time.time(), step

  def pop(self, step: int) -> dict[str, float]:
    """``perf/flops_per_step``, ``perf/tflops_per_sec`` and ``perf/mfu`` of the steps
    since the last call (their results already fetched: the time is the devices')."""
    seconds, steps = time.time() - self.time, step - self.step
    self.restart(step)
    out = {"perf/flops_per_step": self.flops}
    if steps > 0 and seconds > 0 and np.isfinite(self.flops):
      out["perf/tflops_per_sec"] = self.flops * steps / seconds / 1e12
      utilisation = flops.mfu(self.flops * steps, seconds, self.peak, self.devices)
      if utilisation is not None:
        out["perf/mfu"] = utilisation
    return out


class _MetricBuffer:
  """Bounds steps in flight and checks every step's loss and norms, naming the first bad one."""

  def __init__(self, max_in_flight: int):
    self.max_in_flight = max_in_flight
    self.pending: list[tuple[int, Any]] = []
    self.sums: dict[str, float] = {}
    self.count = 0

  def add(self, step: int, metrics: Any) -> None:
    self.pending.append((step, metrics))
    if len(self.pending) >= self.max_in_flight:
      self.flush()

  def flush(self) -> None:
    """Raises ``_NonFinite`` for the first step with a non-finite loss or norm."""
    for step, metrics in jax.device_get(self.pending):
      # The norms too: a finite loss with a NaN update would poison the next checkpoint.
      bad = {k: float(metrics[k]) for k in ("loss", "norm/grad", "norm/update", "norm/param")
             if k in metrics and not np.isfinite(metrics[k])}
      if bad:
        self.pending = []
        raise _NonFinite(step, bad, float(metrics["loss"]))
      for k, v in metrics.items():
        self.sums[k] = self.sums.get(k, 0.0) + float(v)
      self.count += 1
    self.pending = []

  def pop_means(self) -> dict[str, float]:
    means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
    self.sums, self.count = {}, 0
    return means


CONFIG_FILE = "config.json"


def _config_history(workdir: str) -> list[str]:
  """The workdir's recorded configs, oldest first: ``config.json`` (the first run) and one
  ``config.resume-<time>-step<N>.json`` per resume."""
  first = os.path.join(workdir, CONFIG_FILE)
  resumes = sorted(glob.glob(os.path.join(workdir, "config.resume-*.json")))
  return ([first] if os.path.exists(first) else []) + resumes


def recorded_config(workdir: str) -> dict[str, Any]:
  """The config the run in ``workdir`` last trained with (its latest recorded JSON).

  Raises:
    FileNotFoundError: ``workdir`` has no recorded config (not an hvt-train run).
  """
  history = _config_history(workdir)
  if not history:
    raise FileNotFoundError(f"--workdir {workdir}: no {CONFIG_FILE} there (not a run "
                            "directory of hvt-train)")
  with open(history[-1], encoding="utf-8") as f:
    return json.load(f)


def config_changes(workdir: str, config: ml_collections.ConfigDict
                   ) -> dict[str, tuple[Any, Any]]:
  """Fields whose value differs from the workdir's latest recorded config: {key: (old, new)}."""
  history = _config_history(workdir)
  if not history:
    return {}
  with open(history[-1], encoding="utf-8") as f:
    old = traverse_util.flatten_dict(json.load(f), sep=".")
  new = traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)}


def record_config(workdir: str, config: ml_collections.ConfigDict, resumed_step: int | None,
                  changed: dict[str, tuple[Any, Any]]) -> None:
  """Keeps the config history: the first run writes ``config.json``; each resume adds a
  dated copy (never overwriting what the checkpoints came from) and warns about changes."""
  if jax.process_index() != 0:
    return
  if resumed_step is None:
    path = os.path.join(workdir, CONFIG_FILE)
  else:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(workdir, f"config.resume-{stamp}-step{resumed_step}.json")
    if changed:
      logging.warning("resuming %s at step %d with a changed config (previous -> now): %s",
                      workdir, resumed_step,
                      "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
  with open(path, "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _latest_step(mngr: ocp.CheckpointManager) -> str | None:
  steps = checkpoints.complete_steps(str(mngr.directory))
  return os.path.join(str(mngr.directory), str(steps[-1])) if steps else None


def _input_position(config: ml_collections.ConfigDict, step_dir: str | None, step: int,
                    changed: dict[str, tuple[Any, Any]]) -> int:
  """Training examples consumed (all processes) before ``step``: what the checkpoint
  recorded, so a resume continues exactly after them whatever the batch size is now.

  Checkpoints written before the count was recorded fall back to ``step`` × the batch size
  they were trained with (the recorded config's, ``changed``).
  """
  if step_dir is None:
    return 0
  saved = checkpoints.custom_metadata(step_dir).get("input", {})
  if "examples" in saved:
    consumed = int(saved["examples"])
    if int(saved.get("processes", jax.process_count())) != jax.process_count():
      logging.warning("resuming on %d processes a run saved on %s: each process reads another"
                      " slice of the split, so the resumed input is not the continuation of "
                      "the saved one", jax.process_count(), saved["processes"])
  else:
    old_batch = changed.get("batch_size", (config.batch_size,))[0] or config.batch_size
    consumed = step * int(old_batch)
  return consumed


def _log_resume(config: ml_collections.ConfigDict, s: Setup, step: int, consumed: int,
                changed: dict[str, tuple[Any, Any]]) -> None:
  epoch, offset = divmod(consumed, max(pipeline.num_train_examples(config, s.meta), 1))
  msg = (f"resuming at step {step} after {consumed} training examples (epoch {epoch}, "
         f"example {offset}): the input continues after them")
  if "batch_size" in changed:
    old, new = changed["batch_size"]
    msg += f" with batch_size {new} (was {old})"
  (logging.warning if "batch_size" in changed else logging.info)(msg)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains ``config.model.name`` and evaluates it; resumes from ``workdir`` if possible.

  Stops cleanly (checkpoint saved, exit) on SIGTERM or Ctrl-C; on any error, a checkpoint
  save in flight is finished before the error propagates, and a non-finite step raises a
  FloatingPointError naming the step, the quantity and the last checkpoint on disk.

  Returns:
    The final evaluation metrics (``{split/name: value}``) or {} when stopped early.
  """
  with _StopSignals() as stop:
    s = setup(config)                   # config and data errors: before anything is written
    evals = build_evaluators(s)   # their splits and options too
    os.makedirs(workdir, exist_ok=True)
    mngr = checkpoint_manager(workdir, config)
    try:
      return _train_loop(config, workdir, s, mngr, evals, stop)
    except _NonFinite as e:
      mngr.wait_until_finished()
      raise FloatingPointError(e.describe(_latest_step(mngr))) from None
    finally:
      mngr.wait_until_finished()   # never abandon a save in flight (it is the last good one)
      mngr.close()


def _train_loop(config: ml_collections.ConfigDict, workdir: str, s: Setup,
                mngr: ocp.CheckpointManager, evals: list[Any],
                stop: _StopSignals) -> dict[str, float]:
  step_dir = _latest_step(mngr)
  checkpoints.clear_finished(workdir)
  best = checkpoints.best_spec(config)
  resumed = None if step_dir is None else int(os.path.basename(step_dir))
  changed = config_changes(workdir, config) if resumed is not None else {}
  state = init_state(s) if step_dir is None else restore(s, step_dir, changed)
  record_config(workdir, config, resumed, changed)
  start = int(jax.device_get(state["step"]))
  consumed = _input_position(config, step_dir, start, changed)
  if step_dir is not None:
    _log_resume(config, s, start, consumed, changed)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)
  if start == 0:
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    writer.write_hparams({k: v for k, v in flat.items()
                          if isinstance(v, (int, float, str, bool))})
  logging.info("model %s, %d parameters, %d steps (%d per epoch), starting at %d",
               config.model.name, _count(state["params"]), s.num_train_steps,
               s.steps_per_epoch, start)

  step_fn = make_train_step(s)
  rate = None
  input_stats = pipeline.InputStats()
  batches = pipeline.iterate(
      pipeline.train_dataset(config, consumed // jax.process_count()), s.mesh,
      pipeline.get_view(config.model.name), input_stats, data_dir=s.data_dir)
  hooks = []
  if jax.process_index() == 0:
    hooks.append(periodic_actions.ReportProgress(num_train_steps=s.num_train_steps,
                                                 writer=writer))
  buffer = _MetricBuffer(config.get("max_steps_in_flight", 8))
  progress = _progress_bar(config, start, s.num_train_steps)
  results: dict[str, float] = {}
  t0 = time.time()
  with jax.set_mesh(s.mesh):
    step = start
    while step < s.num_train_steps and not stop.requested:
      batch, _ = next(batches)
      if rate is None:   # compiled once, ahead of time: its FLOPs are XLA's for this step
        step_fn = step_fn.lower(state, batch).compile()
        rate = _StepRate(step_fn, s.mesh, config.model.get("dtype", "float32"))
        rate.restart(step)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = step_fn(state, batch)
      step += 1
      consumed += config.batch_size
      if step == start + 1:
        logging.info("first step (compile + run) took %.1f s", time.time() - t0)
      buffer.add(step, metrics)
      for hook in hooks:
        hook(step)
      progress.update(1)
      last = step == s.num_train_steps
      if step % config.log_every_steps == 0 or last:
        buffer.flush()
        means = buffer.pop_means()
        means["input/truncated_fraction"] = input_stats.fraction()
        means.update(rate.pop(step))
        writer.write_scalars(step, means)
        progress.set_postfix(loss=f"{means['loss']:.4f}")
      preempted = stop.requested or mngr.reached_preemption(step)
      if preempted or last or step % config.checkpoint.every_steps == 0:
        buffer.flush()  # never checkpoint a non-finite state
        mngr.save(step, args=ocp.args.StandardSave(state), force=preempted or last,
                  custom_metadata={"input": {"examples": consumed,
                                             "batch_size": config.batch_size,
                                             "processes": jax.process_count()}})
      if preempted:
        stop.requested = stop.requested or "preemption"
        break
      due = [ev for ev in evals if evaluators.due(ev, step, last)]
      if due:
        if last:      # an eval job (hvt-eval --follow) may end now: the final save is done
          mngr.wait_until_finished()
          checkpoints.mark_finished(workdir, step)
        results = evaluators.run_all(due, state, step, writer, workdir)
        if best is not None:
          checkpoints.keep_best(best, results, state["params"], step, workdir)
        rate.restart(step)
  progress.close()
  mngr.wait_until_finished()
  writer.flush()
  if not stop.requested and step >= s.num_train_steps:
    checkpoints.mark_finished(workdir, step)
  if stop.requested:
    logging.warning("stopped by %s: %s; re-run the same command to resume", stop.requested,
                    f"saved step {step} to {mngr.directory}" if step > start else
                    "before the first step (nothing new to save)")
    return {}
  if input_stats.truncated:
    logging.warning("input: %d of %d training examples (%.1f%%) were cut by static limits "
                    "(the config.input.max_* sizes of this view)", input_stats.truncated,
                    input_stats.examples, 100 * input_stats.fraction())
  if input_stats.empty_segments:
    logging.warning("input: %d segments covered no feature row and were left out of the "
                    "clip level (hvt_jax/input/ops.py time_to_rows)",
                    input_stats.empty_segments)
  if not results and evals and start >= s.num_train_steps:
    results = evaluators.run_all(evals, state, start, writer, workdir)
    if best is not None:
      checkpoints.keep_best(best, results, state["params"], start, workdir)
  return results


def _progress_bar(config: Any, start: int, total: int):
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, initial=start, desc=f"train {config.model.name}",
                   disable=jax.process_index() > 0 or not config.get("progress_bar", True),
                   dynamic_ncols=True)


def _count(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | str | None = None,
                        splits: list[str] | None = None) -> tuple[int, dict[str, float]]:
  """Restores a complete checkpoint (latest by default) and runs the configured evaluators.

  Read-only on the run's checkpoints (no orbax manager, no clean-up): safe beside a trainer
  that is writing to the same workdir. Metrics, predictions and plots go to
  ``<workdir>/eval/<split>/``.

  Args:
    step: a step number, ``"best"`` (``<workdir>/best``) or None (the latest); ``workdir``
      may also be a parameters-only checkpoint (an ``hvt-export`` directory).

  Returns:
    (the step evaluated, ``{split/metric: value}``).

  Raises:
    FileNotFoundError: the run has no complete checkpoint, ``step`` does not exist, or
      ``step="best"`` and the run has no best checkpoint.
    ValueError: ``step`` is incomplete, an evaluator's split or options are wrong, or an
      export's vocabulary is not the dataset's (``check_export_vocab``).
  """
  s = setup(config)
  evals = build_evaluators(s, splits=splits)
  check_export_vocab(workdir, config)
  step_dir, step = locate(workdir, step)
  directory = os.path.join(workdir, checkpoints.CHECKPOINTS)
  complete = checkpoints.complete_steps(directory)
  newer = [n for n in sorted(os.listdir(directory), key=lambda n: (len(n), n))
           if n.isdigit() and int(n) > step and int(n) not in complete
           ] if os.path.isdir(directory) else []
  if newer:
    logging.warning("evaluating step %d: newer step directories %s are incomplete (in "
                    "progress or damaged) and are skipped", step, newer)
  state = restore(s, step_dir, changed=config_changes(workdir, config))
  writer = metric_writers.create_default_writer(
      os.path.join(workdir, "eval"), just_logging=jax.process_index() > 0)
  with jax.set_mesh(s.mesh):
    results = evaluators.run_all(evals, state, step, writer, workdir)
  writer.flush()
  return step, results


def check_export_vocab(workdir: str, config: ml_collections.ConfigDict) -> None:
  """An export's vocabulary (``<workdir>/vocab/vocab.txt``, ``hvt-export``) must be that of
  the dataset it is evaluated or queried on: the model's token ids mean its words.

  Raises:
    ValueError: ``workdir`` is an export and the dataset's ``vocab.txt`` differs (or is
      missing).
  """
  exported = os.path.join(workdir, "vocab", reader.VOCAB_FILE)
  if not (checkpoints.is_params_only(workdir) and os.path.isfile(exported)):
    return
  current = os.path.join(pipeline.dataset_info(config)[0], reader.VOCAB_FILE)
  if not (os.path.isfile(current) and filecmp.cmp(exported, current, shallow=False)):
    raise ValueError(f"--workdir {workdir}: the export's vocabulary {exported} is not the "
                     f"dataset's {current}: its token ids would mean other words (give "
                     "--config.input.data_dir the dataset the model was trained on)")


def locate(workdir: str, step: int | str | None) -> tuple[str, int]:
  """(step directory, step) that ``hvt-eval --workdir workdir --step step`` means: a step of
  the run (None: the latest complete one), ``"best"`` (``<workdir>/best``), or the step of a
  parameters-only ``workdir`` (an export).

  Raises:
    FileNotFoundError, ValueError: as ``checkpoints.resolve``; ``"best"`` without a best.
  """
  if step == "best":
    best = os.path.join(os.path.abspath(workdir), checkpoints.BEST)
    if not checkpoints.is_params_only(best):
      what = f"has no {checkpoints.MODEL_FILE}" if os.path.isdir(best) else "does not exist"
      raise FileNotFoundError(f"--step best: no best checkpoint in {workdir} ({best} {what});"
                              " config.evals.<name>.best names the metric that keeps one "
                              "(docs/evaluation.md)")
    return checkpoints.resolve(best, what="--step best")
  if checkpoints.is_params_only(workdir):
    return checkpoints.resolve(workdir, step, what=f"--workdir {workdir}")
  return checkpoints.resolve(os.path.join(workdir, checkpoints.CHECKPOINTS), step,
                             what=f"--workdir {workdir}")

