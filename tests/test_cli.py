"""End to end through the console scripts: hvt-prepare demo -> hvt-train -> hvt-eval."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def _run(*args, env_devices=2):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={env_devices}")
  proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  return proc.stdout + proc.stderr


def test_prepare_train_eval_through_console_scripts(tmp_path):
  data = tmp_path / "data"
  out = _run("hvt-prepare", "demo", "--output", str(data), "--num-train", "48",
             "--num-val", "24")
  assert "demo" in out
  workdir = tmp_path / "run"
  config = f"{REPO}/configs/hse/demo.py:runlocal"
  _run("hvt-train", f"--config={config}", f"--workdir={workdir}",
       f"--config.input.data_dir={data}")
  assert (workdir / "config.json").exists()
  assert list(workdir.glob("events.out.tfevents*")), "no TensorBoard events written"
  metrics_file = workdir / "eval" / "val" / "metrics.json"
  metrics_file.unlink()
  out = _run("hvt-eval", f"--config={config}", f"--workdir={workdir}",
             f"--config.input.data_dir={data}")
  metrics = json.loads(metrics_file.read_text())
  for direction in ("p2v", "v2p"):
    for k in ("R@1", "R@5", "R@10", "R@50"):
      assert 0.0 <= metrics[f"{direction}/{k}"] <= 100.0
    assert metrics[f"{direction}/R@50"] == 100.0  # 24 candidates: every rank <= 50
    assert 1.0 <= metrics[f"{direction}/MdR"] <= 24.0
  assert metrics["num_examples"] == 24 and metrics["step"] == 4
  assert "p2v/R@1" in out and "hse val" in out
  assert (workdir / "eval" / "val" / "recall_curve.png").stat().st_size > 1000
  # An older checkpoint on another split.
  out = _run("hvt-eval", f"--config={config}", f"--workdir={workdir}",
             f"--config.input.data_dir={data}", "--step=2", "--split=train")
  train_metrics = json.loads((workdir / "eval" / "train" / "metrics.json").read_text())
  assert train_metrics["step"] == 2 and train_metrics["num_examples"] == 48
  assert "hse train" in out


def test_demo_script_runs_both_models(tmp_path):
  out = _run("hvt-demo", "--workdir", str(tmp_path), "--num-train", "48", "--num-val", "24",
             "--config-arg", "runlocal")
  assert "HSE" in out and "FSE" in out and "p2v/R@1" in out
  for model in ("hse", "fse"):
    assert (tmp_path / model / "eval" / "val" / "metrics.json").exists()
