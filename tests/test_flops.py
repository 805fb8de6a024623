"""FLOPs, peaks and MFU (hvt_jax/flops.py). That the trainer and the evaluators log them:
tests/test_train.py (test_trainer_and_evaluator_log_flops, on its 4-step run)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from hvt_jax import flops


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
