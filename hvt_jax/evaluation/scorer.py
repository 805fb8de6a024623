"""Device-side corpus ranking: exact tie-averaged ranks and a top-K, block by block.

``rank_corpus`` ranks every query against every candidate without
the [Q, N] similarity matrix ever existing: queries go through in blocks of
``query_block`` rows per device, sharded over every axis of the mesh; candidates are
replicated and visited ``cand_block`` rows at a time by a ``fori_loop`` inside one jitted,
fixed-shape step. Per query the step keeps

* the score of its best ground-truth candidate (``threshold``), computed first,
* the number of candidates scoring strictly higher and the number scoring equal,
* a running top-K (scores, candidate indices), merged per block with ``lax.top_k``,

so the rank is ``greater + (equal + 1) / 2``, exactly ``retrieval.ranks`` (1-based, ties at
their average rank, several targets: the best of them; ``equal`` counts the target itself).

Queries, not candidates, are sharded: each device then owns the complete counts and top-K
of its queries (no cross-device reduction), and its kernel shapes do not depend on the
device count, so 1 and 8 devices give the same bits. The price is a replica of the
candidate encodings on every device.

Ties are exact only if a pair's score does not depend on where the pair falls in a block.
Every ``score_fn`` call has the same shape (the last candidate block is shifted back to end
at N, with the columns already seen masked out; the last query block is padded), and
``dot_score`` fixes the precision. The targets' own scores come from a separate call of
that shape on the gathered target rows; a score_fn whose output depends on position
almost surely leaves some target not tied with itself (``equal == 0``), and
``rank_corpus`` then raises rather than return wrong ranks.

Memory per device: the encodings (candidates replicated), at most three query blocks in
flight, one [query_block, cand_block] score block, and for the targets' scores
ceil(query_block * T / cand_block) gathered candidate blocks. Single process only (the
inputs are placed from this process).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import math
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

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
  """
  ranks: np.ndarray
  top_indices: np.ndarray
  top_scores: np.ndarray

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


def _best_target_score(score_fn: ScoreFn, params: Any, query: Any, targets_bt: jax.Array,
                       cand: Any, cand_block: int) -> jax.Array:
  """[Bq] float32 score of each query's best target (-inf for padded queries).

  The target rows are gathered into [cand_block]-row blocks and scored by the same
  fixed-shape ``score_fn`` call as the corpus blocks, so each score is bit-identical to the
  one the corpus scan sees for that pair.
  """
  bq, t = targets_bt.shape
  m = math.ceil(bq * t / cand_block)
  flat = jnp.pad(targets_bt.reshape(-1), (0, m * cand_block - bq * t), constant_values=-1)
  rows = jax.tree.map(
      lambda x: x[jnp.maximum(flat, 0)].reshape(m, cand_block, *x.shape[1:]), cand)
  scores = lax.map(lambda c: _score(score_fn, params, query, c), rows)  # [m, Bq, Bc]
  scores = scores.transpose(1, 0, 2).reshape(bq, m * cand_block)
  own = jnp.take_along_axis(scores, jnp.arange(bq * t).reshape(bq, t), axis=1)
  return jnp.where(targets_bt >= 0, own, -jnp.inf).max(axis=1)


def _block_step(score_fn: ScoreFn, cand_block: int, num_cand: int, top_k: int,
                query: Any, targets_bt: jax.Array, cand: Any,
                params: Any) -> tuple[jax.Array, ...]:
  """Ranks one per-device query block against all candidates (runs inside shard_map).

  Returns:
    greater, equal, nonfinite: [Bq] int32 counts; top_scores [Bq, K] float32 and
    top_indices [Bq, K] int32.
  """
  threshold = _best_target_score(score_fn, params, query, targets_bt, cand, cand_block)
  rows = jax.tree.leaves(cand)[0].shape[0]  # >= cand_block (padded when N < cand_block)
  # *_like of a per-device value: shard_map needs the loop carry to vary over devices.
  zeros = jnp.zeros_like(threshold, dtype=jnp.int32)
  bq = threshold.shape[0]

  def body(b, carry):
    greater, equal, nonfinite, top_v, top_i = carry
    # The last block is shifted back so that it ends at the last row instead of being
    # padded: every block is a plain slice of the same shape, and the columns it
    # shares with the previous block are masked out.
    start = jnp.minimum(b * cand_block, rows - cand_block)
    block = jax.tree.map(lambda x: lax.dynamic_slice_in_dim(x, start, cand_block), cand)
    s = _score(score_fn, params, query, block)
    col = start + jnp.arange(cand_block, dtype=jnp.int32)
    valid = (col >= b * cand_block) & (col < num_cand)
    nonfinite += jnp.sum(valid & ~jnp.isfinite(s), axis=1, dtype=jnp.int32)
    s = jnp.where(valid, s, -jnp.inf)
    greater += jnp.sum(s > threshold[:, None], axis=1, dtype=jnp.int32)
    equal += jnp.sum(s == threshold[:, None], axis=1, dtype=jnp.int32)
    if top_k:
      # lax.top_k puts equal values in position order; the running top-K sits first and
      # holds earlier (lower) indices, so ties come out lowest candidate index first.
      top_v, pos = lax.top_k(jnp.concatenate([top_v, s], axis=1), top_k)
      idx = jnp.concatenate([top_i, jnp.broadcast_to(col, s.shape)], axis=1)
      top_i = jnp.take_along_axis(idx, pos, axis=1)
    return greater, equal, nonfinite, top_v, top_i

  init = (zeros, zeros, zeros, jnp.full_like(threshold, -jnp.inf, shape=(bq, top_k)),
          jnp.full_like(zeros, -1, shape=(bq, top_k)))
  return lax.fori_loop(0, math.ceil(num_cand / cand_block), body, init)


@functools.lru_cache(maxsize=16)
def _step_fn(score_fn: ScoreFn, mesh: Mesh, cand_block: int, num_cand: int,
             top_k: int) -> Callable[..., tuple[jax.Array, ...]]:
  """Jitted step over one super-block of ``mesh.size * query_block`` queries."""
  rows = P(mesh.axis_names)  # queries split over every mesh axis; candidates replicated
  step = functools.partial(_block_step, score_fn, cand_block, num_cand, top_k)
  return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(rows, rows, P(), P()),
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


def rank_corpus(query_enc: Any, cand_enc: Any, query_to_target: Any = None,
                score_fn: ScoreFn = dot_score, *, mesh: Mesh, params: Any = None,
                top_k: int = 10, query_block: int = 256,
                cand_block: int = 1024) -> ScorerResult:
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
      Q is padded up to a multiple of it). Fixed per device, so 1 and 8 devices run the
      same per-device kernel and give bit-identical results.
    cand_block: candidates scored at a time. Targets cost ceil(query_block * T /
      cand_block) extra block evaluations per query block.

  Returns:
    ScorerResult with ranks [Q] float64, top_indices [Q, K] int32, top_scores [Q, K]
    float32; ``.metrics()`` gives R@1/5/10/50, MdR and MnR.

  Raises:
    ValueError: on inconsistent leading dims, a bad ``query_to_target`` (out of range, a
      query without targets), bad block sizes or K, a score_fn of the wrong output shape,
      or non-finite scores.
    RuntimeError: if a target's score differs between two evaluations of the same pair,
      i.e. score_fn is not deterministic per pair.
  """
  num_q, num_cand = _num_rows(query_enc, "query_enc"), _num_rows(cand_enc, "cand_enc")
  if query_block < 1 or cand_block < 1 or not 0 <= top_k <= num_cand:
    raise ValueError(f"scorer: need query_block, cand_block >= 1 and 0 <= top_k <= N="
                     f"{num_cand}, got {query_block}, {cand_block}, {top_k}")
  targets = _targets(query_to_target, num_q, num_cand)
  cand = cand_enc
  if num_cand < cand_block:  # else the last block is shifted back, not padded: no copy
    cand = jax.tree.map(lambda x: _rows_padded(x, 0, cand_block), cand)
  cand, params = jax.device_put((cand, params), NamedSharding(mesh, P()))
  step = _step_fn(score_fn, mesh, cand_block, num_cand, top_k)
  rows = NamedSharding(mesh, P(mesh.axis_names))
  size = mesh.size * query_block
  outs = []
  for i, start in enumerate(range(0, num_q, size)):
    query = jax.tree.map(lambda x: _rows_padded(x, start, size), query_enc)
    tgt = _rows_padded(targets, start, size, fill=-1)
    outs.append(step(jax.device_put(query, rows), jax.device_put(tgt, rows), cand, params))
    # Dispatch is async; two steps in flight keep the devices busy, while an unbounded
    # run-ahead would hold a copy of every query block at once (O(Q), not O(block)).
    if i >= 2:
      jax.block_until_ready(outs[i - 2])
  greater, equal, nonfinite, top_v, top_i = (
      np.concatenate(parts)[:num_q] for parts in zip(*jax.device_get(outs)))
  if nonfinite.any():
    raise ValueError(f"scorer: score_fn gave {int(nonfinite.sum())} non-finite scores (first"
                     f" in query {int(np.flatnonzero(nonfinite)[0])}); ranks would be "
                     f"meaningless")
  if (equal < 1).any():
    raise RuntimeError(
        f"scorer: query {int(np.flatnonzero(equal < 1)[0])}'s target scored differently in "
        f"two evaluations of the same pair; score_fn must be deterministic per pair, "
        f"whatever its position in the block")
  ranks = greater.astype(np.float64) + (equal + 1) / 2.0
  return ScorerResult(ranks=ranks, top_indices=top_i, top_scores=top_v)
