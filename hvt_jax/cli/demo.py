"""hvt-demo [--workdir DIR]: the README's main job, end to end on a laptop CPU.

Builds the synthetic demo dataset (``hvt-prepare demo``), trains HSE and FSE on it,
evaluates both on the held-out split and prints the side-by-side retrieval table.
Each model's run lives in ``DIR/<model>/`` (``DIR/hse/eval/val/metrics.json``, ...).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time



def run_demo(workdir: str, models: tuple[str, ...] = ("hse", "fse"), arg: str = "",
             overrides: dict | None = None, num_train: int = 1500,
             num_val: int = 500) -> dict[str, dict[str, float]]:
  """Prepares the data (once), trains and evaluates each model; returns {model: metrics}."""
  from data_prep import demo, reader  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top

  data_dir = os.path.join(workdir, "data")
  try:
    found = reader.find_dataset_dir(data_dir, "demo")
    print(f"[hvt-demo] reusing the demo dataset in {found} and any runs in {workdir} "
          "(delete the workdir to start over)", flush=True)
  except FileNotFoundError:
    print(f"[hvt-demo] writing the synthetic demo dataset to {data_dir}", flush=True)
    demo.write_demo(data_dir, num_train=num_train, num_val=num_val)
  results = {}
  for model in models:
    config = importlib.import_module(f"configs.{model}.demo").get_config(arg)
    config.input.data_dir = data_dir
    for key, value in (overrides or {}).items():
      parent = config
      *path, leaf = key.split(".")
      for p in path:
        parent = parent[p]
      parent[leaf] = value
    start = time.time()
    print(f"[hvt-demo] training {model.upper()} in {os.path.join(workdir, model)}",
          flush=True)
    metrics = train.train_and_evaluate(config, os.path.join(workdir, model))
    print(f"[hvt-demo] {model.upper()} done in {time.time() - start:.0f} s", flush=True)
    results[model.upper()] = {k.partition("/")[2]: v for k, v in metrics.items()}
  return results


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="hvt-demo", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/demo", help="output directory")
  parser.add_argument("--models", default="hse,fse", help="comma-separated models")
  parser.add_argument("--num-train", type=int, default=1500, help="demo train videos")
  parser.add_argument("--num-val", type=int, default=500, help="demo val videos")
  parser.add_argument("--config-arg", default="",
                      help="config argument for configs/<model>/demo.py, e.g. runlocal")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  from hvt_jax.cli import common  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
  results = run_demo(args.workdir, tuple(args.models.split(",")), arg=args.config_arg,
                     num_train=args.num_train, num_val=args.num_val)
  columns = list(dict.fromkeys(c for m in results.values() for c in common.metric_columns(m)
                               if not c.endswith("R@10")))
  ranking = [c for c in columns if c.split("/")[0] in ("p2v", "v2p")]
  print("\nParagraph->video (p2v) and video->paragraph (v2p) retrieval on the demo val split")
  print(retrieval.format_table(results, ranking))
  others = [c for c in columns if c not in ranking]
  if others:   # the other evaluators of the demo config (zero-shot, ...); curves: eval/val/
    print("\nOther evaluations on the same split")
    print(retrieval.format_table(results, others))
  sys.stdout.flush()


if __name__ == "__main__":
  main()
