"""hvt-train --config configs/<family>/<dataset>.py[:arg] --workdir DIR [--config.k=v ...].

Resumes from DIR's latest checkpoint when there is one.
"""

from __future__ import annotations

from hvt_jax import train
from hvt_jax.cli import common


def _main(argv):
  del argv
  common.user_errors("hvt-train", _run)


def _run():
  config, workdir = common.startup()
  results = train.train_and_evaluate(config, workdir)
  if results:
    print(common.results_table(config.model.name, results))


def main():
  common.run_app("hvt-train", _main)


if __name__ == "__main__":
  main()
