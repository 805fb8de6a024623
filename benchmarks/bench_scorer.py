"""Device-side scorer at corpus scale: wall time and peak memory as N grows.

Ranks Q = N queries against N candidates (dim 1024, dot product, top-10) with
``hvt_jax.evaluation.scorer.rank_corpus``, one size per subprocess so that each peak RSS
(``resource.getrusage``) belongs to one size. The data is generated on the device, block by
block (query i is candidate i plus noise, so the metrics are not trivial), and never copied
to the host. Printed per size: the time of a warm-up call with one query block (compile +
one block row), the time of the full ranking and its TFLOP/s, the encodings' MiB, the RSS
after importing jax, the peak RSS while generating the data, the RSS after it, the peak RSS
while scoring (the kernel's high-water mark is reset after generating) and the scorer's own
share (peak - data), next to the MiB of the float32 [Q, N] matrix that is never built.

First it prints the pairs score_fn evaluates per ranking, before and after the targets'
scores came from the corpus pass (before: each query block also scored its targets in
ceil(query_block * T / cand_block) gathered blocks; after: a probe of 2 blocks once per run,
``scorer`` module docstring), for these sizes and for HAMMER's stage 1 on TVR val and
ActivityNet val_1 with the former 64 x 256 blocks.

    python benchmarks/bench_scorer.py [--sizes 10000 30000 100000] [--dtype bfloat16]
        [--query-block 256] [--cand-block 1024] [--devices 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
  p.add_argument("--dim", type=int, default=1024)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--query-block", type=int, default=256, help="queries per device per step")
  p.add_argument("--cand-block", type=int, default=1024)
  p.add_argument("--top-k", type=int, default=10)
  p.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
  p.add_argument("--noise", type=float, default=8.0, help="query = candidate + noise * N(0,1)")
  p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # child: one size
  return p.parse_args()


def _status_mb(field: str) -> float:
  """VmRSS (resident now) or VmHWM (peak resident) from /proc/self/status, in MiB."""
  with open("/proc/self/status") as f:
    line = next(l for l in f if l.startswith(field + ":"))
  return int(line.split()[1]) / 1024


def _reset_peak_rss() -> bool:
  """Restarts VmHWM at the current RSS (Linux >= 4.0), so that the peak covers scoring only."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _generate(n: int, dim: int, dtype, noise: float):
  """[n, dim] queries and candidates made on the device, a few thousand rows at a time."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  # A block that divides n: the [blocks, block, dim] output reshapes to [n, dim] for free.
  block = max(b for b in range(1, 4097) if n % b == 0)

  @jax.jit
  def gen(key):
    def one(k):
      kc, kq = jax.random.split(k)
      c = jax.random.normal(kc, (block, dim), jnp.float32)
      q = c + noise * jax.random.normal(kq, (block, dim), jnp.float32)
      return q.astype(dtype), c.astype(dtype)
    q, c = jax.lax.map(one, jax.random.split(key, n // block))
    return q.reshape(n, dim), c.reshape(n, dim)

  q, c = gen(jax.random.key(0))
  return jax.block_until_ready(q), jax.block_until_ready(c)


def pair_counts(q: int, n: int, query_block: int, cand_block: int, devices: int = 1,
                targets: int = 1) -> tuple[int, int, int]:
  """Pairs score_fn evaluates in one ``rank_corpus`` call (each call is a [query_block,
  cand_block] block per device): (the corpus pass, the targets' separate pass before,
  the probe now)."""
  block = query_block * cand_block
  steps = -(-q // (query_block * devices))
  return (steps * devices * -(-n // cand_block) * block,
          steps * devices * -(-query_block * targets // cand_block) * block,
          2 * devices * block)


def _print_pairs(args) -> None:
  rows = [(f"Q=N={n}", n, n, args.query_block, args.cand_block, args.devices)
          for n in args.sizes]
  rows += [("HAMMER TVR val", 10_895, 2_179, 64, 256, 1),
           ("HAMMER ANet val_1", 17_505, 4_917, 64, 256, 1)]
  print(f"{'pairs scored':>18} {'Q x N':>14} {'corpus pass':>14} {'before: +targets':>23} "
        f"{'now: +probe':>19}")
  for name, q, n, qb, cb, d in rows:
    corpus_pass, targets, probe = pair_counts(q, n, qb, cb, d)
    print(f"{name:>18} {q * n:>14,} {corpus_pass:>14,} {targets:>14,} "
          f"{targets / corpus_pass:>+7.1%} {probe:>11,} {probe / corpus_pass:>+6.2%}")
  print("(per device blocks of query_block x cand_block; the corpus pass includes the padded "
        "last query block and the shifted last candidate block)")


def _child(args) -> dict:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hvt_jax import sharding  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import scorer  # pylint: disable=g-import-not-at-top

  n, rss0 = args.one, _status_mb("VmRSS")
  mesh = sharding.make_mesh(num_devices=args.devices)
  query, cand = _generate(n, args.dim, jnp.dtype(args.dtype), args.noise)
  gen_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  # The generator's temporaries would otherwise set the peak; measure scoring alone.
  reset = _reset_peak_rss()
  rss_data = _status_mb("VmRSS")
  kw = dict(mesh=mesh, top_k=args.top_k, query_block=args.query_block,
            cand_block=args.cand_block)
  warm_q = args.query_block * mesh.size
  t0 = time.perf_counter()
  scorer.rank_corpus(query[:warm_q], cand, np.arange(warm_q) % n, **kw)
  t1 = time.perf_counter()
  res = scorer.rank_corpus(query, cand, **kw)  # ground truth on the diagonal
  t2 = time.perf_counter()
  metrics = res.metrics()
  return dict(
      n=n, warmup_s=t1 - t0, rank_s=t2 - t1, tflops=2 * n * n * args.dim / (t2 - t1) / 1e12,
      enc_mb=2 * query.nbytes / 2**20, rss_start_mb=rss0, rss_data_mb=rss_data,
      gen_peak_mb=gen_peak, scoring_peak_mb=(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if reset else np.nan),
      full_matrix_mb=4 * n * n / 2**20, r1=metrics["R@1"], mdr=metrics["MdR"])


def main():
  args = _parse()
  if args.one:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    print(json.dumps(_child(args)))
    return
  _print_pairs(args)
  print(f"\ndim {args.dim} {args.dtype}, top-{args.top_k}, query_block {args.query_block} "
        f"per device x {args.devices} device(s), cand_block {args.cand_block}, "
        f"{os.cpu_count()} CPU cores")
  print(f"{'Q=N':>8} {'warm-up s':>9} {'rank s':>8} {'TFLOP/s':>7} {'enc MB':>7} "
        f"{'RSS start':>9} {'gen peak':>8} {'RSS data':>8} {'scoring peak':>12} "
        f"{'peak-data':>9} {'[Q,N] f32':>10} {'R@1':>6} {'MdR':>6}")
  print("(MiB. gen peak: getrusage ru_maxrss after generating the encodings; RSS data: RSS "
        "then; scoring peak: ru_maxrss, reset at that point through /proc/self/clear_refs; "
        "[Q,N] f32: the matrix that is never built)")
  flags = ["--dim", str(args.dim), "--dtype", args.dtype, "--query-block",
           str(args.query_block), "--cand-block", str(args.cand_block), "--top-k",
           str(args.top_k), "--devices", str(args.devices), "--noise", str(args.noise)]
  for n in args.sizes:  # one process per size: its peak RSS is that size's alone
    out = subprocess.run([sys.executable, __file__, "--one", str(n), *flags], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"{r['n']:>8} {r['warmup_s']:>9.1f} {r['rank_s']:>8.1f} {r['tflops']:>7.3f} "
          f"{r['enc_mb']:>7.0f} {r['rss_start_mb']:>9.0f} {r['gen_peak_mb']:>8.0f} "
          f"{r['rss_data_mb']:>8.0f} {r['scoring_peak_mb']:>12.0f} "
          f"{r['scoring_peak_mb'] - r['rss_data_mb']:>9.0f} {r['full_matrix_mb']:>10.0f} "
          f"{r['r1']:>6.1f} {r['mdr']:>6.1f}", flush=True)


if __name__ == "__main__":
  main()
