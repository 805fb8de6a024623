"""hvt-eval --config ... --workdir DIR [--step N] [--split NAME].

Evaluates a checkpoint, prints a table and writes DIR/eval/<split>/metrics.json (+ plots).
"""

from __future__ import annotations

from absl import app, flags

from hvt_jax import train
from hvt_jax.cli import common
from hvt_jax.evaluation import retrieval

_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_SPLIT = flags.DEFINE_multi_string("split", None, "Split(s) to evaluate (default: config.evals).")


def _main(argv):
  del argv
  config, workdir = common.startup()
  results = train.evaluate_checkpoint(config, workdir, step=_STEP.value, splits=_SPLIT.value)
  rows = {}
  for key, value in results.items():
    split, _, name = key.partition("/")
    rows.setdefault(f"{config.model.name} {split}", {})[name] = value
  columns = [f"{d}/{k}" for d in ("p2v", "v2p") for k in ("R@1", "R@5", "R@10", "R@50",
                                                          "MdR", "MnR")]
  print(retrieval.format_table(rows, columns))


def main():
  app.run(_main)


if __name__ == "__main__":
  main()
