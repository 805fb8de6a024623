"""Start-up shared by the console scripts: flags, TF/JAX process setup."""

from __future__ import annotations

import os

from absl import flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, e.g. configs/hse/activitynet_c3d.py[:arg].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, eval).")


def startup() -> tuple[object, str]:
  """Validates flags, hides accelerators from TF, joins a multi-process run if asked."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only: keep TF off the accelerators that JAX owns.
  tf.config.set_visible_devices([], "GPU")
  from hvt_jax import sharding  # pylint: disable=g-import-not-at-top
  if _CONFIG.value is None:
    raise flags.IllegalFlagValueError("--config is required")
  if not _WORKDIR.value:
    raise flags.IllegalFlagValueError("--workdir is required")
  sharding.maybe_initialize_distributed()
  logging.info("config:\n%s", _CONFIG.value)
  return _CONFIG.value, _WORKDIR.value


def results_table(model: str, results: dict[str, float]) -> str:
  """``{split/direction/metric: v}`` -> one row per split, retrieval metrics as columns."""
  from hvt_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
  rows = {}
  for key, value in results.items():
    split, _, name = key.partition("/")
    rows.setdefault(f"{model} {split}", {})[name] = value
  columns = [f"{d}/{k}" for d in ("p2v", "v2p")
             for k in ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")]
  return retrieval.format_table(rows, columns)
