"""The console scripts as installed: hvt-demo end to end, and the one-line user errors.

(prepare -> train -> eval through the scripts' main functions, with an independent check of
the metrics, is tests/test_readme_commands.py, on the README's own commands.)
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests import data_fixtures

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def _run(*args, env_devices=2):
  proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO,
                        env=data_fixtures.console_script_env(env_devices),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  return proc.stdout + proc.stderr


def test_demo_script_runs_both_models(tmp_path):
  out = _run("hvt-demo", "--workdir", str(tmp_path), "--num-train", "48", "--num-val", "24",
             "--config-arg", "runlocal")
  assert "HSE" in out and "FSE" in out and "p2v/R@1" in out
  for model in ("hse", "fse"):
    assert (tmp_path / model / "eval" / "val" / "metrics.json").exists()


def test_user_errors_are_one_line_not_a_traceback(tmp_path):
  env = data_fixtures.console_script_env(devices=1)
  proc = subprocess.run(
      [str(BIN / "hvt-train"), f"--config={REPO}/configs/hse/demo.py:runlocal",
       f"--workdir={tmp_path / 'run'}", f"--config.input.data_dir={tmp_path / 'nowhere'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "hvt-train: error: dataset dir" in proc.stderr and "nowhere" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()           # a failed start writes nothing
  proc = subprocess.run(
      [str(BIN / "hvt-train"), f"--config={REPO}/configs/hse/demo.py:runlocal",
       f"--workdir={tmp_path / 'run'}", "--config.schedule.learnig_rate=1e-3"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert 'Did you mean "learning_rate"' in proc.stderr
  assert "bad --config override (in --config.schedule.learnig_rate)" in proc.stderr


def test_console_shows_our_warnings_and_every_error(capsys):
  """The console filter of the tools (hvt_jax.cli.common.console_logging): our own warnings
  and every library's errors; a library's INFO and warnings, and our INFO, only with
  --verbosity."""
  import logging  # pylint: disable=g-import-not-at-top
  from hvt_jax.cli import common  # pylint: disable=g-import-not-at-top
  own = str(REPO / "hvt_jax" / "train.py")
  lib = str(pathlib.Path(logging.__file__).parent.parent / "site-packages" / "orbax" / "x.py")

  def emit(path, level, msg):
    logging.getLogger().handle(logging.LogRecord("absl", level, path, 1, msg, (), None))
    return capsys.readouterr().err

  root = logging.getLogger()
  saved = root.level, list(root.handlers)
  try:
    common.console_logging()
    assert "our warning" in emit(own, logging.WARNING, "our warning")
    assert "their error" in emit(lib, logging.ERROR, "their error")
    assert emit(lib, logging.WARNING, "their deprecation warning") == ""
    assert emit(lib, logging.INFO, "their info") == ""
    assert emit(own, logging.INFO, "our info") == ""
    common.console_logging(verbosity=0)
    assert "their info" in emit(lib, logging.INFO, "their info")
    assert emit(lib, logging.DEBUG, "their debug") == ""
  finally:
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    common._HANDLERS.clear()  # pylint: disable=protected-access
    logging.captureWarnings(False)


def test_demo_learns_its_models_from_the_families_table(tmp_path, monkeypatch, capsys):
  """hvt-demo's models are the families' ``Demo``s: MCHA's demo writes the multi-expert
  data, trains configs/mcha/demo.py and its ablations (w/o LAM, w/o HRM: ``Demo.ablations``)
  for each seed and prints them side by side; an unknown model is an error listing every
  demo model of the table. (Training itself is stubbed: the MCHA demo config trains through
  the console scripts in test_mcha.)"""
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  from hvt_jax.cli import demo  # pylint: disable=g-import-not-at-top
  trained = []

  def fake_train(config, workdir):
    m = config.model
    trained.append((m.lam, m.hrm, config.seed, config.loss.beta, config.input.data_dir,
                    config.num_train_steps, os.path.relpath(workdir, tmp_path)))
    return {"val/t2v/R@1": 10.0 * m.lam + 20.0 * m.hrm + config.seed, "val/v2t/R@1": 25.0}

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  demo.main(["--workdir", str(tmp_path), "--models", "mcha", "--num-train", "8",
             "--num-val", "4", "--config-arg", "runlocal,paper_loss", "--seeds", "0,1,2"])
  out = capsys.readouterr().out
  data = str(tmp_path / "data_experts")
  assert trained == [(lam, hrm, seed, 1e-4, data, 4, f"{name}/seed{seed}")
                     for seed in (0, 1, 2)
                     for lam, hrm, name in ((True, True, "mcha"), (False, True, "mcha-lam-false"),
                                            (True, False, "mcha-hrm-false"))]
  assert "Text->video (t2v)" in out and "25.00" in out
  lines = {l.split("  ")[0]: l for l in out.splitlines()}   # row name -> its line
  for row, r1 in (("MCHA", 31.0), ("MCHA w/o LAM", 21.0), ("MCHA w/o HRM", 11.0)):
    assert f"{r1:.2f}±0.82" in lines[row], (row, out)
  with pytest.raises(SystemExit):
    demo.main(["--models", "hse,vse"])
  err = capsys.readouterr().err
  assert "--models vse: not a demo model; valid: hse, fse, hammer, flat, mcha" in err


def test_a_config_arg_the_file_rejects_is_one_line(tmp_path):
  """A typo'd ``:arg`` key, or a value outside the valid ones: one line naming the arg and
  the valid values, exit 2, for hvt-train and hvt-eval alike (before absl parses flags)."""
  env = data_fixtures.console_script_env(devices=1)
  for prog, arg, want in (("hvt-train", "modle=fse", "config arg 'modle' unknown; valid: "),
                          ("hvt-eval", "model=fsee", "model=fsee")):
    proc = subprocess.run(
        [str(BIN / prog), f"--config={REPO}/configs/hse/demo.py:{arg}",
         f"--workdir={tmp_path / 'run'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith(f"{prog}: error:")]
    assert len(lines) == 1 and want in lines[0] and f"demo.py:{arg}" in lines[0], lines
