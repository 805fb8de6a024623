"""The README's own commands, prepare -> train -> eval, on tiny files in each release's layout.

The commands are read from README.md's bash blocks (so a changed README is what is tested),
one dataset per family: HSE on ActivityNet Captions, FLAT on TVR (``configs/hammer/tvr.py:
model=flat``: HAMMER's config, data and evaluator, and 60 % of HAMMER's compile time), MCHA
on MSR-VTT. For a family, the README's first ``hvt-train --config configs/<family>/<dataset>.py
[:arg]`` (with the family's arg, if it names one), every ``hvt-eval`` of the same config and
workdir, and the ``hvt-prepare`` command that writes the
data dir the training reads (its ``--config.input.data_dir`` or the config's default) run
verbatim in a directory that holds the release's files under their real names (written by
``tests/data_fixtures.py``) and a copy of ``configs/``, with the config's ``runlocal``
argument added (4 steps, a checkpoint every 2). One subprocess runs every family's commands
through the console scripts' own ``main`` functions, one after the other, with ``sys.argv``
set as the console scripts have it; after the HSE family it also evaluates the older
checkpoint (step 2) on the train split, which ``test_hse_metrics_match_a_numpy_ranking``
checks.

The console output is the test of what the tools print (issue 18, A10): progress bars,
metrics and our own warnings, not the config or the libraries' INFO records, which go to
the run's log files in ``<workdir>/logs/``.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import data_fixtures

REPO = pathlib.Path(__file__).resolve().parents[1]

FAMILIES = {
    "hse-activitynet_captions": ("configs/hse/activitynet_c3d.py",
                                 data_fixtures.write_activitynet_release),
    "flat-tvr": ("configs/hammer/tvr.py", data_fixtures.write_tvr_release),
    "mcha-msrvtt": ("configs/mcha/msrvtt.py", data_fixtures.write_msrvtt_release),
}
HSE = "hse-activitynet_captions"

# In-process: the console scripts' entry points, run in order with their argv, each job in
# its own directory. A failed command skips the rest of its family's jobs. Writes
# {family: exit status} to the file named by argv[2]; stderr gets a "@@ <family>" line
# before each job, so that each family's console can be told apart. Between two absl
# programs every flag goes back to its default, and the --config.<field> flags that
# ml_collections registered for the previous --config are dropped.
_DRIVER = """
import json, os, sys
from absl import flags
from hvt_jax.cli import eval as hvt_eval, prepare, train
mains = {"hvt-prepare": prepare.main, "hvt-train": train.main, "hvt-eval": hvt_eval.main}
jobs, status_file, status = json.loads(sys.argv[1]), sys.argv[2], {}
for family, cwd, argv in jobs:
  if status.setdefault(family, 0):
    continue
  os.chdir(cwd)
  print(f"@@ {family}", file=sys.stderr, flush=True)
  print("$ " + " ".join(argv), flush=True)
  sys.argv = argv
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)
  try:
    mains[argv[0]]()
  except SystemExit as e:
    status[family] = e.code or 0
  except Exception:
    import traceback
    traceback.print_exc()
    status[family] = 1
with open(status_file, "w") as f:
  json.dump(status, f)
"""

# Console lines the tools must not print by default (each kind was there before issue 18).
NOISE = {
    "config dump": re.compile(r"\] config:|^batch_size: |^  learning_rate: ", re.M),
    "orbax INFO": re.compile(r"checkpoint_manager\.py|orbax", re.I),
    "TFDS INFO": re.compile(r"dataset_info\.py|Downloading and preparing|downloaded and "
                            r"prepared|Constructing tf\.data"),
    "deprecation warnings": re.compile(r"is deprecated"),
    "TF C++ notices": re.compile(r"oneDNN custom operations|absl::InitializeLog"),
}
MAX_CONSOLE_LINES = 40   # a family's stderr: progress bars, our warnings, the log paths


def readme_commands() -> list[list[str]]:
  """Every ``hvt-*`` command in README.md's bash blocks as an argv: continuation lines
  joined, comments and ``[optional]`` parts dropped."""
  text = (REPO / "README.md").read_text(encoding="utf-8")
  out = []
  for block in re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", text, re.M | re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\[[^\]]*\]", " ", re.sub(r"(^|\s)#.*$", "", line))
      argv = shlex.split(line)
      if argv and argv[0].startswith("hvt-"):
        out.append(argv)
  return out


def _flag(argv: list[str], name: str) -> str | None:
  for i, a in enumerate(argv):
    if a == name and i + 1 < len(argv):
      return argv[i + 1]
    if a.startswith(name + "="):
      return a.split("=", 1)[1]
  return None


def _runlocal(argv: list[str]) -> list[str]:
  """A train/eval command with the config's runlocal argument added."""
  config = _flag(argv, "--config")
  tiny = config + ("," if ":" in config else ":") + "runlocal"
  return [{config: tiny, f"--config={config}": f"--config={tiny}"}.get(a, a) for a in argv]


def _get_config(config: str):
  """The ConfigDict of ``config``, "path[:arg]" as --config takes it."""
  path, _, arg = config.partition(":")
  return importlib.import_module(path.removesuffix(".py").replace("/", ".")).get_config(arg)


def family_commands(config: str) -> list[list[str]]:
  """The README's prepare, train and eval commands of one config ("path[:arg]": commands
  whose --config is that path with at least those args), as the module says.

  Raises:
    AssertionError: the README lacks one of them.
  """
  commands = [c for c in readme_commands() if "..." not in c]
  path, _, arg = config.partition(":")

  def of_config(c):
    got_path, _, got_arg = (_flag(c, "--config") or "").partition(":")
    return got_path == path and set(filter(None, arg.split(","))) <= set(got_arg.split(","))

  train = [c for c in commands if c[0] == "hvt-train" and of_config(c)]
  assert train, f"README.md has no runnable hvt-train --config {config}"
  train = train[0]
  workdir = _flag(train, "--workdir")
  evals = [c for c in commands
           if c[0] == "hvt-eval" and of_config(c) and _flag(c, "--workdir") == workdir]
  assert evals, f"README.md has no hvt-eval --config {config} --workdir {workdir}"
  data_dir = _flag(train, "--config.input.data_dir") or _get_config(config).input.data_dir
  prepare = [c for c in commands if c[0] == "hvt-prepare" and _flag(c, "--output") == data_dir]
  assert prepare, (f"no hvt-prepare in README.md writes {data_dir}, which "
                   f"{' '.join(train)} reads")
  return [prepare[0], _runlocal(train), *map(_runlocal, evals)]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
  """Runs every family's README commands in one process. Returns ({family: (its directory,
  its commands or why it has none, its exit status, its console)}, the process)."""
  root = tmp_path_factory.mktemp("readme")
  commands, jobs = {}, []
  for family, (config, write_release) in FAMILIES.items():
    cwd = root / family
    cwd.mkdir()
    try:
      commands[family] = family_commands(config)
    except AssertionError as e:
      commands[family] = str(e)
      continue
    write_release(cwd)
    shutil.copytree(REPO / "configs", cwd / "configs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    jobs += [(family, str(cwd), argv) for argv in commands[family]]
    if family == HSE:   # the older checkpoint on another split
      jobs.append((family, str(cwd), commands[family][2] + ["--step=2", "--split=train"]))
  env = data_fixtures.console_script_env(devices=1)
  for var in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
    env.pop(var, None)                 # the tools' own defaults, as a user has them
  status_file = root / "status.json"
  proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(jobs), str(status_file)],
                        cwd=root, env=env, capture_output=True, text=True, timeout=900)
  status = json.loads(status_file.read_text()) if status_file.exists() else {}
  parts: dict[str, list[str]] = {}   # each job's console starts with "@@ <family>"
  for family, text in re.findall(r"^@@ (\S+)\n(.*?)(?=^@@ |\Z)", proc.stderr, re.M | re.S):
    parts.setdefault(family, []).append(text)
  return {f: (root / f, commands[f], status.get(f), "".join(parts.get(f, [])))
          for f in FAMILIES}, proc


def _family(readme_run, family):
  """(directory, commands, workdir, console) of a family whose commands all succeeded."""
  runs, proc = readme_run
  cwd, commands, status, console = runs[family]
  assert not isinstance(commands, str), commands
  shown = "\n".join(shlex.join(c) for c in commands)
  assert status == 0, (f"README commands failed (exit {status}):\n{shown}\n"
                       f"{proc.stdout[-3000:]}\n{console[-5000:]}\n{proc.stderr[-3000:]}")
  return cwd, commands, cwd / _flag(commands[1], "--workdir"), console


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_readme_prepare_train_eval(family, readme_run):
  _, commands, workdir, console = _family(readme_run, family)
  evals = _get_config(FAMILIES[family][0]).evals
  default_split = next(iter(evals.values())).split
  for command in commands[1:]:
    split = _flag(command, "--split") or default_split
    metrics = json.loads((workdir / "eval" / split / "metrics.json").read_text())
    assert metrics["step"] == 4, (split, metrics)
  if family == "flat-tvr":   # TVR's submission files, also for the query-only test split
    for split in ("val", "test_public"):
      submission = json.loads((workdir / "eval" / split / "tvr_submission.json").read_text())
      assert submission["VR"] and submission["VCMR"], split

  # What a person sees: progress, metrics, our own warnings; the rest is in the log files.
  for kind, pattern in NOISE.items():
    assert not pattern.search(console), f"{kind} on the console:\n{console[-3000:]}"
  assert len(console.splitlines()) < MAX_CONSOLE_LINES, console
  # The trainer's orbax manager logs; hvt-eval, read-only, restores without one.
  for prog, info in (("hvt-train", "checkpoint_manager.py"), ("hvt-eval", "] restoring ")):
    logs = sorted((workdir / "logs").glob(f"{prog}.*.log"))
    assert logs, f"no {prog} log file in {workdir / 'logs'}"
    text = logs[-1].read_text(encoding="utf-8")
    assert "] config:" in text and info in text, text[:2000]
    assert f"{prog}: full log in {logs[-1]}" in console


def test_hse_metrics_match_a_numpy_ranking(readme_run):
  """The CLI's HSE metrics and predictions equal an independent host-side ranking of the
  checkpoint's embeddings (cosine in float64, numpy), so a wrong ranking fails here; the
  older checkpoint's evaluation on the train split has its own metrics.json."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  cwd, commands, workdir, _ = _family(readme_run, HSE)
  config_path = _flag(commands[1], "--config").split(":")[0]
  c = importlib.import_module(config_path.removesuffix(".py").replace("/", ".")).get_config(
      "runlocal")
  c.input.data_dir = str(cwd / _flag(commands[1], "--config.input.data_dir"))
  split = c.evals.val.split
  metrics = json.loads((workdir / "eval" / split / "metrics.json").read_text())
  train_metrics = json.loads((workdir / "eval" / "train" / "metrics.json").read_text())
  assert train_metrics["step"] == 2 and train_metrics["num_examples"] == 12
  assert list(workdir.glob("events.out.tfevents*")), "no TensorBoard events written"
  assert (workdir / "config.json").exists()
  assert (workdir / "eval" / split / "recall_curve.png").stat().st_size > 1000

  s = train.setup(c)
  state = train.restore_or_init(s, train.checkpoint_manager(str(workdir), c))
  model = nnx.merge(s.graphdef, state["params"])
  texts, videos, ids = [], [], []
  ds, _, _ = pipeline.eval_dataset(c, split)
  for batch, host in pipeline.iterate(ds, s.mesh, pipeline.get_view("hse")):
    out = jax.device_get(model.embed(batch))
    real = host["example_mask"]
    texts.append(out["paragraph"][real])
    videos.append(out["video"][real])
    ids.extend(v.decode() for v in host["video_id"][real])
  assert metrics["num_examples"] == len(ids) == 8
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = unit(np.concatenate(texts).astype(np.float64)) @ unit(
      np.concatenate(videos).astype(np.float64)).T
  for prefix, s_ in (("p2v", sim), ("v2p", sim.T)):
    want = retrieval.retrieval_metrics(s_)
    for k in ("R@1", "R@5", "R@10", "MdR"):
      assert metrics[f"{prefix}/{k}"] == want[k], (prefix, k)
    np.testing.assert_allclose(metrics[f"{prefix}/MnR"], want["MnR"], rtol=1e-3)
  rows = [json.loads(line) for line in
          (workdir / "eval" / split / "p2v_predictions.jsonl").read_text().splitlines()]
  assert [r["query"] for r in rows] == ids
  order = np.argsort(-sim, axis=1, kind="stable")
  for i, r in enumerate(rows):
    assert [t[0] for t in r["top_k"]] == [ids[j] for j in order[i, :len(r["top_k"])]]
    assert r["rank"] == retrieval.ranks(sim)[i]
  assert "p2v/R@1" in readme_run[1].stdout and "hse train" in readme_run[1].stdout
