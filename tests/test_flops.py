"""FLOPs, peaks and MFU (hvt_jax/flops.py); the trainer and the evaluators log them."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest

from hvt_jax import flops, train
from hvt_jax.input import pipeline
from tests import tiny_data


@pytest.mark.parametrize("kind, dtype, want", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12),
    ("NVIDIA H100 80GB HBM3", "float32", 494.7e12),     # TF32: XLA's default f32 precision
    ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H200", "bfloat16", 989e12),
    ("NVIDIA A100-SXM4-80GB", "float32", 156e12),
    ("TPU v4", "bfloat16", 275e12),
    ("TPU v5 lite", "bfloat16", 197e12),
    ("TPU v5", "bfloat16", 459e12),                      # v5p
    ("TPU v6 lite", "float32", 918e12),                  # bf16 MXU passes
    ("cpu", "float32", None)])
def test_peak_per_device_kind(kind, dtype, want):
  assert flops.peak_flops(kind, dtype) == want


def test_mfu_and_program_flops():
  assert flops.mfu(1e12, 2.0, None) is None                     # unknown peak: n/a
  assert flops.mfu(4e12, 2.0, 1e12, num_devices=2) == pytest.approx(1.0)
  assert flops.format_mfu(None) == "n/a" and flops.format_mfu(0.123) == "12.3%"
  a, b = jnp.ones((16, 32)), jnp.ones((32, 8))
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  assert flops.program_flops(compiled) == 2 * 16 * 32 * 8
  assert flops.program_flops(compiled, 4) == 4 * 2 * 16 * 32 * 8
  with pytest.raises(ValueError, match="float32 or bfloat16"):
    flops.peak_flops("TPU v4", "float16")


class _Recorder:
  """A metric writer that keeps every scalar it is given (and forwards to the real one)."""

  def __init__(self, inner):
    self.inner, self.scalars = inner, {}

  def write_scalars(self, step, scalars):
    self.scalars.setdefault(step, {}).update(scalars)
    self.inner.write_scalars(step, scalars)

  def __getattr__(self, name):
    return getattr(self.inner, name)


def test_trainer_and_evaluator_log_flops(tmp_path, monkeypatch):
  data = tmp_path / "data"
  tiny_data.write(str(data))
  c = tiny_data.hse_config(str(data), num_train_steps=2)
  recorders = []
  create = train.metric_writers.create_default_writer

  def recording(*args, **kwargs):
    recorders.append(_Recorder(create(*args, **kwargs)))
    return recorders[-1]

  monkeypatch.setattr(train.metric_writers, "create_default_writer", recording)
  train.train_and_evaluate(c, str(tmp_path / "run"))
  logged = recorders[0].scalars
  # XLA's count for the compiled step, all devices together.
  s = train.setup(c)
  state = train.init_state(s)
  batch, _ = next(pipeline.iterate(pipeline.train_dataset(c, 0), s.mesh,
                                   pipeline.get_view(c.model.name)))
  with jax.set_mesh(s.mesh):
    compiled = train.make_train_step(s).lower(state, batch).compile()
  want = flops.program_flops(compiled, s.mesh.size)
  assert want > 0
  assert logged[2]["perf/flops_per_step"] == want
  assert logged[2]["perf/tflops_per_sec"] > 0
  assert "perf/mfu" not in logged[2]                  # CPU: no known peak
  # The evaluation's ranking (both directions score the same Q x N pairs): its FLOPs, time
  # and rate, next to its metrics.
  val = logged[2]
  assert val["val/perf/ranking_flops"] > 0 and val["val/perf/ranking_seconds"] > 0
  assert val["val/perf/ranking_tflops_per_sec"] == pytest.approx(
      val["val/perf/ranking_flops"] / val["val/perf/ranking_seconds"] / 1e12)
