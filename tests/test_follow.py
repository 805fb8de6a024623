"""An evaluation job beside the trainer (hvt-eval --follow), best checkpoints (config.evals.
<name>.best, <run>/best, --step best) and exports (hvt-export)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest

from hvt_jax import checkpoints, follow, pretrained, train
from hvt_jax.cli import export
from hvt_jax.input import pipeline
from tests import data_fixtures, tiny_data

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def _wait(what, predicate, timeout: float, procs=()):
  end = time.time() + timeout
  while not predicate():
    for p in procs:
      assert p.poll() is None, f"{p.args[0]} exited ({p.returncode}) while waiting for {what}"
    assert time.time() < end, f"timed out waiting for {what}"
    time.sleep(0.05)


def _hashes(directory: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def _tb_steps(directory: pathlib.Path, tag: str) -> list[int]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return sorted(e.step for f in directory.glob("events.out.tfevents.*")
                for e in tf.compat.v1.train.summary_iterator(str(f))
                for v in e.summary.value if v.tag == tag)


def test_follow_job_beside_a_live_trainer(data_dir, tmp_path):
  """A follow job (hvt-eval --follow, 2 devices) started before the run exists waits (one
  line); the trainer (hvt-train, 8 devices, async saves) starts; the job is stopped by
  SIGTERM after its first evaluation and restarted (here in a thread of this process) while
  the trainer runs: every committed step is evaluated exactly once, its metrics equal
  hvt-eval's on that step, the job leaves the checkpoints untouched, and the restarted job
  stops by itself after the final step."""
  run = tmp_path / "run"
  args = [f"--config={REPO}/configs/hse/demo.py:runlocal", f"--workdir={run}",
          f"--config.input.data_dir={data_dir}", "--config.num_train_steps=6",
          "--config.checkpoint.max_to_keep=20"]
  config = tiny_data.hse_config(data_dir, num_train_steps=6,
                                **{"checkpoint.max_to_keep": 20})
  logs = {}

  def start(name, cmd, devices):
    logs[name] = (tmp_path / f"{name}.out", tmp_path / f"{name}.err")
    return subprocess.Popen(cmd, cwd=REPO, env=data_fixtures.console_script_env(devices),
                            stdout=logs[name][0].open("w"), stderr=logs[name][1].open("w"))

  def err(name):
    return logs[name][1].read_text()

  state_file = pathlib.Path(follow.job_dir(str(run), ["val"])) / follow.STATE_FILE
  first = start("follow", [str(BIN / "hvt-eval"), *args, "--follow", "--poll=0.05",
                           "--timeout=200"], devices=2)
  trainer = None
  said, redone, saved = [], [], {}
  try:
    _wait("the waiting line", lambda: "no run there yet" in err("follow"), 120, [first])
    trainer = start("train", [str(BIN / "hvt-train"), *args], devices=8)
    _wait("a first evaluation", lambda: follow.load_state(str(state_file))["evaluated"],
          240, [first])
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == -signal.SIGTERM
    before = follow.load_state(str(state_file))["evaluated"]
    second = threading.Thread(target=lambda: redone.extend(follow.follow(
        config, str(run), poll=0.05, timeout=200, say=said.append)))
    second.start()
    assert trainer.wait(timeout=300) == 0, err("train")[-3000:]
    saved = _hashes(run / "checkpoints")
    second.join(timeout=300)
    assert not second.is_alive()
  finally:
    for p in (first, trainer):
      if p is not None and p.poll() is None:
        p.kill()
  (waiting,) = [l for l in err("follow").splitlines() if "no run there yet" in l]
  assert waiting.startswith(f"hvt-eval: waiting for {run / 'checkpoints'}"), waiting
  assert said[-1] == "training finished at step 6; every checkpoint is evaluated: stopping"
  steps = checkpoints.complete_steps(str(run))
  assert steps == [2, 4, 6] and sorted(os.listdir(run / "checkpoints")) == ["2", "4", "6"]
  assert _hashes(run / "checkpoints") == saved     # the job never wrote there
  state = follow.load_state(str(state_file))
  assert state == {"evaluated": steps, "skipped": []}
  assert before and redone == [n for n in steps if n not in before], (before, redone)
  assert _tb_steps(pathlib.Path(follow.job_dir(str(run), ["val"])), "val/p2v/R@1") == steps
  for step in steps:
    assert json.loads((run / "eval" / "val" / f"step_{step}" / "metrics.json").read_text())[
        "step"] == step
  # The first job's step (2 devices) equals hvt-eval's on it (8 devices).
  metrics = json.loads((run / "eval" / "val" / f"step_{before[0]}" / "metrics.json")
                       .read_text())
  _, results = train.evaluate_checkpoint(config, str(run), step=before[0])
  assert {f"val/{k}": v for k, v in metrics.items() if k != "step"} == results


def _params(step: int):
  return {"w": jnp.arange(3.0) + step, "b": {"c": jnp.full((2, 2), float(step))}}


def test_keep_best_direction_and_atomic_commit(tmp_path, monkeypatch):
  best = tmp_path / checkpoints.BEST
  spec = checkpoints.BestSpec("val", "val", "p2v/R@1", "max")
  metrics = lambda v: {"val/p2v/R@1": v, "val/num_examples": 20.0}  # noqa: E731
  kept = [step for step, value in ((2, 10.0), (4, 5.0), (6, 10.0), (8, 12.0))
          if checkpoints.keep_best(spec, metrics(value), _params(step), step, str(tmp_path))]
  assert kept == [2, 8]                        # higher is better; a tie keeps the earlier
  info = checkpoints.params_info(str(best))
  assert (info["step"], info["value"], info["metrics"]["num_examples"]) == (8, 12.0, 20.0)
  assert sorted(os.listdir(best)) == ["2", "8", "model.json"]   # the previous is kept
  # A commit that never happens (killed before model.json is replaced): 8 stays the best.
  monkeypatch.setattr(checkpoints, "write_json", lambda *a: (_ for _ in ()).throw(OSError()))
  with pytest.raises(OSError):
    checkpoints.keep_best(spec, metrics(50.0), _params(10), 10, str(tmp_path))
  monkeypatch.undo()
  step_dir, step = checkpoints.resolve(str(best))
  assert step == 8 and step_dir == str(best / "8")
  np.testing.assert_array_equal(checkpoints.restore(step_dir)["params"]["w"], [8, 9, 10])
  # Lower is better (a best kept under another direction is replaced first).
  low = checkpoints.BestSpec("val", "val", "p2v/MdR", "min")
  kept = [s for s, v in ((12, 7.0), (14, 9.0), (16, 3.0))
          if checkpoints.keep_best(low, {"val/p2v/MdR": v}, _params(s), s, str(tmp_path))]
  assert kept == [12, 16] and checkpoints.params_info(str(best))["value"] == 3.0
  assert sorted(os.listdir(best)) == ["12", "16", "model.json"]
  assert not checkpoints.keep_best(low, {"test/p2v/MdR": 1.0}, _params(18), 18,
                                   str(tmp_path))        # another split: not this one's
  with pytest.raises(ValueError, match=r"config.evals.val.best='p2v/MdR' is not a metric of "
                     r"split 'val'; its metrics: \['p2v/R@1'\]"):
    checkpoints.keep_best(low, {"val/p2v/R@1": 1.0}, _params(18), 18, str(tmp_path))


def test_best_config_errors(data_dir):
  c = tiny_data.hse_config(data_dir)
  c.evals.val.best_mode = "higher"
  c.evals.val.best = "p2v/R@1"
  with pytest.raises(ValueError, match=r"config.evals.val.best_mode='higher'; valid: 'max'"):
    train.check_config(c)
  c.evals.val.best = ""
  c.evals.val.best_mode = "max"       # every config's default (configs/common.py): no best
  assert checkpoints.best_spec(c) is None
  c.evals.val.best_mode = "min"
  with pytest.raises(ValueError, match=r"config.evals.val.best_mode is set but "
                     r"config.evals.val.best \(the metric\) is not"):
    train.check_config(c)
  c.evals.val.best = "p2v/R@1"
  c.evals.other = dict(c.evals.val.to_dict(), prefix="other")
  with pytest.raises(ValueError, match=r"config.evals.other.best and config.evals.val.best "
                     r"are both set"):
    train.check_config(c)


@pytest.fixture(scope="module")
def best_run(data_dir, tmp_path_factory):
  """A run trained alone (no eval job) that keeps its best p2v/MnR (lower is better) from
  in-loop evaluations every 2 steps; returns (run dir, config, {step: results})."""
  run = tmp_path_factory.mktemp("best") / "run"
  c = tiny_data.hse_config(data_dir, num_train_steps=6, **{"checkpoint.max_to_keep": 10})
  c.evals.val.log_steps = 2
  c.evals.val.best = "p2v/MnR"
  c.evals.val.best_mode = "min"
  seen = {}
  real = train.evaluators.run_all

  def recording(evals, state, step, writer, workdir):
    seen[step] = real(evals, state, step, writer, workdir)
    return seen[step]

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train.evaluators, "run_all", recording)
    train.train_and_evaluate(c, str(run))
  return run, c, seen


def test_training_alone_keeps_best_and_step_best_and_init_from_read_it(best_run, tmp_path):
  run, c, seen = best_run
  assert sorted(seen) == [2, 4, 6]
  values = {s: r["val/p2v/MnR"] for s, r in seen.items()}
  expected = min(values, key=lambda s: (values[s], s))
  info = checkpoints.params_info(str(run / "best"))
  assert (info["step"], info["value"], info["mode"]) == (expected, values[expected], "min")
  assert checkpoints.finished_step(str(run)) == 6
  step, results = train.evaluate_checkpoint(c, str(run), step="best")
  assert step == expected and results == seen[expected]
  loaded = pretrained._checkpoint(dict(source=str(run / "best")), [])  # pylint: disable=protected-access
  want = pretrained.flatten(checkpoints.restore(str(run / "checkpoints" / str(expected)))[
      "params"])
  assert sorted(loaded) == sorted(want)
  for k, v in want.items():
    np.testing.assert_array_equal(loaded[k], v)
  with pytest.raises(FileNotFoundError, match=r"--step best: no best checkpoint in .*other "
                     r"\(.*other/best does not exist\); config.evals.<name>.best names"):
    train.locate(str(tmp_path / "other"), "best")


def test_follow_keeps_best_and_latest_only_skips(best_run, tmp_path):
  """An eval job on a finished run: with latest_only only the newest step is evaluated;
  best/ follows the job's metric (here p2v/MnR, higher: the direction is the config's)."""
  run, c, seen = best_run
  c = tiny_data.hse_config(c.input.data_dir, **{"evals.val": dict(c.evals.val.to_dict(),
                                                                  best_mode="max")})
  said = []
  done = follow.follow(c, str(run), latest_only=True, poll=0.01, timeout=30, say=said.append)
  assert done == [6] and said[0] == "falling behind: skipping steps [2, 4], evaluating step 6"
  assert follow.load_state(follow.job_dir(str(run), ["val"]) + "/state.json") == {
      "evaluated": [6], "skipped": [2, 4]}
  info = checkpoints.params_info(str(run / "best"))
  assert (info["step"], info["mode"]) == (6, "max")     # replaced: another direction
  # Restarted: nothing left to do, it stops at once.
  assert follow.follow(c, str(run), poll=0.01, timeout=30, say=said.append) == []
  assert said[-1] == "training finished at step 6; every checkpoint is evaluated: stopping"
  # No run (yet): it says so once, writes nothing, and stops after --timeout.
  said.clear()
  none = tmp_path / "none"
  assert follow.follow(c, str(none), timeout=0.2, poll=0.05, say=said.append) == []
  assert said == [f"waiting for {none / 'checkpoints'}: no run there yet (stops after 0.2 s "
                  "without a checkpoint)",
                  f"no new checkpoint in {none / 'checkpoints'} for 0.2 s: stopping"]
  assert not none.exists()


def test_a_best_metric_the_split_lacks_commits_nothing(best_run, tmp_path):
  """The error comes before the step's files and scalars are committed, so the job
  restarted with the right metric evaluates that step once, as if for the first time."""
  run, c, _ = best_run
  (tmp_path / "checkpoints").mkdir()
  shutil.copytree(run / "checkpoints" / "6", tmp_path / "checkpoints" / "6")
  shutil.copy(run / "config.json", tmp_path / "config.json")
  c = tiny_data.hse_config(c.input.data_dir, **{"evals.val": dict(c.evals.val.to_dict(),
                                                                  best="p2v/R@2")})
  with pytest.raises(ValueError, match=r"best='p2v/R@2' is not a metric of split 'val'"):
    follow.follow(c, str(tmp_path), poll=0.01, timeout=30)
  assert not (tmp_path / "eval" / "val").exists()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  logged = [v.tag for f in (tmp_path / "eval").glob("follow-val/events.*")
            for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value]
  assert logged == []


def test_export_has_no_optimizer_state_and_eval_and_init_from_read_it(best_run, tmp_path,
                                                                      capsys):
  run, c, seen = best_run
  out = tmp_path / "export"
  # As on another machine: one device, where the run saved on 8 (hvt-export's entry point).
  proc = subprocess.run([sys.executable, "-m", "hvt_jax.cli.export", "--workdir", str(run),
                         "--step", "4", "--output", str(out)], cwd=REPO, capture_output=True,
                        text=True, env=data_fixtures.console_script_env(1), timeout=300)
  assert proc.returncode == 0 and f"hvt-export: wrote {out}" in proc.stdout, proc.stderr[-3000:]
  info = checkpoints.params_info(str(out))
  assert info["step"] == 4 and info["source"] == str(run)
  shapes = checkpoints.saved_shapes(str(out / "4"))
  assert {k[0].key for k in shapes} == {"params"}
  full = checkpoints.saved_shapes(str(run / "checkpoints" / "4"))
  assert {k[0].key for k in full} >= {"params", "opt_state"}
  assert sorted(os.listdir(out / "vocab")) == ["metadata.json", "vocab.txt"]
  # hvt-eval reads it with its own config.py; the metrics equal the run's step 4.
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("exported_config", out / "config.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  step, results = train.evaluate_checkpoint(module.get_config(), str(out))
  assert step == 4 and results == seen[4]
  loaded = pretrained._checkpoint(dict(source=str(out)), [])  # pylint: disable=protected-access
  want = pretrained.flatten(checkpoints.restore(str(run / "checkpoints" / "4"))["params"])
  for k, v in want.items():
    np.testing.assert_array_equal(loaded[k], v)
  # Bad input: one line each, exit 2.
  no_best = tmp_path / "no_best"
  no_best.mkdir()
  (no_best / "config.json").write_text((run / "config.json").read_text())
  for argv, want in (
      (["--workdir", str(run), "--output", str(out)], f"--output {out} exists and is not empty"),
      (["--workdir", str(tmp_path), "--output", str(tmp_path / "x")],
       f"--workdir {tmp_path}: no config.json there"),
      (["--workdir", str(no_best), "--step", "best", "--output", str(tmp_path / "y")],
       f"--step best: no best checkpoint in {no_best}")):
    with pytest.raises(SystemExit) as e:
      export.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith(
        f"hvt-export: error: {want}"), lines


def test_follow_waits_for_a_resumed_run(data_dir, tmp_path):
  """A finished run resumed for more steps (the eval job restarted before the trainer, which
  removes training_finished.json only once it starts) is not over: the job waits."""
  c = tiny_data.hse_config(data_dir, num_train_steps=6)
  checkpoints.write_json(str(tmp_path / checkpoints.FINISHED), {"step": 4})
  said = []
  assert follow.follow(c, str(tmp_path), timeout=0.3, poll=0.05, say=said.append) == []
  assert said[0] == (f"{tmp_path}/training_finished.json records step 4, "
                     "config.num_train_steps=6: waiting for the resumed trainer")
  assert said[-1].startswith("no new checkpoint in ")


def test_follow_refuses_an_export(tmp_path):
  """An export (or best/) has no checkpoints to follow: one error, not a wait for a run."""
  checkpoints.write_json(str(tmp_path / checkpoints.MODEL_FILE), {"step": 4, "params": "4"})
  with pytest.raises(ValueError, match=r"--follow: .* is a parameters-only checkpoint"):
    follow.follow(tiny_data.hse_config(str(tmp_path)), str(tmp_path), timeout=1, poll=0.1)


def test_an_export_is_evaluated_only_with_its_own_vocabulary(data_dir, tmp_path):
  """Evaluating or querying an export on a dataset whose vocab.txt differs (other token ids
  for the same words) is one error, before anything is restored."""
  c = tiny_data.hse_config(data_dir)
  vocab = pathlib.Path(pipeline.dataset_info(c)[0], "vocab.txt").read_text()
  checkpoints.write_json(str(tmp_path / checkpoints.MODEL_FILE), {"step": 4, "params": "4"})
  (tmp_path / "vocab").mkdir()
  (tmp_path / "vocab" / "vocab.txt").write_text(vocab)
  train.check_export_vocab(str(tmp_path), c)          # the same: fine
  lines = vocab.splitlines()
  (tmp_path / "vocab" / "vocab.txt").write_text("\n".join([lines[0], *lines[:0:-1]]) + "\n")
  with pytest.raises(ValueError, match=r"the export's vocabulary .*vocab.txt is not the "
                     r"dataset's .*vocab.txt"):
    train.evaluate_checkpoint(c, str(tmp_path))


def test_step_best_without_a_best_is_one_line(data_dir, tmp_path):
  proc = subprocess.run(
      [str(BIN / "hvt-eval"), f"--config={REPO}/configs/hse/demo.py:runlocal",
       f"--workdir={tmp_path}", "--step=best", f"--config.input.data_dir={data_dir}"],
      cwd=REPO, env=data_fixtures.console_script_env(1), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  (line,) = [l for l in proc.stderr.splitlines() if l.startswith("hvt-eval: error:")]
  assert line.startswith(f"hvt-eval: error: --step best: no best checkpoint in {tmp_path}")
