"""Two real processes (jax.distributed on 127.0.0.1, 4 CPU devices each) train and evaluate;
an eval job of one process (hvt-eval --follow) follows their run."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys

from hvt_jax import checkpoints, follow
from tests import tiny_data

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_process_train_and_eval(tmp_path):
  data = tmp_path / "data"
  tiny_data.write(str(data), num_train=40, num_val=21)
  port = _free_port()
  procs, outs = [], []
  for pid in range(2):
    out = tmp_path / f"out{pid}.json"
    outs.append(out)
    # SIGKILL on timeout: after jax.distributed.initialize, jax catches SIGTERM.
    procs.append(subprocess.Popen(
        ["timeout", "-s", "KILL", "400", sys.executable, "-m", "tests.multiprocess_worker",
         str(port), str(pid), str(data), str(tmp_path / "run"), str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = [p.communicate()[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]
  r0, r1 = (json.loads(o.read_text()) for o in outs)
  # Both processes see the same global metrics; every val example counted exactly once.
  assert r0 == r1
  assert r0["val/num_examples"] == 21.0
  assert 0.0 <= r0["val/p2v/R@1"] <= 100.0
  ckpts = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
  assert "4" in ckpts
  # One process (this one, 8 devices) follows the two-process run: every step once, the
  # final step's metrics equal the trainer's own evaluation, and it stops by itself.
  said = []
  done = follow.follow(tiny_data.hse_config(str(data)), str(tmp_path / "run"), poll=0.01,
                       timeout=60, say=said.append)
  assert done == checkpoints.complete_steps(str(tmp_path / "run")) and done[-1] == 4
  assert said == ["training finished at step 4; every checkpoint is evaluated: stopping"]
  final = json.loads((tmp_path / "run" / "eval" / "val" / "step_4" / "metrics.json")
                     .read_text())
  assert {f"val/{k}": v for k, v in final.items() if k != "step"} == r0
