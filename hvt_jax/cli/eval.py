"""hvt-eval --config ... --workdir DIR [--step N] [--split NAME].

Evaluates a checkpoint, prints a table and writes DIR/eval/<split>/metrics.json (+ plots).
"""

from __future__ import annotations

from absl import flags

from hvt_jax import train
from hvt_jax.cli import common

_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_SPLIT = flags.DEFINE_multi_string("split", None, "Split(s) to evaluate (default: config.evals).")


def _main(argv):
  del argv
  common.user_errors("hvt-eval", _run)


def _run():
  config, workdir = common.startup()
  step, results = train.evaluate_checkpoint(config, workdir, step=_STEP.value,
                                            splits=_SPLIT.value)
  print(f"{workdir}: checkpoint step {step}")
  print(common.results_table(config.model.name, results))


def main():
  common.run_app("hvt-eval", _main)


if __name__ == "__main__":
  main()
