"""Device-side corpus ranking: exact tie-averaged ranks and a top-K, block by block.

``rank_corpus`` ranks every query against every candidate without
the [Q, N] similarity matrix ever existing: queries go through in blocks of
``query_block`` rows per device, sharded over every axis of the mesh; candidates are
replicated and visited ``cand_block`` rows at a time by a ``fori_loop`` inside one jitted,
fixed-shape step. The step fills the block's [query_block, N] score rows (each pair
scored once), then reads from them per query

* the score of its best ground-truth candidate (``threshold``, gathered from the rows),
* the number of candidates scoring strictly higher and the number scoring equal,
* the top-K (scores, candidate indices; ``lax.top_k``: ties lowest index first),

so the rank is ``greater + (equal + 1) / 2``, exactly ``retrieval.ranks`` (1-based, ties at
their average rank, several targets: the best of them; ``equal`` counts the target itself).

Queries, not candidates, are sharded: each device then owns the complete counts and top-K
of its queries (no cross-device reduction), and its kernel shapes do not depend on the
device count, so 1 and 8 devices give the same bits. The price is a replica of the
candidate encodings on every device.

Ties are exact only if a pair's score does not depend on where the candidate falls in a
block. Every ``score_fn`` call has the same shape (the last candidate block is shifted back
to end at N, its columns already seen keeping their first scores; the last query block is
padded), and ``dot_score`` fixes the precision. Once per run a probe checks it: the first
query block is scored against the first candidate block as the corpus pass does and again
with the candidates moved to other rows of a block of other composition (the first half,
reversed, each row twice); ``rank_corpus`` raises if any bit differs, rather than return
ranks whose ties depend on the blocking. A query's row in its block may matter (MCHA's
local score at d_uni 1024 on CPU differs by an ulp between rows: XLA's matmul tiles): all
of a query's scores come from one row of one block, so its ties are exact, but its bits,
and a near-tie's order, may change with ``query_block``. (Before, each query's targets were
scored in a separate call, ceil(query_block * T / cand_block) extra blocks per query block,
+11.7 % pairs on TVR; ``benchmarks/bench_scorer.py`` prints both counts.)

Block sizes (``choose_blocks``): a size given as 0 is the largest that fits the free
memory of a device (``free_bytes``: ``memory_stats()``, or the host's on CPU) times
``memory_fraction``, as the compiled step's ``memory_analysis()`` counts it (arguments,
outputs, temporaries); chosen once per call, in few compiles, and logged.

Padded token axes (``TokenTrim``): a query encoding padded to L tokens can be cut per
block to the block's longest query (queries sorted by length), rounded up to a bucket.

Memory per device: the encodings (candidates replicated), at most three query blocks in
flight, one [query_block, cand_block] score block and the [query_block, N] score rows.
Single process only (the inputs are placed from this process).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import math
import os
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from absl import logging

from hvt_jax import flops
from hvt_jax.evaluation import retrieval

ScoreFn = Callable[[Any, Any], jax.Array]


def dot_score(query_bd: jax.Array, cand_cd: jax.Array) -> jax.Array:
  """Dot products of a [Bq, D] query block with a [Bc, D] candidate block.

  ``precision=HIGHEST`` so that TPUs and GPUs do not round the operands to bfloat16 or TF32
  (a pair's score would then depend on the backend's default, not on its inputs).

  Returns:
    [Bq, Bc] float32 scores.
  """
  return jnp.einsum("qd,cd->qc", query_bd, cand_cd, precision=lax.Precision.HIGHEST,
                    preferred_element_type=jnp.float32)


@dataclasses.dataclass(frozen=True)
class ScorerResult:
  """What ``rank_corpus`` returns, on the host.

  Attributes:
    ranks: [Q] float64 1-based tie-averaged rank of each query's best target.
    top_indices: [Q, K] int32 candidate indices, best first (ties: lower index first).
    top_scores: [Q, K] float32 their scores.
    blocks: the (query_block, cand_block) per device the ranking ran with.
    memory_estimate: the bytes per device estimated for them (0 when both were given).
  """
  ranks: np.ndarray
  top_indices: np.ndarray
  top_scores: np.ndarray
  blocks: tuple[int, int] = (0, 0)
  memory_estimate: int = 0

  def metrics(self) -> dict[str, float]:
    """R@1/5/10/50, MdR, MnR of ``ranks`` (``retrieval.metrics_from_ranks``)."""
    return retrieval.metrics_from_ranks(self.ranks)


def _num_rows(tree: Any, name: str) -> int:
  leaves = jax.tree.leaves(tree)
  rows = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
  if not leaves or len(rows) != 1 or None in rows or 0 in rows:
    raise ValueError(f"scorer: {name} must be a pytree of arrays sharing a non-zero leading "
                     f"dim, got leading dims {sorted(rows, key=str)}")
  return rows.pop()


def _targets(query_to_target: Any, num_queries: int, num_candidates: int) -> np.ndarray:
  """Checks query_to_target; returns it as a [Q, T] int32 array padded with -1."""
  if query_to_target is None:
    if num_candidates < num_queries:
      raise ValueError(f"scorer: ground truth on the diagonal needs N >= Q, got Q="
                       f"{num_queries}, N={num_candidates}; pass query_to_target")
    return np.arange(num_queries, dtype=np.int32)[:, None]
  try:
    arr = np.asarray(query_to_target)
  except ValueError:  # a ragged list: pad it to [Q, T] with -1 first
    arr = np.zeros((0, 0, 0))
  if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"scorer: query_to_target must be a [Q] or [Q, T] int array (-1 pads "
                     f"rows with fewer targets), got shape {arr.shape} dtype {arr.dtype}")
  arr = arr.reshape(arr.shape[0], -1)
  if arr.shape[0] != num_queries or arr.shape[1] == 0:
    raise ValueError(f"scorer: query_to_target has shape {arr.shape}, expected [{num_queries}]"
                     f" or [{num_queries}, T>0]")
  bad = np.argwhere((arr < -1) | (arr >= num_candidates))
  if bad.size:
    raise ValueError(f"scorer: query_to_target[{tuple(bad[0])}] = {arr[tuple(bad[0])]} is "
                     f"not a candidate index in [0, {num_candidates}) or -1 (padding)")
  empty = np.flatnonzero(np.all(arr < 0, axis=1))
  if empty.size:
    raise ValueError(f"scorer: query {empty[0]} has no target ({empty.size} such queries)")
  return arr.astype(np.int32)


def _score(score_fn: ScoreFn, params: Any, query: Any, cand: Any) -> jax.Array:
  """score_fn on one block pair, checked to be [Bq, Bc] and cast to float32."""
  s = score_fn(query, cand) if params is None else score_fn(query, cand, params)
  expected = (jax.tree.leaves(query)[0].shape[0], jax.tree.leaves(cand)[0].shape[0])
  if s.shape != expected:
    raise ValueError(f"scorer: score_fn returned shape {s.shape}, expected {expected} "
                     f"([query block, candidate block])")
  return s.astype(jnp.float32)


def _block_step(score_fn: ScoreFn, cand_block: int, num_cand: int, top_k: int,
                query: Any, targets_bt: jax.Array, cand: Any,
                params: Any) -> tuple[jax.Array, ...]:
  """Ranks one per-device query block against all candidates (runs inside shard_map).

  The corpus pass fills the block's [Bq, N] score rows; the targets' scores, the counts and
  the top-K are then read from those rows (no pair is scored twice).

  Returns:
    greater, equal, nonfinite: [Bq] int32 counts; top_scores [Bq, K] float32 and
    top_indices [Bq, K] int32.
  """
  rows = jax.tree.leaves(cand)[0].shape[0]  # >= cand_block (padded when N < cand_block)
  bq = targets_bt.shape[0]

  def body(b, row):
    # The last block is shifted back so that it ends at the last row instead of being
    # padded: every block is a plain slice of the same shape; the columns it shares with
    # the previous block keep the scores they got there.
    start = jnp.minimum(b * cand_block, rows - cand_block)
    block = jax.tree.map(lambda x: lax.dynamic_slice_in_dim(x, start, cand_block), cand)
    s = _score(score_fn, params, query, block)
    col = start + jnp.arange(cand_block, dtype=jnp.int32)
    old = lax.dynamic_slice_in_dim(row, start, cand_block, axis=1)
    return lax.dynamic_update_slice_in_dim(row, jnp.where(col >= b * cand_block, s, old),
                                           start, axis=1)

  # *_like of a per-device value: shard_map needs the loop carry to vary over devices.
  row = jnp.zeros_like(targets_bt, dtype=jnp.float32, shape=(bq, rows))
  row = lax.fori_loop(0, math.ceil(num_cand / cand_block), body, row)[:, :num_cand]
  own = jnp.take_along_axis(row, jnp.maximum(targets_bt, 0), axis=1)
  threshold = jnp.where(targets_bt >= 0, own, -jnp.inf).max(axis=1)
  greater = jnp.sum(row > threshold[:, None], axis=1, dtype=jnp.int32)
  equal = jnp.sum(row == threshold[:, None], axis=1, dtype=jnp.int32)
  nonfinite = jnp.sum(~jnp.isfinite(row), axis=1, dtype=jnp.int32)
  # lax.top_k puts equal values in position order: ties come out lowest index first.
  top_v, top_i = lax.top_k(row, top_k)
  return greater, equal, nonfinite, top_v, top_i.astype(jnp.int32)


def _probe_step(score_fn: ScoreFn, cand_block: int, num_cand: int, query: Any,
                targets_bt: jax.Array, cand: Any, params: Any) -> jax.Array:
  """Scores the block's first ``cand_block`` candidates twice: as the corpus pass does, and
  moved to other rows of a block of other composition (the first half, reversed, every
  row twice). Runs inside shard_map.

  Returns:
    [Bq] int32: per real query, the index of a candidate whose two scores differ in any
    bit, -1 where none does.
  """
  c_idx = (cand_block - 1 - jnp.arange(cand_block)) // 2
  moved = jax.tree.map(lambda x: x[c_idx], cand)
  first = jax.tree.map(lambda x: x[:cand_block], cand)
  # One evaluation after the other (lax.map): the probe needs one block's temporaries.
  both = lax.map(lambda c: _score(score_fn, params, query, c),
                 jax.tree.map(lambda a, b: jnp.stack([a, b]), first, moved))
  bits = lax.bitcast_convert_type(both, jnp.int32)
  differ = (bits[1] != bits[0][:, c_idx]) & (c_idx < num_cand)[None, :]   # [Bq, Bc]
  bad = jnp.where(differ, c_idx[None, :], -1).max(axis=1)
  return jnp.where(jnp.any(targets_bt >= 0, axis=1), bad, -1)


@functools.lru_cache(maxsize=16)
def _step_fn(score_fn: ScoreFn, mesh: Mesh, cand_block: int, num_cand: int,
             top_k: int) -> Callable[..., tuple[jax.Array, ...]]:
  """Jitted step over one super-block of ``mesh.size * query_block`` queries."""
  rows = P(mesh.axis_names)  # queries split over every mesh axis; candidates replicated
  step = functools.partial(_block_step, score_fn, cand_block, num_cand, top_k)
  return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(rows, rows, P(), P()),
                                 out_specs=rows))


@functools.lru_cache(maxsize=16)
def _probe_fn(score_fn: ScoreFn, mesh: Mesh, cand_block: int,
              num_cand: int) -> Callable[..., jax.Array]:
  """Jitted ``_probe_step`` over one super-block, sharded as ``_step_fn``."""
  rows = P(mesh.axis_names)
  probe = functools.partial(_probe_step, score_fn, cand_block, num_cand)
  return jax.jit(jax.shard_map(probe, mesh=mesh, in_specs=(rows, rows, P(), P()),
                                 out_specs=rows))


@functools.partial(jax.jit, static_argnums=2)
def _device_rows(x: jax.Array, start: jax.Array, size: int) -> jax.Array:
  return lax.dynamic_slice_in_dim(x, start, size)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _device_tail(x: jax.Array, start: int, size: int, fill: int) -> jax.Array:
  tail = x[start:]
  return jnp.pad(tail, [(0, size - tail.shape[0])] + [(0, 0)] * (x.ndim - 1),
                 constant_values=fill)


def _rows_padded(x: Any, start: int, size: int, fill: int = 0) -> Any:
  """Rows [start, start + size) of a host or device array, padded with ``fill``.

  A device array's full blocks come from one compiled dynamic slice whose start is put on
  the device explicitly: a static slice would compile once per block, and eager indexing
  sends the index implicitly (``transfer_guard`` forbids it). The padded tail is compiled
  once per shape.
  """
  if isinstance(x, np.ndarray):
    x = x[start:start + size]
    pad = [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return x if x.shape[0] == size else np.pad(x, pad, constant_values=fill)
  if start + size <= x.shape[0]:
    return _device_rows(x, jax.device_put(np.int32(start)), size)
  return _device_tail(x, start, size, fill)


def free_bytes(mesh: Mesh) -> tuple[int, str]:
  """Memory free for one device's program, and where the figure comes from.

  Accelerators: the smallest ``bytes_limit - bytes_in_use`` of the mesh's devices
  (``device.memory_stats()``). The CPU backend has no ``memory_stats``: the host's
  ``MemAvailable`` (/proc/meminfo; elsewhere the free pages) divided by the mesh's devices,
  which share it.

  Returns:
    (bytes, source) with source "device memory_stats" or "host MemAvailable / <n> devices".
  """
  stats = [d.memory_stats() for d in mesh.devices.flat]
  if all(stats):
    return (min(int(s["bytes_limit"]) - int(s["bytes_in_use"]) for s in stats),
            "device memory_stats")
  try:
    with open("/proc/meminfo") as f:
      avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
  except (OSError, StopIteration):   # not Linux: the free pages
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  return avail // mesh.size, f"host MemAvailable / {mesh.size} devices"


def program_bytes(compiled: Any) -> int:
  """Bytes one device needs to run a compiled program (``flops.memory_bytes``: arguments,
  outputs and XLA temporaries; arguments are counted even when already resident, so the
  estimate errs high).

  Raises:
    ValueError: the backend gives no memory analysis (then set the block sizes).
  """
  need = flops.memory_bytes(compiled)
  if not math.isfinite(need):
    raise ValueError("this backend gives no memory_analysis(): set the evaluator's "
                     "query_block / cand_block / pair_block (config.evals.<name>) > 0")
  return int(need)


def largest_block(memory_at: Callable[[int], int], limit: int, budget: int,
                  start: int = 8) -> tuple[int, int]:
  """The largest block size b <= ``limit`` whose program fits ``budget`` bytes.

  Few compiles: ``memory_at`` (compiles the program at b per device, returns
  ``program_bytes``; cache it) runs at 1 and ``start``; ``limit``, or else the largest
  power of two the straight line through them allows, is compiled to confirm it, halved
  until it fits. Then the block is evened out: the fewest steps of that size cover
  ``limit`` rows, and their common size is ceil(limit / steps) (padding < one row per step).

  Returns:
    (block, its estimated bytes; for an evened block, interpolated on the line).

  Raises:
    MemoryError: not even a block of 1 fits.
  """
  seen = {1: memory_at(1)}
  if seen[1] > budget:
    raise MemoryError(f"scorer: a block of 1 needs {seen[1] / 2**30:.3f} GiB, more than "
                      f"the {budget / 2**30:.3f} GiB available")
  start = max(1, min(start, limit))
  seen[start] = memory_at(start)
  per = max((seen[start] - seen[1]) / max(start - 1, 1), 1.0)
  fit = 1 + int((budget - seen[1]) // per)
  b = limit if fit >= limit else 1 << (fit.bit_length() - 1)
  while b > 1:
    if b not in seen:
      seen[b] = memory_at(b)
    if seen[b] <= budget:
      break
    b //= 2
  size = -(-limit // -(-limit // b))
  if size == b:
    return b, seen[b]
  lo = max(k for k in seen if k <= size)
  hi = min((k for k in seen if k >= size), default=lo)
  est = seen[hi] if hi == lo else seen[lo] + (seen[hi] - seen[lo]) * (size - lo) / (hi - lo)
  return size, int(est)


def _spec(tree: Any, rows: int, sharding: NamedSharding) -> Any:
  """ShapeDtypeStructs of ``tree``'s leaves with ``rows`` leading rows."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows, *np.shape(x)[1:]),
                                                     np.result_type(x), sharding=sharding),
                      tree)


def choose_blocks(query_enc: Any, cand_enc: Any, score_fn: ScoreFn, *, mesh: Mesh,
                  params: Any = None, top_k: int = 10, num_targets: int = 1,
                  query_block: int = 0, cand_block: int = 0,
                  memory_fraction: float = 0.8,
                  budget_bytes: int | None = None) -> tuple[int, int, int]:
  """``rank_corpus``'s block sizes from the compiled step's memory and the free memory.

  A block size given (> 0) is kept (both given: nothing is compiled). Otherwise
  ``cand_block`` is min(N, 1024), halved while one query row (or the given
  ``query_block``) does not fit; ``query_block`` is the largest that fits
  (``largest_block``, at most the queries per device). The budget is ``memory_fraction``
  of ``free_bytes(mesh)`` unless ``budget_bytes`` is given. The chosen sizes and the
  estimate are logged.

  Returns:
    (query_block, cand_block, estimated bytes per device; 0 when both were given).

  Raises:
    MemoryError: the given block size does not fit even with a candidate block of 1.
    ValueError: the backend gives no memory analysis (set both block sizes).
  """
  num_q, num_cand = _num_rows(query_enc, "query_enc"), _num_rows(cand_enc, "cand_enc")
  if query_block > 0 and cand_block > 0:
    return query_block, cand_block, 0
  source = "given"
  if budget_bytes is None:
    free, source = free_bytes(mesh)
    budget_bytes = int(memory_fraction * free)
  rows = NamedSharding(mesh, P(mesh.axis_names))
  rep = NamedSharding(mesh, P())
  params_spec = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.result_type(x), sharding=rep), params)

  @functools.cache
  def memory(qb: int, cb: int) -> int:
    step = _step_fn(score_fn, mesh, cb, num_cand, top_k)
    args = (_spec(query_enc, qb * mesh.size, rows),
            jax.ShapeDtypeStruct((qb * mesh.size, num_targets), np.int32, sharding=rows),
            _spec(cand_enc, max(num_cand, cb), rep), params_spec)
    return program_bytes(step.lower(*args).compile())

  # The widest candidate block (at most min(N, 1024)) that one query row fits.
  cb = cand_block if cand_block > 0 else min(num_cand, 1024)
  qb = max(query_block, 1)
  while memory(qb, cb) > budget_bytes and cand_block <= 0 and cb > 1:
    cb //= 2
  if memory(qb, cb) > budget_bytes:
    raise MemoryError(f"scorer: query_block {qb} x cand_block {cb} needs "
                      f"{memory(qb, cb) / 2**30:.3f} GiB, more than the "
                      f"{budget_bytes / 2**30:.3f} GiB available")
  est = memory(qb, cb)
  if query_block <= 0:
    qb, est = largest_block(lambda b: memory(b, cb), -(-num_q // mesh.size), budget_bytes)
  logging.info("scorer: query_block %d x cand_block %d per device, estimated %.3f GiB of "
               "a %.3f GiB budget (%.0f%% of free memory, %s)", qb, cb, est / 2**30,
               budget_bytes / 2**30, 100 * memory_fraction, source)
  return qb, cb, est


@dataclasses.dataclass(frozen=True)
class TokenTrim:
  """Cuts each query block's padded token axis to its longest query (host side, exact).

  A query encoding padded to L tokens whose score ignores the positions where ``mask`` is
  False (masked everywhere a pair's score reads them) scores the same with the padding
  cut: each block is cut to its longest row of ``mask`` (one past its last True), rounded
  up to a multiple of ``bucket`` (at most ceil(L / bucket) compiled shapes), and the
  queries go through sorted by that length, so a block holds queries of similar length.

  Attributes:
    mask: the query encoding's [Q, L] bool leaf (a dict key).
    leaves: the other [Q, L, ...] leaves with that token axis.
    bucket: the lengths' rounding.
  """
  mask: str
  leaves: tuple[str, ...] = ()
  bucket: int = 8

  def lengths(self, enc: Any) -> np.ndarray:
    """[Q] int: one past each query's last True ``mask`` position (0 if none)."""
    m = np.asarray(jax.device_get(enc[self.mask]), bool)
    return np.where(m.any(axis=1), m.shape[1] - np.argmax(m[:, ::-1], axis=1), 0)

  def cut(self, enc: dict[str, Any], length: int) -> dict[str, Any]:
    """``enc`` with the token axis of ``mask`` and ``leaves`` cut to ``length`` rounded up
    to ``bucket`` (at most L)."""
    full = np.shape(enc[self.mask])[1]
    keep = min(full, max(1, -(-int(length) // self.bucket) * self.bucket))
    cut = (self.mask, *self.leaves)
    return {k: v[:, :keep] if k in cut else v for k, v in enc.items()}


def rank_corpus(query_enc: Any, cand_enc: Any, query_to_target: Any = None,
                score_fn: ScoreFn = dot_score, *, mesh: Mesh, params: Any = None,
                top_k: int = 10, query_block: int = 256, cand_block: int = 1024,
                memory_fraction: float = 0.8, trim: TokenTrim | None = None) -> ScorerResult:
  """Exact tie-averaged ranks and the top-K of every query over a candidate corpus.

  Args:
    query_enc: pytree of arrays with leading dim Q (host numpy or device arrays), e.g. a
      [Q, D] embedding; streamed to the devices one query block at a time.
    cand_enc: pytree of arrays with leading dim N; replicated on every device.
    query_to_target: None (query i's target is candidate i, needs N >= Q), a [Q] int array
      of target indices, or a [Q, T] int array of several targets per query padded with -1
      (the rank is then the best among them, as in ``retrieval.ranks``).
    score_fn: ``score_fn(query_block, cand_block) -> [Bq, Bc]`` float scores, where the
      blocks are ``query_enc``/``cand_enc`` pytrees with Bq/Bc rows; higher is better;
      called as ``score_fn(query_block, cand_block, params)`` when ``params`` is given.
      The compiled step is cached per score_fn, so pass a stable object (not a fresh
      lambda or partial per call, which recompiles), and pass model weights as ``params``:
      arrays score_fn closes over are compiled in as constants.
    mesh: device mesh; queries are sharded over all of its axes.
    params: optional pytree (e.g. model weights) for score_fn, replicated on every device.
    top_k: K, candidates kept per query (0 <= K <= N).
    query_block: queries per device per step (the global step takes mesh.size times this;
      Q is padded up to a multiple of it); 0: the largest that fits (``choose_blocks``).
      When given (> 0) it is fixed per device, so 1 and 8 devices run the same
      per-device kernel and give bit-identical results; chosen from memory, the kernels
      may differ, and the ranks stay the same (ties are exact; see the module docstring).
    cand_block: candidates scored at a time; 0: chosen from memory (``choose_blocks``).
    memory_fraction: the share of the free device memory a chosen block may use.
    trim: cut each query block's padded token axis (``TokenTrim``); None: no cut.

  Returns:
    ScorerResult with ranks [Q] float64, top_indices [Q, K] int32, top_scores [Q, K]
    float32; ``.metrics()`` gives R@1/5/10/50, MdR and MnR.

  Raises:
    ValueError: on inconsistent leading dims, a bad ``query_to_target`` (out of range, a
      query without targets), bad block sizes or K, a score_fn of the wrong output shape,
      or non-finite scores.
    RuntimeError: if a pair's score depends on its position or its block's other rows
      (the probe, module docstring).
    MemoryError: a block size is to be chosen and not even one pair fits.
  """
  num_q, num_cand = _num_rows(query_enc, "query_enc"), _num_rows(cand_enc, "cand_enc")
  if query_block < 0 or cand_block < 0 or not 0 <= top_k <= num_cand:
    raise ValueError(f"scorer: need query_block, cand_block >= 0 (0: from memory) and "
                     f"0 <= top_k <= N={num_cand}, got {query_block}, {cand_block}, {top_k}")
  targets = _targets(query_to_target, num_q, num_cand)
  query_block, cand_block, estimate = choose_blocks(
      query_enc, cand_enc, score_fn, mesh=mesh, params=params, top_k=top_k,
      num_targets=targets.shape[1], query_block=query_block, cand_block=cand_block,
      memory_fraction=memory_fraction)
  order = lengths = None
  if trim is not None:  # shortest queries first: a block's longest is close to the rest
    lengths = trim.lengths(query_enc)
    order = np.argsort(lengths, kind="stable")
    query_enc, targets = jax.device_get(query_enc), targets[order]
  cand = cand_enc
  if num_cand < cand_block:  # else the last block is shifted back, not padded: no copy
    cand = jax.tree.map(lambda x: _rows_padded(x, 0, cand_block), cand)
  cand, params = jax.device_put((cand, params), NamedSharding(mesh, P()))
  step = _step_fn(score_fn, mesh, cand_block, num_cand, top_k)
  rows = NamedSharding(mesh, P(mesh.axis_names))
  size = mesh.size * query_block
  outs, probe = [], None
  for i, start in enumerate(range(0, num_q, size)):
    if order is None:
      query = jax.tree.map(lambda x: _rows_padded(x, start, size), query_enc)
    else:
      idx = order[start:start + size]
      query = jax.tree.map(lambda x: _rows_padded(np.asarray(x)[idx], 0, size), query_enc)
      query = trim.cut(query, lengths[idx].max())
    tgt = _rows_padded(targets, start, size, fill=-1)
    query, tgt = jax.device_put((query, tgt), rows)
    if probe is None:  # once per run: candidates moved, block composition changed
      probe = _probe_fn(score_fn, mesh, cand_block, num_cand)(query, tgt, cand, params)
    outs.append(step(query, tgt, cand, params))
    # Dispatch is async; two steps in flight keep the devices busy, while an unbounded
    # run-ahead would hold a copy of every query block at once (O(Q), not O(block)).
    if i >= 2:
      jax.block_until_ready(outs[i - 2])
  greater, equal, nonfinite, top_v, top_i = (
      np.concatenate(parts)[:num_q] for parts in zip(*jax.device_get(outs)))
  probe = np.asarray(jax.device_get(probe))[:num_q]   # the first block's queries
  if order is not None:  # back to the caller's query order
    inverse = np.argsort(order)
    greater, equal, nonfinite, top_v, top_i = (
        x[inverse] for x in (greater, equal, nonfinite, top_v, top_i))
  if nonfinite.any():
    raise ValueError(f"scorer: score_fn gave {int(nonfinite.sum())} non-finite scores (first"
                     f" in query {int(np.flatnonzero(nonfinite)[0])}); ranks would be "
                     f"meaningless")
  bad = np.flatnonzero(probe >= 0)
  if bad.size:
    q = int(bad[0]) if order is None else int(order[bad[0]])
    raise RuntimeError(
        f"scorer: query {q} scored differently against candidate {int(probe[bad[0]])} in "
        f"two evaluations of the same pair (at other positions, in a block of other rows); "
        f"score_fn must be deterministic per pair, whatever its position in the block")
  ranks = greater.astype(np.float64) + (equal + 1) / 2.0
  return ScorerResult(ranks=ranks, top_indices=top_i, top_scores=top_v,
                      blocks=(query_block, cand_block), memory_estimate=estimate)
