"""FLOPs from XLA's cost analysis, peak FLOP/s per device kind, and MFU.

One place for the trainer (``hvt_jax.train``: the train step), the evaluators
(``hvt_jax.evaluation.evaluators``: the ranking) and ``benchmarks/accelerator.py``.

FLOPs are XLA's count for a lowered or compiled program (``cost_analysis()["flops"]``). A
program partitioned over several devices (SPMD) is analysed per device: ``program_flops``
multiplies by the number of devices it runs on, so it is the whole step's count.
MFU = FLOPs per step / step seconds / (peak FLOP/s per device x devices); unknown on a
device kind without a published peak (CPUs): ``None``, shown as "n/a".
"""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import Any

import jax

# Dense (no sparsity) peak FLOP/s per chip, by the compute dtype of the matmuls:
# "bfloat16", and "float32" = what an f32 matmul runs at under XLA's default precision:
# TF32 tensor cores on NVIDIA (A100 and later), bf16 passes of the MXU on TPU (Google
# publishes a bf16 peak only, so f32 is measured against it). Vendor figures:
#   H100 SXM5: 989.4 TFLOP/s bf16, 494.7 TF32 (67 plain FP32) -- NVIDIA H100 datasheet.
#   H100 PCIe: 756 bf16, 378 TF32 (51 FP32) -- same datasheet.
#   H100 NVL: 835 bf16, 418 TF32 (60 FP32) -- same datasheet (per GPU).
#   H200 (SXM): 989 bf16, 494.7 TF32 (67 FP32) -- NVIDIA H200 datasheet (the H100's core).
#   GH200: 989 bf16, 494 TF32 -- NVIDIA GH200 datasheet.
#   A100 (SXM4 and PCIe, 40/80 GB): 312 bf16, 156 TF32 (19.5 FP32) -- NVIDIA A100 datasheet.
#   TPU v4: 275 bf16 -- cloud.google.com/tpu/docs/v4.
#   TPU v5e: 197 bf16 -- cloud.google.com/tpu/docs/v5e.
#   TPU v5p: 459 bf16 -- cloud.google.com/tpu/docs/v5p.
#   TPU v6e (Trillium): 918 bf16 -- cloud.google.com/tpu/docs/v6e.
# Matched against ``jax.Device.device_kind`` (lower case, first match: more specific
# patterns first), e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "TPU v5 lite".
PEAKS: tuple[tuple[tuple[str, ...], str, float, float], ...] = (
    # (device_kind substrings, name, bf16 FLOP/s, f32 FLOP/s)
    (("h100 pcie",), "H100 PCIe", 756e12, 378e12),
    (("h100 nvl",), "H100 NVL", 835e12, 418e12),
    (("gh200",), "GH200", 989e12, 494e12),
    (("h200",), "H200", 989e12, 494.7e12),
    (("h100",), "H100 SXM", 989.4e12, 494.7e12),
    (("a100",), "A100", 312e12, 156e12),
    (("tpu v4",), "TPU v4", 275e12, 275e12),
    (("tpu v5 lite", "tpu v5e"), "TPU v5e", 197e12, 197e12),
    (("tpu v5p", "tpu v5"), "TPU v5p", 459e12, 459e12),
    (("tpu v6 lite", "tpu v6e", "tpu v6"), "TPU v6e", 918e12, 918e12),
)


def peak_flops(device_kind: str, dtype: str = "float32") -> float | None:
  """Dense peak FLOP/s of one device of ``device_kind`` for matmuls in ``dtype``.

  Args:
    device_kind: ``jax.Device.device_kind`` (e.g. "NVIDIA H100 80GB HBM3", "TPU v4", "cpu").
    dtype: the compute dtype, "float32" or "bfloat16".

  Returns:
    FLOP/s, or None for a device kind without a published peak (CPUs, unknown GPUs).

  Raises:
    ValueError: ``dtype`` is neither float32 nor bfloat16.
  """
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"peak_flops: dtype must be float32 or bfloat16, got {dtype!r}")
  kind = device_kind.lower()
  for patterns, _, bf16, f32 in PEAKS:
    if any(p in kind for p in patterns):
      return bf16 if dtype == "bfloat16" else f32
  return None


def program_flops(stage: Any, num_devices: int = 1) -> float:
  """FLOPs of one call of a lowered or compiled program (``jax.jit(f).lower(...)`` or its
  ``.compile()``), all devices together.

  Args:
    stage: a ``jax.stages.Lowered`` or ``jax.stages.Compiled``.
    num_devices: devices a partitioned (SPMD) program runs on: XLA analyses one device's
      partition, so its count is multiplied by this. 1 for an unpartitioned program.

  Returns:
    FLOPs, or NaN when XLA's analysis has no count (a backend without cost analysis).
  """
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):       # older jax: one dict per program
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) * num_devices if flops is not None and flops >= 0 else math.nan


def pair_flops(fn: Callable[..., Any], left: Any, right: Any, *rest: Any,
               grid: bool, rows: int = 8) -> float:
  """XLA's FLOPs per (query, candidate) pair of ``fn(left, right, *rest)``: the difference
  between ``fn`` lowered (not compiled) on 2·``rows`` and on ``rows`` leading rows of
  ``left`` (and of ``right`` too, for aligned pairs), so per-call work that does not grow
  with the pairs (masks, index tables) is left out.

  Args:
    fn: e.g. a corpus score function ``(queries, candidates, params) -> [Bq, Bc]``
      (``grid=True``: every pair of the two blocks) or a localizer of aligned pairs
      (``grid=False``: row i with row i).
    left, right: pytrees of arrays (or ShapeDtypeStructs) with a leading row axis.
    rest: further arguments as given (parameters).

  Returns:
    FLOPs per pair (NaN without cost analysis).
  """
  block = lambda tree, n: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((n, *x.shape[1:]), x.dtype), tree)
  count = lambda n: program_flops(jax.jit(fn).lower(
      block(left, n), block(right, rows if grid else n), *rest))
  return (count(2 * rows) - count(rows)) / (rows * rows if grid else rows)


def mfu(flops: float, seconds: float, peak: float | None, num_devices: int = 1
        ) -> float | None:
  """Model FLOP utilisation: achieved FLOP/s over the devices' peak.

  Args:
    flops: FLOPs of the measured work, all devices together.
    seconds: its wall time.
    peak: peak FLOP/s of one device (``peak_flops``), None when unknown.
    num_devices: devices that did the work.

  Returns:
    A fraction in [0, 1] (above 1 means the peak or the count is wrong), or None when the
    peak is unknown or the count or time is not positive and finite.
  """
  if peak is None or not (math.isfinite(flops) and flops > 0 and seconds > 0):
    return None
  return flops / seconds / (peak * num_devices)


def memory_bytes(compiled: Any) -> float:
  """Peak device bytes one call of a compiled program needs by XLA's
  ``memory_analysis()``: arguments + outputs + temporaries - donated (aliased) bytes,
  per device. NaN when the backend gives no analysis."""
  m = compiled.memory_analysis()
  if isinstance(m, (list, tuple)):                          # older jax: one per program
    m = m[0] if m else None
  if m is None:
    return math.nan
  return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def format_mfu(value: float | None) -> str:
  """"12.3%" or "n/a" (no known peak)."""
  return "n/a" if value is None else f"{100 * value:.1f}%"


class Tally:
  """FLOPs and seconds of device work summed over calls (an evaluation's ranking), and
  their rate.

  Attributes:
    peak: peak FLOP/s of one device (``peak_flops``), None when unknown.
    devices: devices the work runs on.
    flops, seconds: the sums so far.
  """

  def __init__(self, peak: float | None, devices: int):
    self.peak, self.devices = peak, devices
    self.reset()

  @classmethod
  def on(cls, mesh: Any, dtype: str = "float32") -> "Tally":
    """A tally of work on every device of ``mesh`` (a ``jax.sharding.Mesh``), against its
    device kind's peak in ``dtype`` (``config.model.dtype``)."""
    return cls(peak_flops(mesh.devices.flat[0].device_kind, dtype), mesh.size)

  def reset(self) -> None:
    self.flops = self.seconds = 0.0

  def add(self, flops: float, seconds: float) -> None:
    self.flops += flops
    self.seconds += seconds

  def metrics(self) -> dict[str, float]:
    """{"flops", "seconds", "tflops_per_sec", "mfu"}; "mfu" only with a known peak, {} before
    any work."""
    if self.seconds <= 0:
      return {}
    out = {"flops": self.flops, "seconds": self.seconds,
           "tflops_per_sec": self.flops / self.seconds / 1e12}
    utilisation = mfu(self.flops, self.seconds, self.peak, self.devices)
    if utilisation is not None:
      out["mfu"] = utilisation
    return out
