"""Start-up shared by the console scripts: flags, TF/JAX process setup."""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, e.g. configs/hse/activitynet_c3d.py[:arg].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, eval).")


_STARTED = []


def run_app(prog: str, main_fn: Callable[[list[str]], None]) -> None:
  """``absl.app.run(main_fn)``; a bad ``--config.<key>`` override (a typo'd or unknown field,
  a value of the wrong type: ml_collections raises while the flags are parsed) prints
  ``<prog>: error: ...`` and exits with status 2 instead of a traceback."""
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    app.run(main_fn)
  except (AttributeError, KeyError, TypeError) as e:
    if _STARTED or os.environ.get("HVT_TRACEBACK"):
      raise
    while e.args and isinstance(e.args[0], BaseException):   # AttributeError(KeyError(...))
      e = e.args[0]
    msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    msg = " ".join(msg.replace("\\n", "\n").split())   # one line
    given = [a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config.")]
    named = [g for g in given if g.rsplit(".", 1)[-1] in msg] or given
    where = f" (in {', '.join(named)})" if named else ""
    print(f"{prog}: error: bad --config override{where}: {msg}\n(set "
          "HVT_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(2)


def startup() -> tuple[object, str]:
  """Validates flags, hides accelerators from TF, joins a multi-process run if asked."""
  _STARTED.append(True)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only: keep TF off the accelerators that JAX owns.
  tf.config.set_visible_devices([], "GPU")
  from hvt_jax import sharding  # pylint: disable=g-import-not-at-top
  prog = os.path.basename(sys.argv[0])
  for flag, value in (("--config", _CONFIG.value), ("--workdir", _WORKDIR.value)):
    if not value:
      print(f"{prog}: error: {flag} is required (see {prog} --helpfull)", file=sys.stderr)
      sys.exit(2)
  sharding.maybe_initialize_distributed()
  logging.info("config:\n%s", _CONFIG.value)
  return _CONFIG.value, _WORKDIR.value


def user_errors(prog: str, fn: Callable[[], None]) -> None:
  """Runs ``fn``; a user error (bad config field, missing data or checkpoint, a refused
  resume, a non-finite step) prints ``<prog>: error: <message>`` to stderr and exits with
  status 2 (1 for a non-finite step), like hvt-prepare, instead of a traceback.
  ``HVT_TRACEBACK=1`` re-raises for the full traceback."""
  try:
    fn()
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    if os.environ.get("HVT_TRACEBACK"):
      raise
    logging.debug("%s failed", prog, exc_info=True)
    print(f"{prog}: error: {e}\n(set HVT_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(1 if isinstance(e, FloatingPointError) else 2)


def metric_columns(metrics: dict[str, float]) -> list[str]:
  """The table columns of a metrics dict: every ``<prefix>/<metric>`` name, in the
  evaluators' order. Counts (``num_*``) and deeper names (curves such as
  ``incomplete/p2v/R@1@n=2``, which go to metrics.json and plots) are left out."""
  return [k for k in metrics
          if k.count("/") == 1 and not k.split("/")[1].startswith("num_")]


def results_table(model: str, results: dict[str, float]) -> str:
  """``{split/prefix/metric: v}`` -> one row per split; columns come from the metrics."""
  from hvt_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
  rows: dict[str, dict[str, float]] = {}
  for key, value in results.items():
    split, _, name = key.partition("/")
    rows.setdefault(f"{model} {split}", {})[name] = value
  columns = list(dict.fromkeys(c for r in rows.values() for c in metric_columns(r)))
  return retrieval.format_table(rows, columns)
