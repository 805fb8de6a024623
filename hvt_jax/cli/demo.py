"""hvt-demo [--workdir DIR] [--models hse,fse | hammer,flat] [--seeds 0,1,2]: the README's
main job, end to end on a laptop CPU.

Builds the synthetic demo dataset, trains each model on it, evaluates on the held-out
split and prints side-by-side tables. HSE/FSE (the default) use the clip/sentence demo
(``hvt-prepare demo``) and print retrieval; HAMMER/FLAT use the many-event moments demo
(``hvt-prepare demo --variant moments``) and print VR, TL, SVMR and VCMR overall and by
video-duration bucket (``hvt_jax/evaluation/moments.py``). With several seeds (the model's
``config.seed``; the data stay the same) each cell is mean ± std over the seeds.
Each run lives in ``DIR/<model>/`` (``DIR/<model>/seed<N>/`` with several seeds), e.g.
``DIR/hammer/eval/val/metrics.json`` and ``tvr_submission.json``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import numpy as np

MOMENT_MODELS = ("hammer", "flat")
# The moments tables: the paper's Tables 1-3 columns, and Fig. 2-3 per duration bucket.
MOMENT_COLUMNS = ("vr/R@1", "vr/R@10", "vr/R@100", "vr/MdR", "tl/mIoU", "tl/R@1@IoU0.5",
                  "svmr/R@1@IoU0.5", "svmr/R@1@IoU0.7", "vcmr/R@1@IoU0.5",
                  "vcmr/R@10@IoU0.5", "vcmr/R@100@IoU0.5", "vcmr/R@10@IoU0.7")
BUCKET_COLUMNS = ("num_queries", "vr/MdR", "vr/R@10", "tl/mIoU", "vcmr/R@10@IoU0.5",
                  "vcmr/R@100@IoU0.5", "vcmr/R@100@IoU0.7")


def _data(workdir: str, moments: bool, num_train: int | None, num_val: int | None) -> str:
  """The demo dataset for the family (written once, then reused); returns its data dir."""
  from data_prep import demo, demo_moments, reader  # pylint: disable=g-import-not-at-top
  name = "demo_moments" if moments else "demo"
  data_dir = os.path.join(workdir, "data_moments" if moments else "data")
  try:
    found = reader.find_dataset_dir(data_dir, name)
    print(f"[hvt-demo] reusing the {name} dataset in {found} and any runs in {workdir} "
          "(delete the workdir to start over)", flush=True)
  except FileNotFoundError:
    print(f"[hvt-demo] writing the synthetic {name} dataset to {data_dir}", flush=True)
    sizes = {k: v for k, v in (("num_train", num_train), ("num_val", num_val)) if v}
    if moments:
      demo_moments.write(data_dir, **sizes)
    else:
      demo.write_demo(data_dir, **sizes)
  return data_dir


def run_demo(workdir: str, models: tuple[str, ...] = ("hse", "fse"), arg: str = "",
             overrides: dict | None = None, num_train: int | None = None,
             num_val: int | None = None, seeds: tuple[int, ...] = (0,)
             ) -> dict[str, list[dict[str, float]]]:
  """Prepares the data (once per family), trains and evaluates each model for each seed;
  returns {MODEL: [metrics of each seed]} (names without the split)."""
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  results: dict[str, list[dict[str, float]]] = {m.upper(): [] for m in models}
  data_dirs = {m: _data(workdir, m in MOMENT_MODELS, num_train, num_val) for m in models}
  for seed in seeds:        # seed by seed: an interrupted run has whole seeds of every model
    for model in models:
      family = {"fse": "hse", "flat": "hammer"}.get(model, model)   # configs/<family>/demo.py
      config = importlib.import_module(f"configs.{family}.demo").get_config(
          ",".join(filter(None, [f"model={model}", arg])))
      config.input.data_dir = data_dirs[model]
      for key, value in {**(overrides or {}), "seed": seed}.items():
        parent = config
        *path, leaf = key.split(".")
        for p in path:
          parent = parent[p]
        parent[leaf] = value
      run_dir = os.path.join(workdir, model, f"seed{seed}" if len(seeds) > 1 else "")
      start = time.time()
      print(f"[hvt-demo] training {model.upper()} (seed {seed}) in {run_dir}", flush=True)
      metrics = train.train_and_evaluate(config, run_dir)
      print(f"[hvt-demo] {model.upper()} done in {time.time() - start:.0f} s", flush=True)
      results[model.upper()].append({k.partition("/")[2]: v for k, v in metrics.items()})
  return results


def mean_std_table(rows: dict[str, list[dict[str, float]]], columns: list[str] | tuple,
                   precision: int = 2) -> str:
  """A plain-text table: one row per name, each cell the mean over the row's runs, with
  ``± std`` (population) when there are several; "-" where a run lacks the metric."""
  from hvt_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
  if all(len(runs) == 1 for runs in rows.values()):
    return retrieval.format_table({k: runs[0] for k, runs in rows.items()}, columns,
                                  precision)
  cells = [["model", *columns]]
  for name, runs in rows.items():
    line = [name]
    for col in columns:
      values = [r[col] for r in runs if col in r]
      line.append("-" if len(values) < len(runs) else
                  f"{np.mean(values):.{precision}f}±{np.std(values):.{precision}f}")
    cells.append(line)
  widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
  fmt = lambda c: "  ".join([c[0].ljust(widths[0])] + [x.rjust(w) for x, w in
                                                         zip(c[1:], widths[1:])]).rstrip()
  return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths),
                    *map(fmt, cells[1:])])


def moment_tables(results: dict[str, list[dict[str, float]]]) -> str:
  """The HAMMER/FLAT tables: overall, then one row per (model, duration bucket)."""
  lines = ["Moment localization in the demo corpus (val): VR, single-video TL, SVMR, VCMR",
           mean_std_table(results, MOMENT_COLUMNS)]
  buckets: dict[str, list[dict[str, float]]] = {}
  for model, runs in results.items():
    names = sorted({k.split("/")[1] for k in runs[0] if k.startswith("by_duration/")},
                   key=lambda b: float(b.split("-")[0].rstrip("s+")))   # by lower edge
    for b in names:
      buckets[f"{model} {b}"] = [{c: r[f"by_duration/{b}/{c}"] for c in BUCKET_COLUMNS
                                  if f"by_duration/{b}/{c}" in r} for r in runs]
  if buckets:
    lines += ["", "By video duration (buckets: quartiles of the queries' video durations)",
              mean_std_table(buckets, BUCKET_COLUMNS)]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="hvt-demo", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/demo", help="output directory")
  parser.add_argument("--models", default="hse,fse",
                      help="comma-separated models: hse,fse (default) and/or hammer,flat")
  parser.add_argument("--num-train", type=int, default=None,
                      help="demo train videos (default 1500; moments demo 400)")
  parser.add_argument("--num-val", type=int, default=None,
                      help="demo val videos (default 500; moments demo 100)")
  parser.add_argument("--seeds", default="0",
                      help="comma-separated model seeds; several: mean ± std")
  parser.add_argument("--config-arg", default="",
                      help="config argument for configs/<family>/demo.py (besides "
                      "model=<model>), e.g. runlocal")
  args = parser.parse_args(argv)
  demos = ("hse", "fse", *MOMENT_MODELS)   # the families this demo prepares data for
  unknown = [m for m in args.models.split(",") if m not in demos]
  if unknown:
    parser.error(f"--models {','.join(unknown)}: not a demo model; valid: "
                 f"{', '.join(demos)} (MCHA: see the README's MCHA section)")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from hvt_jax.cli import common  # pylint: disable=g-import-not-at-top
  common.console_logging()   # our own warnings and every library's errors
  models = tuple(args.models.split(","))
  seeds = tuple(int(s) for s in args.seeds.split(","))
  results = run_demo(args.workdir, models, arg=args.config_arg, num_train=args.num_train,
                     num_val=args.num_val, seeds=seeds)
  moment = {m: r for m, r in results.items() if m.lower() in MOMENT_MODELS}
  others = {m: r for m, r in results.items() if m not in moment}
  if others:
    columns = list(dict.fromkeys(c for runs in others.values() for m in runs
                                 for c in common.metric_columns(m) if not c.endswith("R@10")))
    ranking = [c for c in columns if c.split("/")[0] in ("p2v", "v2p")]
    print("\nParagraph->video (p2v) and video->paragraph (v2p) retrieval on the demo val "
          "split")
    print(mean_std_table(others, ranking))
    rest = [c for c in columns if c not in ranking]
    if rest:   # the other evaluators of the demo config (zero-shot, ...); curves: eval/val/
      print("\nOther evaluations on the same split")
      print(mean_std_table(others, rest))
  if moment:
    print()
    print(moment_tables(moment))
  sys.stdout.flush()


if __name__ == "__main__":
  main()
