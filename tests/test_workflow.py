"""Workflow faults users meet on real runs: damaged shards, a resume with another batch size,
incomplete checkpoint steps, evaluation beside a live trainer, a wrong evaluation split."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hvt_jax import checkpoints, pretrained, train
from hvt_jax.input import pipeline
from tests import data_fixtures, tiny_data

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def _config(data_dir, **overrides):
  return tiny_data.hse_config(data_dir, **overrides)


def _shard(dataset_dir, split):
  (path,) = pathlib.Path(dataset_dir).glob(f"*-{split}.tfrecord-*")
  return path


def test_damaged_shards_are_named_before_the_first_step_and_mid_run(data_dir, tmp_path):
  copy = tmp_path / "data"
  shutil.copytree(pipeline.dataset_info(_config(data_dir))[0], copy)
  c = _config(str(copy))
  train_shard, val_shard = _shard(copy, "train"), _shard(copy, "val")
  # Truncated mid-record (a disk that filled): named, with what to do, before any step.
  size = train_shard.stat().st_size
  with open(train_shard, "r+b") as f:
    f.truncate(size - 100)
  with pytest.raises(FileNotFoundError) as err:
    train.setup(c)
  msg = str(err.value)
  assert str(train_shard) in msg and "truncated" in msg and "hvt-prepare" in msg, msg
  assert re.search(r"\d+ complete records of the 40", msg), msg
  # Mid-run (damaged after start-up): the read error names the shard, not a bare DataLossError.
  s_ok = None
  with pytest.raises(FileNotFoundError, match=re.escape(str(train_shard))):
    s_ok = pipeline.iterate(pipeline.train_dataset(c, 0), jax.sharding.Mesh(
        np.array(jax.devices()[:1]), ("data",)), pipeline.get_view("hse"),
        data_dir=str(copy))
    for _ in range(10):
      next(s_ok)
  # Missing and empty shards (a copy that broke), through the console script: one line, exit 2.
  train_shard.write_bytes(b"")
  val_shard.unlink()
  env = data_fixtures.console_script_env(devices=1)
  proc = subprocess.run([str(BIN / "hvt-train"), f"--config={REPO}/configs/hse/demo.py:runlocal",
                         f"--workdir={tmp_path / 'run'}", f"--config.input.data_dir={copy}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = [l for l in proc.stderr.splitlines() if l.startswith("hvt-train: error:")]
  assert str(train_shard) in line and "is empty" in line and str(val_shard) in line, line
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_with_another_batch_size_continues_after_the_consumed_examples(
    data_dir, tmp_path, monkeypatch, caplog):
  """16 -> 8: the resumed run trains on examples 32..47 of the stream (across the epoch
  boundary at 40), not 16..31 again."""
  fed, real = [], pipeline.iterate

  def recording(ds, mesh, view, stats=None, data_dir=None):
    for batch, host in real(ds, mesh, view, stats, data_dir):
      fed.append(host["video_index"].copy())
      yield batch, host

  monkeypatch.setattr(train.pipeline, "iterate", recording)
  no_eval = dict(evals={})
  train.train_and_evaluate(_config(data_dir, num_train_steps=2, batch_size=16, **no_eval),
                           str(tmp_path))
  assert checkpoints.custom_metadata(str(tmp_path / "checkpoints" / "2"))["input"][
      "examples"] == 32
  fed.clear()
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(_config(data_dir, num_train_steps=4, batch_size=8, **no_eval),
                             str(tmp_path))
  stream = np.concatenate([b["video_index"] for b in pipeline.train_dataset(
      _config(data_dir, batch_size=16), 0).take(3).as_numpy_iterator()])
  np.testing.assert_array_equal(np.concatenate(fed[:2]), stream[32:48])
  assert "resuming at step 2 after 32 training examples (epoch 0, example 32)" in caplog.text
  assert "with batch_size 8 (was 16)" in caplog.text
  assert checkpoints.custom_metadata(str(tmp_path / "checkpoints" / "4"))["input"] == {
      "examples": 48, "batch_size": 8, "processes": 1}


def _incomplete_copy(src: pathlib.Path, dst: pathlib.Path) -> None:
  """``dst``: ``src`` copied without its commit markers and with data files missing."""
  shutil.copytree(src, dst)
  (dst / "_CHECKPOINT_METADATA").unlink()
  data = sorted(p for p in dst.rglob("*") if p.is_file() and "ocdbt" in str(p.parent))
  for p in data[: max(1, len(data) // 2)]:
    p.unlink()


def test_one_rule_for_complete_steps_in_init_from_eval_and_resume(data_dir, tmp_path,
                                                                   caplog):
  """Complete steps 2 and 4 plus a 6/ copied from 4 without markers and with data removed."""
  run = tmp_path / "run"
  c = _config(data_dir, num_train_steps=4)
  train.train_and_evaluate(c, str(run))
  ckpt = run / "checkpoints"
  _incomplete_copy(ckpt / "4", ckpt / "6")
  assert checkpoints.complete_steps(str(run)) == [2, 4]
  four = checkpoints.restore(str(ckpt / "4"))["params"]
  # init_from a run: its latest *complete* step.
  loaded = pretrained._checkpoint(dict(source=str(run)), [])  # pylint: disable=protected-access
  expected = pretrained.flatten(four)
  assert sorted(loaded) == sorted(expected)
  for k, v in expected.items():
    np.testing.assert_array_equal(loaded[k], v)
  # A bare dict instead of a list of entries: an error with the syntax, before init.
  with pytest.raises(ValueError, match=r"config.init_from\[0\] is '\w+', not an entry: "
                     r"config.init_from is a list of dicts"):
    bare = _config(data_dir)
    with bare.ignore_type():                  # as --config.init_from="{...}" arrives
      bare.init_from = {"source": str(run), "format": "checkpoint"}
    train.setup(bare)
  # One step directory that is incomplete: one clear error naming it.
  with pytest.raises(ValueError, match=rf"{re.escape(str(ckpt / '6'))} is incomplete"):
    pretrained._checkpoint(dict(source=str(ckpt / "6")), [])  # pylint: disable=protected-access
  # hvt-eval: the same rule, and read-only (6/ is neither used, renamed nor deleted).
  before = sorted(os.listdir(ckpt))
  with pytest.raises(ValueError, match=rf"{re.escape(str(ckpt / '6'))} is incomplete"):
    train.evaluate_checkpoint(c, str(run), step=6)
  with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 8 .*complete steps: "
                     r"\[2, 4\]"):
    train.evaluate_checkpoint(c, str(run), step=8)
  with caplog.at_level("WARNING"):
    step, results = train.evaluate_checkpoint(c, str(run))
  assert "evaluating step 4: newer step directories ['6'] are incomplete" in caplog.text
  metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
  assert step == metrics["step"] == 4 and results["val/num_examples"] == 20
  assert sorted(os.listdir(ckpt)) == before
  # The trainer (the writer) sets 6/ aside and resumes from 4.
  train.train_and_evaluate(_config(data_dir, num_train_steps=6, evals={}), str(run))
  assert len(list(ckpt.glob("6.incomplete-*"))) == 1
  assert checkpoints.complete_steps(str(run)) == [2, 4, 6]


def test_wrong_eval_split_is_found_before_the_first_step(data_dir, tmp_path):
  c = _config(data_dir)
  c.evals.val.split = "val_1"
  with pytest.raises(ValueError, match=r"config.evals.val.split='val_1' is not a split of "
                     r"dataset .* \(splits with records: \['train', 'val'\]\)"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  with pytest.raises(ValueError, match=r"--split='test' is not a split"):
    train.evaluate_checkpoint(_config(data_dir), str(tmp_path / "run"), splits=["val", "test"])


def _wait_for_save_in_flight(proc, ckpt: pathlib.Path, min_step: int, timeout: float):
  """SIGSTOPs ``proc`` while a save of step >= ``min_step`` is in flight; returns its tmp dir
  name (or None if the trainer finished first)."""
  pattern = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
  end = time.time() + timeout
  while time.time() < end and proc.poll() is None:
    names = os.listdir(ckpt) if ckpt.is_dir() else []
    tmp = [n for n in names if (m := pattern.match(n)) and int(m.group(1)) >= min_step]
    if tmp:
      proc.send_signal(signal.SIGSTOP)
      if tmp[0] in os.listdir(ckpt):
        return tmp[0]
      proc.send_signal(signal.SIGCONT)      # it was finalised meanwhile: wait for the next
    time.sleep(0.001)
  return None


def test_eval_beside_a_live_trainer_never_touches_its_save_in_flight(data_dir, tmp_path):
  """The trainer is stopped (SIGSTOP) mid-save; hvt-eval's evaluation runs; the trainer
  continues (SIGCONT), finishes, and the step that was in flight equals an uninterrupted
  run's."""
  run = tmp_path / "run"
  steps = 24
  overrides = {"num_train_steps": steps, "checkpoint.every_steps": 4,
               "checkpoint.max_to_keep": 20, "evals": {}}
  args = [f"--config.{k}={v}" for k, v in overrides.items() if k != "evals"]
  env = data_fixtures.console_script_env(devices=8)    # the compile cache of this session
  proc = subprocess.Popen(
      [str(BIN / "hvt-train"), f"--config={REPO}/configs/hse/demo.py:runlocal",
       f"--workdir={run}", f"--config.input.data_dir={data_dir}", *args],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    tmp = _wait_for_save_in_flight(proc, run / "checkpoints", 8, timeout=240)
    assert tmp, "never saw a save in flight"
    c = _config(data_dir, **{k: v for k, v in overrides.items() if k != "evals"})
    step, results = train.evaluate_checkpoint(c, str(run))
    assert step < int(tmp.split(".")[0]) and results["val/num_examples"] == 20
    assert tmp in os.listdir(run / "checkpoints"), "the eval job removed the trainer's save"
  finally:
    proc.send_signal(signal.SIGCONT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  in_flight = int(tmp.split(".")[0])
  reference = tmp_path / "reference"
  train.train_and_evaluate(_config(data_dir, **dict(overrides, num_train_steps=in_flight)),
                           str(reference))
  a = checkpoints.restore(str(run / "checkpoints" / str(in_flight)))["params"]
  b = checkpoints.restore(str(reference / "checkpoints" / str(in_flight)))["params"]
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
