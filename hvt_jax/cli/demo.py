"""hvt-demo: synthetic data, train, evaluate and compare models end to end on a laptop CPU.

hvt-demo [--workdir DIR] [--models hse,fse | hammer,flat | mcha] [--seeds 0,1,2].

Builds the synthetic demo dataset, trains each model on it, evaluates on the held-out
split and prints side-by-side tables. The models and how each is run come from the
families' ``Demo`` (``hvt_jax.families``): HSE/FSE (the default) use the clip/sentence demo
(``hvt-prepare demo``) and print retrieval; HAMMER/FLAT use the many-event moments demo
(``hvt-prepare demo --variant moments``) and print VR, TL, SVMR and VCMR overall and by
video-duration bucket; MCHA uses the multi-expert demo (``--variant experts``) and also
runs its ablations (``Demo.ablations``: w/o LAM, w/o HRM, Table 4). With several seeds
(the model's ``config.seed``; the data stay the same) each cell is mean ± std over the
seeds. Each run lives in ``DIR/<model>/`` (an ablation in ``DIR/<model>-<arg>/``, e.g.
``DIR/mcha-lam-false/``; ``.../seed<N>/`` with several seeds), e.g.
``DIR/hammer/eval/val/metrics.json`` and ``tvr_submission.json``. Last, one free-text
query (``hvt-eval --query``, ``hvt_jax.evaluation.query``) against the first model's val
corpus, made of the demo's own words (``_QUERIES``: HSE/FSE, the event names of the first val
video; HAMMER/FLAT, an attribute and an action; MCHA's demo data store no word lists).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any


def _demos() -> dict[str, Any]:
  """{model: its family's ``Demo``} of every family that has a demo (``hvt_jax.families``)."""
  from hvt_jax import families  # pylint: disable=g-import-not-at-top
  return {m: f.demo for f in families.all_families() if f.demo for m in f.demo.models}


def _data(workdir: str, variant: str, num_train: int | None, num_val: int | None) -> str:
  """The demo dataset of ``hvt-prepare demo --variant <variant>`` (written once, then
  reused); returns its data dir."""
  from data_prep import demo, demo_experts, demo_moments  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import reader  # pylint: disable=g-import-not-at-top
  name = {"hse": "demo", "moments": "demo_moments", "experts": "demo_experts"}[variant]
  data_dir = _data_root(workdir, variant)
  try:
    found = reader.find_dataset_dir(data_dir, name)
    print(f"[hvt-demo] reusing the {name} dataset in {found} and any runs in {workdir} "
          "(delete the workdir to start over)", flush=True)
  except FileNotFoundError:
    print(f"[hvt-demo] writing the synthetic {name} dataset to {data_dir}", flush=True)
    sizes = {k: v for k, v in (("num_train", num_train), ("num_val", num_val)) if v}
    if variant == "moments":
      demo_moments.write(data_dir, **sizes)
    elif variant == "experts":
      demo_experts.write(data_dir, **sizes)
    else:
      demo.write_demo(data_dir, **sizes)
  return data_dir


def _data_root(workdir: str, variant: str) -> str:
  """Where ``_data`` writes the demo dataset of ``variant``."""
  return os.path.join(workdir, "data" if variant == "hse" else f"data_{variant}")


def run_demo(workdir: str, models: tuple[str, ...] = ("hse", "fse"), arg: str = "",
             overrides: dict | None = None, num_train: int | None = None,
             num_val: int | None = None, seeds: tuple[int, ...] = (0,)
             ) -> dict[str, list[dict[str, float]]]:
  """Prepares the data (once per family), trains and evaluates each model and each of its
  demo's ablations for each seed; returns {ROW: [metrics of each seed]} (names without the
  split; ``_rows`` names the rows)."""
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  demos = _demos()
  datasets = {v: _data(workdir, v, num_train, num_val)   # each dataset once
              for v in dict.fromkeys(demos[m].dataset for m in models)}
  data_dirs = {m: datasets[demos[m].dataset] for m in models}
  runs = [r for m in models for r in _rows(m, demos[m])]
  results: dict[str, list[dict[str, float]]] = {row: [] for row, *_ in runs}
  for seed in seeds:        # seed by seed: an interrupted run has whole seeds of every model
    for row, model, extra, name in runs:
      variant = f"model={model}" if len(demos[model].models) > 1 else ""
      config = _config(demos[model].config, ",".join(filter(None, [variant, extra, arg])))
      config.input.data_dir = data_dirs[model]
      for key, value in {**(overrides or {}), "seed": seed}.items():
        parent = config
        *path, leaf = key.split(".")
        for p in path:
          parent = parent[p]
        parent[leaf] = value
      run_dir = os.path.join(workdir, name, f"seed{seed}" if len(seeds) > 1 else "")
      start = time.time()
      print(f"[hvt-demo] training {row} (seed {seed}) in {run_dir}", flush=True)
      metrics = train.train_and_evaluate(config, run_dir)
      print(f"[hvt-demo] {row} done in {time.time() - start:.0f} s", flush=True)
      results[row].append({k.partition("/")[2]: v for k, v in metrics.items()})
  return results


def _rows(model: str, demo: Any) -> list[tuple[str, str, str, str]]:
  """(row name, model, extra config arg, run directory name) of ``model`` and each of its
  demo's ablations: ("MCHA", "mcha", "", "mcha"), ("MCHA w/o LAM", "mcha", "lam=false",
  "mcha-lam-false"), ..."""
  out = [(model.upper(), model, "", model)]
  for label, extra in demo.ablations:
    out.append((f"{model.upper()} {label}", model, extra,
                f"{model}-{extra.replace('=', '-').replace(',', '-')}"))
  return out


def _config(path: str, arg: str) -> Any:
  """The config of the file ``path`` (relative to the repository) with ``arg``."""
  module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
  return module.get_config(arg)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="hvt-demo", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/demo", help="output directory")
  parser.add_argument("--models", default="hse,fse",
                      help="comma-separated models: hse,fse (default), hammer,flat, mcha "
                           "(with w/o LAM and w/o HRM)")
  parser.add_argument("--num-train", type=int, default=None,
                      help="demo train videos (default 1500; moments demo 400)")
  parser.add_argument("--num-val", type=int, default=None,
                      help="demo val videos (default 500; moments demo 100)")
  parser.add_argument("--seeds", default="0",
                      help="comma-separated model seeds; several: mean ± std")
  parser.add_argument("--config-arg", default="",
                      help="config argument for the families' configs/<family>/demo.py "
                           "(besides model=<model>), e.g. runlocal")
  args = parser.parse_args(argv)
  demos = _demos()   # every family's demo (hvt_jax.families)
  unknown = [m for m in args.models.split(",") if m not in demos]
  if unknown:
    parser.error(f"--models {','.join(unknown)}: not a demo model; valid: "
                 f"{', '.join(demos)}")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from hvt_jax.cli import common  # pylint: disable=g-import-not-at-top
  common.console_logging()   # our own warnings and every library's errors
  models = tuple(args.models.split(","))
  seeds = tuple(int(s) for s in args.seeds.split(","))
  results = run_demo(args.workdir, models, arg=args.config_arg, num_train=args.num_train,
                     num_val=args.num_val, seeds=seeds)
  for demo in dict.fromkeys(demos[m] for m in models):   # each family's tables, in order
    rows = {row: results[row] for m in models if demos[m] is demo
            for row, *_ in _rows(m, demo)}
    print()
    print(demo.report(rows))
  for demo in dict.fromkeys(demos[m] for m in models):   # one free-text query per family
    model = next(m for m in models if demos[m] is demo)
    if demo.dataset in _QUERIES:
      print()
      print(_query(args.workdir, model, demo, args.config_arg, seeds))
  sys.stdout.flush()


def _hse_query(meta: dict[str, Any], vocab: set[str]) -> tuple[str, str]:
  """The "hse" demo: the names (its generator's pseudo-words) of the first val video's
  first two events whose names are in the vocabulary ``vocab`` (a small demo may never
  train on a rare event), e.g. "a person bami toku then fezo kalu"; and what they are.

  Raises:
    ValueError: no val video has such an event.
  """
  extra = meta["extra"]
  names = extra["event_names"]
  known = ((v, [names[e] for e in events if set(names[e].split()) <= vocab])
           for v, events in extra["clip_events"]["val"].items())
  video, found = next(((v, n) for v, n in known if n), (None, None))
  if video is None:
    raise ValueError("no event name of the demo's val videos is in its vocabulary")
  return "a person " + " then ".join(found[:2]), f"the names of {video}'s events"


def _moments_query(meta: dict[str, Any], vocab: set[str]) -> tuple[str, str]:
  """The "moments" demo: an attribute and an action word of its world (English words of
  the WordPiece ``vocab``), e.g. "someone red running"; and what they are."""
  del vocab
  extra = meta["extra"]
  return (f"someone {extra['attribute_words'][0]} {extra['event_words'][0]}",
          "an attribute and an action of the demo's world")


# Dataset variant -> its query, made of the words its generator stores in the metadata (the
# "experts" demo stores none).
_QUERIES = {"hse": _hse_query, "moments": _moments_query}


def _query(workdir: str, model: str, demo: Any, arg: str, seeds: tuple[int, ...]) -> str:
  """``hvt-eval --query`` (``evaluation.query``) on ``model``'s first-seed run, with a
  query made of the demo dataset's own words (``_QUERIES``); the answer to print."""
  from hvt_jax.evaluation import query  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline, reader  # pylint: disable=g-import-not-at-top
  config_arg = ",".join(filter(None, [f"model={model}" if len(demo.models) > 1 else "", arg]))
  config = _config(demo.config, config_arg)
  config.input.data_dir = _data_root(workdir, demo.dataset)
  config.seed = seeds[0]
  run_dir = os.path.normpath(os.path.join(workdir, model,
                                         f"seed{seeds[0]}" if len(seeds) > 1 else ""))
  data_dir, meta = pipeline.dataset_info(config)
  text, what = _QUERIES[demo.dataset](meta, set(reader.load_vocab(data_dir)))
  start = time.time()
  step, answers = query.run(config, run_dir, [text], top_k=3)
  print(f"[hvt-demo] query of {model.upper()} done in {time.time() - start:.0f} s", flush=True)
  command = (f"hvt-eval --config {demo.config}{':' + config_arg if config_arg else ''} "
             f"--workdir {run_dir} \\\n    --config.input.data_dir {config.input.data_dir} "
             f"--query {text!r} --top-k 3")
  return (f"A free-text query of {model.upper()}'s val corpus ({what}):\n{command}\n"
          + query.format_answers(answers, step))


if __name__ == "__main__":
  main()
