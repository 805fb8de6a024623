"""Trainer tests: 1 vs 8 devices, checkpoint round trip, exact resume, NaN stop, SIGTERM."""

from __future__ import annotations

import json
import re
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from hvt_jax import checkpoints, flops, train
from hvt_jax.input import pipeline
from tests import data_fixtures, tiny_data

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(data_dir, model="hse", **overrides):
  return tiny_data.hse_config(data_dir, model, **overrides)


def _first_batch(config, s):
  ds = pipeline.train_dataset(config, 0)
  return next(pipeline.iterate(ds, s.mesh, pipeline.get_view(config.model.name)))[0]


def _run_one_step(config):
  s = train.setup(config)
  state = train.init_state(s)
  batch = _first_batch(config, s)
  with jax.set_mesh(s.mesh):
    state, metrics = train.make_train_step(s)(state, batch)
  return jax.device_get(state["params"]), jax.device_get(metrics)


@pytest.mark.parametrize("model", ["hse", "fse"])
def test_one_vs_eight_devices_same_step(data_dir, model):
  p1, m1 = _run_one_step(_config(data_dir, model, mesh_devices=1))
  p8, m8 = _run_one_step(_config(data_dir, model))
  assert jax.device_count() == 8
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=2e-5, atol=1e-6, err_msg=k)
  # Adam normalises tiny gradients, so compare with an absolute tolerance well below the
  # 1e-3 step size.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), p1, p8)
  # The step must have trained something: the loss terms are all present and positive.
  assert m1["loss"] > 0 and m1["norm/grad"] > 0
  if model == "hse":
    assert {"loss/match_high", "loss/match_low", "loss/cluster_low", "loss/match_context",
            "loss/recon_high", "loss/recon_low"} <= set(m1)


def test_fsdp_rules_shard_params_and_match_data_parallel(data_dir):
  c = _config(data_dir, sharding_rules=(("vocab", None), ("embed", None),
                                        ("hidden_in", None), ("hidden", ("data", "model"))))
  s = train.setup(c)
  state = train.init_state(s)
  w = state["params"]["video_low"]["gru"]["w_i"][...]
  assert w.sharding.spec[2] == ("data", "model") or w.sharding.spec[2] == "data" or \
      w.sharding.spec[2] == ("data",), w.sharding.spec
  assert len({sh.data.shape for sh in w.addressable_shards}) == 1
  assert w.addressable_shards[0].data.shape[2] == w.shape[2] // 8
  p_fsdp, m_fsdp = _run_one_step(c)
  p_dp, m_dp = _run_one_step(_config(data_dir))
  np.testing.assert_allclose(m_fsdp["loss"], m_dp["loss"], rtol=2e-5)
  # The *updated* parameters agree (Adam's normalised step: absolute tolerance << 1e-3).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               p_fsdp, p_dp)
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       p_dp, jax.device_get(train.init_state(train.setup(_config(
                           data_dir)))["params"]))
  assert max(jax.tree.leaves(moved)) > 1e-4          # the step changed the parameters


def test_train_step_compiles_once(data_dir):
  """Recompile guard: every step of a run reuses one executable."""
  c = _config(data_dir)
  s = train.setup(c)
  state = train.init_state(s)
  step_fn = train.make_train_step(s)
  view = pipeline.get_view(c.model.name)
  with jax.set_mesh(s.mesh):
    for (batch, _), _ in zip(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh, view),
                             range(3)):
      state, _ = step_fn(state, batch)
  assert step_fn._cache_size() == 1  # pylint: disable=protected-access


def test_checkpoint_restore_gives_identical_next_step(data_dir, tmp_path):
  c = _config(data_dir)
  s = train.setup(c)
  mngr = train.checkpoint_manager(str(tmp_path), c)
  state = train.init_state(s)
  step_fn = train.make_train_step(s)
  batches = (b for b, _ in pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                            pipeline.get_view(c.model.name)))
  with jax.set_mesh(s.mesh):
    state, _ = step_fn(state, next(batches))
    mngr.save(1, args=train.ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    batch = next(batches)
    expected, _ = step_fn(jax.tree.map(lambda x: x.copy(), state), batch)
    restored = train.restore_or_init(s, mngr)
    assert int(restored["step"]) == 1
    got, _ = step_fn(restored, batch)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               jax.device_get(expected), jax.device_get(got))


class _Recorder:
  """A metric writer that keeps every scalar it is given (and forwards to the real one)."""

  def __init__(self, inner):
    self.inner, self.scalars = inner, {}

  def write_scalars(self, step, scalars):
    self.scalars.setdefault(step, {}).update(scalars)
    self.inner.write_scalars(step, scalars)

  def __getattr__(self, name):
    return getattr(self.inner, name)


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
  """A 4-step run with an evaluation at the end: (its workdir, {step: scalars logged})."""
  workdir = tmp_path_factory.mktemp("straight")
  recorders = []
  create = train.metric_writers.create_default_writer

  def recording(*args, **kwargs):
    recorders.append(_Recorder(create(*args, **kwargs)))
    return recorders[-1]

  with pytest.MonkeyPatch.context() as m:
    m.setattr(train.metric_writers, "create_default_writer", recording)
    train.train_and_evaluate(_config(data_dir, num_train_steps=4), str(workdir))
  return workdir, recorders[0].scalars


def test_trainer_and_evaluator_log_flops(data_dir, straight_run):
  """The step's FLOPs (hvt_jax/flops.py), as XLA counts the compiled step on all devices,
  its rate, and the evaluation's ranking FLOPs, time and rate next to its metrics."""
  _, logged = straight_run
  c = _config(data_dir)
  s = train.setup(c)
  state = train.init_state(s)
  with jax.set_mesh(s.mesh):
    compiled = train.make_train_step(s).lower(state, _first_batch(c, s)).compile()
  want = flops.program_flops(compiled, s.mesh.size)
  assert want > 0
  assert logged[2]["perf/flops_per_step"] == want
  assert logged[2]["perf/tflops_per_sec"] > 0
  assert "perf/mfu" not in logged[2]                  # CPU: no known peak
  val = logged[4]   # both directions score the same Q x N pairs
  assert val["val/perf/ranking_flops"] > 0 and val["val/perf/ranking_seconds"] > 0
  assert val["val/perf/ranking_tflops_per_sec"] == pytest.approx(
      val["val/perf/ranking_flops"] / val["val/perf/ranking_seconds"] / 1e12)


def test_resume_continues_exactly(data_dir, tmp_path, straight_run):
  straight, _ = straight_run
  resumed = tmp_path / "resumed"
  train.train_and_evaluate(_config(data_dir, num_train_steps=2), str(resumed))
  train.train_and_evaluate(_config(data_dir, num_train_steps=4), str(resumed))
  c = _config(data_dir)
  s = train.setup(c)
  a = train.restore_or_init(s, train.checkpoint_manager(str(straight), c))
  b = train.restore_or_init(s, train.checkpoint_manager(str(resumed), c))
  assert int(a["step"]) == int(b["step"]) == 4
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                       rtol=1e-6, atol=1e-7),
               jax.device_get(a["params"]), jax.device_get(b["params"]))
  assert (resumed / "eval" / "val" / "metrics.json").exists()
  assert (resumed / "eval" / "val" / "recall_curve.png").stat().st_size > 1000


def test_train_dataset_position_is_a_function_of_the_example_position(data_dir):
  c = _config(data_dir)
  full = list(pipeline.train_dataset(c, 0).take(7).as_numpy_iterator())
  later = list(pipeline.train_dataset(c, 5 * c.batch_size).take(2).as_numpy_iterator())
  for a, b in zip(full[5:], later):
    np.testing.assert_array_equal(a["paragraph_tokens"], b["paragraph_tokens"])
  # 40 examples, batch 8: epoch boundary after 5 batches; epoch 2 is ordered differently.
  first = np.concatenate([b["paragraph_tokens"] for b in full[:5]])
  second = np.concatenate([b["paragraph_tokens"] for b in full[5:7]])
  assert not np.array_equal(first[:16], second)


def test_non_finite_loss_stops_naming_the_step(data_dir, tmp_path):
  c = _config(data_dir, num_train_steps=4)
  c.schedule.learning_rate = 1e38
  # The first update is already infinite (finite loss): the run stops before saving it.
  with pytest.raises(FloatingPointError, match=r"non-finite .*norm/update = inf.* at step 1 "
                     r"\(the loss, [0-9.]+, is finite\); last good checkpoint: None"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not (tmp_path / "checkpoints" / "2").exists()


def test_batch_not_divisible_by_data_axis_fails_before_training(data_dir):
  with pytest.raises(ValueError, match=r"config.eval_batch_size=12 is not divisible"):
    train.setup(_config(data_dir, eval_batch_size=12))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_and_resumes(data_dir, tmp_path, sig):
  """SIGTERM (preemption) and Ctrl-C both save and exit 0; the run resumes from that save."""
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "hvt_jax.cli.train",
         f"--config={REPO}/configs/hse/demo.py:runlocal", f"--workdir={workdir}",
         f"--config.input.data_dir={data_dir}", "--config.num_train_steps=100000",
         "--config.checkpoint.every_steps=1000",
         "--verbosity=0"]                  # INFO on the console: the "first step" line
  env = data_fixtures.console_script_env(devices=2)
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
  reader.start()
  deadline = time.time() + 240
  # Wait until training runs (the first step has been compiled and run).
  while time.time() < deadline and not any("first step" in line for line in list(lines)):
    time.sleep(0.2)
  proc.send_signal(sig)
  proc.wait(timeout=240)
  reader.join(timeout=30)
  out = "".join(lines)
  assert proc.returncode == 0, out[-3000:]
  assert f"stopped by {signal.Signals(sig).name}: saved step" in out, out[-3000:]
  steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and 0 < max(steps) < 100000
  c = _config(data_dir)
  s = train.setup(c)
  state = train.restore_or_init(s, train.checkpoint_manager(str(workdir), c))
  assert int(state["step"]) == max(steps)


def test_stop_requested_during_start_up_exits_cleanly(data_dir, tmp_path, monkeypatch):
  """A signal that arrives before the first step (compile, restore) is not lost."""
  real_setup = train.setup

  def setup_then_signal(config):
    out = real_setup(config)
    os.kill(os.getpid(), signal.SIGTERM)   # lands in the slow start-up
    return out

  monkeypatch.setattr(train, "setup", setup_then_signal)
  assert train.train_and_evaluate(_config(data_dir, num_train_steps=4), str(tmp_path)) == {}
  assert not (tmp_path / "checkpoints" / "4").exists()


def _nan_at(step_index, real_iterate):
  def iterate(ds, mesh, view, stats=None, data_dir=None):
    for i, (batch, host) in enumerate(real_iterate(ds, mesh, view, stats, data_dir)):
      if i == step_index:
        batch = dict(batch, clip_frames=batch["clip_frames"] * np.nan)
      yield batch, host
  return iterate


def test_nan_right_after_a_checkpoint_names_a_checkpoint_that_exists(data_dir, tmp_path,
                                                                      monkeypatch):
  """NaN frames in step 3's batch, async checkpoints every 2 steps: the save of step 2 is
  finished (not abandoned) and named; a re-run resumes from it."""
  monkeypatch.setattr(train.pipeline, "iterate", _nan_at(2, pipeline.iterate))
  c = _config(data_dir, num_train_steps=6)
  with pytest.raises(FloatingPointError) as err:
    train.train_and_evaluate(c, str(tmp_path))
  msg = str(err.value)
  assert re.match(r"non-finite loss = nan, .* at step 3; last good", msg), msg
  named = msg.rsplit("last good checkpoint: ", 1)[1]
  assert named == str(tmp_path / "checkpoints" / "2"), msg
  assert checkpoints.is_complete(named)
  s = train.setup(c)
  state = train.restore_or_init(s, train.checkpoint_manager(str(tmp_path), c))
  assert int(state["step"]) == 2


def test_incomplete_step_directory_is_set_aside_and_resume_continues(data_dir, tmp_path):
  """checkpoints/6 copied without its commit markers (an interrupted sync)."""
  c = _config(data_dir, num_train_steps=4)
  train.train_and_evaluate(c, str(tmp_path))
  ckpt = tmp_path / "checkpoints"
  shutil.copytree(ckpt / "4", ckpt / "6")
  (ckpt / "6" / "_CHECKPOINT_METADATA").unlink()
  for marker in (ckpt / "6").rglob("commit_success.txt"):
    marker.unlink()
  assert not checkpoints.is_complete(str(ckpt / "6"))
  c6 = _config(data_dir, num_train_steps=6)
  train.train_and_evaluate(c6, str(tmp_path))        # resumes from 4, saves 6 again
  aside = list(ckpt.glob("6.incomplete-*"))
  assert len(aside) == 1 and not (aside[0] / "_CHECKPOINT_METADATA").exists()
  assert checkpoints.is_complete(str(ckpt / "6"))
  s = train.setup(c6)
  assert int(train.restore_or_init(s, train.checkpoint_manager(str(tmp_path), c6))["step"]) == 6


def test_resume_keeps_config_history_warns_and_refuses_shape_changes(data_dir, tmp_path,
                                                                     caplog):
  c = _config(data_dir, num_train_steps=2)
  train.train_and_evaluate(c, str(tmp_path))
  first = json.loads((tmp_path / "config.json").read_text())
  changed = _config(data_dir, num_train_steps=4)
  changed.schedule.learning_rate = 5e-4
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(changed, str(tmp_path))
  assert "schedule.learning_rate: 0.001 -> 0.0005" in caplog.text
  assert "num_train_steps: 2 -> 4" in caplog.text
  assert json.loads((tmp_path / "config.json").read_text()) == first   # never overwritten
  (resume,) = tmp_path.glob("config.resume-*-step2.json")
  assert json.loads(resume.read_text())["schedule"]["learning_rate"] == 5e-4
  bigger = _config(data_dir, num_train_steps=6)
  bigger.schedule.learning_rate = 5e-4
  bigger.model.hidden = 48
  with pytest.raises(ValueError, match=r"cannot restore step 4 .*: params/\S+: \(.*32.*\) in the "
                     r"checkpoint, \(.*48.*\) under this config .*model.hidden \(32 -> 48\)"):
    train.train_and_evaluate(bigger, str(tmp_path))
  assert len(list(tmp_path.glob("config.resume-*.json"))) == 1   # a refused resume: no record
