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
  _check_against_numpy_ranking(config, workdir, data, metrics)
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


def _check_against_numpy_ranking(config_path, workdir, data, metrics):
  """The CLI's metrics and predictions equal an independent host-side ranking of the
  checkpoint's embeddings (cosine in float64, numpy), so a wrong ranking fails here."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from configs.hse import demo  # pylint: disable=g-import-not-at-top
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  del config_path
  c = demo.get_config("runlocal")
  c.input.data_dir = str(data)
  s = train.setup(c)
  state = train.restore_or_init(s, train.checkpoint_manager(str(workdir), c))
  model = nnx.merge(s.graphdef, state["params"])
  texts, videos, ids = [], [], []
  ds, _, _ = pipeline.eval_dataset(c, "val")
  for batch, host in pipeline.iterate(ds, s.mesh, pipeline.get_view("hse")):
    out = jax.device_get(model.embed(batch))
    real = host["example_mask"]
    texts.append(out["paragraph"][real])
    videos.append(out["video"][real])
    ids.extend(v.decode() for v in host["video_id"][real])
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = unit(np.concatenate(texts).astype(np.float64)) @ unit(
      np.concatenate(videos).astype(np.float64)).T
  for prefix, s_ in (("p2v", sim), ("v2p", sim.T)):
    want = retrieval.retrieval_metrics(s_)
    for k in ("R@1", "R@5", "R@10", "MdR"):
      assert metrics[f"{prefix}/{k}"] == want[k], (prefix, k)
    np.testing.assert_allclose(metrics[f"{prefix}/MnR"], want["MnR"], rtol=1e-3)
  rows = [json.loads(line) for line in
          (workdir / "eval" / "val" / "p2v_predictions.jsonl").read_text().splitlines()]
  assert [r["query"] for r in rows] == ids
  order = np.argsort(-sim, axis=1, kind="stable")
  for i, r in enumerate(rows):
    assert [t[0] for t in r["top_k"]] == [ids[j] for j in order[i, :len(r["top_k"])]]
    assert r["rank"] == retrieval.ranks(sim)[i]


def test_user_errors_are_one_line_not_a_traceback(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
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
