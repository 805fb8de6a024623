"""Cross-modal retrieval metrics in plain numpy (the contract the README states).

A similarity matrix has one row per query and one column per candidate; the correct
candidate of query ``i`` is column ``i`` unless ``query_to_target`` says otherwise (one
column or a set of columns per query). Every metric is derived from one number per query,
its *rank*:

  rank = (# candidates scoring strictly higher) + (# candidates tied with it + 1) / 2

where "tied with it" counts the correct candidate itself. This is the 1-based average of
the positions the tied candidates occupy, i.e. MMT's ``break_ties="averaging"`` plus one:
a correct candidate tied with one other at the top gets rank 1.5, tied with two others at
the top rank 2. A constant similarity matrix therefore scores (N + 1) / 2 for every query
instead of a perfect rank 1, which is what an optimistic tie-break would report. With
several correct candidates the query's rank is the best (smallest) rank among them, i.e.
the rank of its highest-scoring correct candidate; other correct candidates tied with it
still count in the tie.

Metric definitions (keys of ``retrieval_metrics``):

  R@k  percent of queries with rank <= k, for k in 1, 5, 10, 50
  MdR  median of the 1-based ranks (``np.median``: the mean of the two middle ranks when
       the number of queries is even)
  MnR  mean of the 1-based ranks

Differences from reference code, which matter when comparing with published numbers:

* The HSE authors' reference code (Zhang, Hu and Sha, ECCV 2018) reports as "R@10" a value
  computed with ``ranks < 50``, i.e. it is really R@50 (the paper's tables label that column
  R@50), and computes the median rank as ``floor(median of 0-based ranks) + 1``, which for an
  even number of queries can differ from the true median by 0.5. This module reports the true
  R@10 and R@50 and MdR = ``np.median`` of the 1-based ranks, the contract the README states.
* MMT counts a tie-averaged 0-based rank ``c`` in R@k when ``c < k``; this module counts a
  1-based rank ``r`` when ``r <= k``. They differ only for a half-integer rank just above k
  (e.g. rank 5.5 is in MMT's R@5 but not in ours).

``ranks`` ranks a similarity matrix that is already on the host. A corpus too large for its
[Q, N] matrix is ranked from encodings by the device-side scorer
(``evaluation.scorer.rank_corpus``, which every evaluator uses): the same rule, each pair's
score computed once, so exact duplicates always tie.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import contextlib
import math
import os

import numpy as np

RECALL_KS = (1, 5, 10, 50)
METRIC_KEYS = ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")

# Rows per block when ranking a full similarity matrix: bounds the boolean temporaries of
# the comparisons to about 16 M entries whatever the matrix size.
_RANK_BLOCK_ENTRIES = 1 << 24

QueryToTarget = Sequence[int] | Sequence[Sequence[int]] | np.ndarray | None


def _check_similarity(similarity: np.ndarray) -> np.ndarray:
  """Validates a similarity matrix: 2-D, real numbers, every entry finite."""
  sim = np.asarray(similarity)
  if sim.ndim != 2:
    raise ValueError(
        f"retrieval: similarity must be a 2-D [queries, candidates] array, got shape "
        f"{sim.shape}")
  if sim.shape[0] == 0 or sim.shape[1] == 0:
    raise ValueError(f"retrieval: similarity has no queries or no candidates: {sim.shape}")
  if sim.dtype == np.bool_ or not np.issubdtype(sim.dtype, np.number) or np.iscomplexobj(sim):
    raise ValueError(f"retrieval: similarity must hold real numbers, got dtype {sim.dtype}")
  if np.issubdtype(sim.dtype, np.floating):
    n_bad = sim.size - int(np.count_nonzero(np.isfinite(sim)))
    if n_bad:
      raise ValueError(
          f"retrieval: similarity has {n_bad} non-finite entries (NaN or inf) out of "
          f"{sim.size}; ranks would be meaningless")
  return sim


def _targets_csr(query_to_target: QueryToTarget, num_queries: int,
                 num_candidates: int) -> tuple[np.ndarray, np.ndarray]:
  """Flattens the query -> correct-column mapping into (row, column) pairs.

  Args:
    query_to_target: None (diagonal), a [Q] int array/list, a [Q, K] int array, or a
      length-Q list whose items are ints or non-empty collections of ints.
    num_queries: Q, the number of similarity rows.
    num_candidates: N, the number of similarity columns.

  Returns:
    (rows, cols): two int64 arrays of equal length, sorted by row; every row in [0, Q)
    appears at least once and every column is in [0, N).
  """
  if query_to_target is None:
    if num_candidates < num_queries:
      raise ValueError(
          f"retrieval: ground truth on the diagonal needs at least as many candidates as "
          f"queries, got {num_queries} queries and {num_candidates} candidates; pass "
          f"query_to_target")
    idx = np.arange(num_queries, dtype=np.int64)
    return idx, idx.copy()

  arr = None
  if isinstance(query_to_target, np.ndarray) and query_to_target.dtype != object:
    arr = query_to_target
  elif not isinstance(query_to_target, np.ndarray):
    # Fast path for the common flat list of ints; ragged lists and sets fall through to
    # the per-query loop below (numpy refuses inhomogeneous lists with a ValueError).
    try:
      candidate = np.asarray(query_to_target)
    except ValueError:
      candidate = None
    if candidate is not None and candidate.ndim in (1, 2) and np.issubdtype(
        candidate.dtype, np.integer):
      arr = candidate

  if arr is not None:
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(
          f"retrieval: query_to_target array must be [Q] or [Q, K] integers, got shape "
          f"{arr.shape} dtype {arr.dtype}")
    if arr.shape[0] != num_queries:
      raise ValueError(
          f"retrieval: query_to_target has {arr.shape[0]} entries but similarity has "
          f"{num_queries} rows")
    if arr.ndim == 2 and arr.shape[1] == 0:
      raise ValueError("retrieval: query_to_target is [Q, 0]: every query needs a target")
    cols = arr.reshape(num_queries, -1).astype(np.int64)
    rows = np.repeat(np.arange(num_queries, dtype=np.int64), cols.shape[1])
    cols = cols.reshape(-1)
  else:
    items = list(query_to_target)
    if len(items) != num_queries:
      raise ValueError(
          f"retrieval: query_to_target has {len(items)} entries but similarity has "
          f"{num_queries} rows")
    rows_list, cols_list = [], []
    for i, item in enumerate(items):
      if isinstance(item, (set, frozenset)):
        item = sorted(item)
      try:
        targets = np.asarray(item).reshape(-1)
      except ValueError as e:
        raise ValueError(f"retrieval: query_to_target[{i}] = {item!r} is not a list of ints") from e
      if targets.size == 0:
        raise ValueError(f"retrieval: query_to_target[{i}] is empty: query {i} has no target")
      if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"retrieval: query_to_target[{i}] = {item!r}; target columns must be ints")
      rows_list.append(np.full(targets.size, i, dtype=np.int64))
      cols_list.append(targets.astype(np.int64))
    rows = np.concatenate(rows_list)
    cols = np.concatenate(cols_list)

  bad = np.flatnonzero((cols < 0) | (cols >= num_candidates))
  if bad.size:
    raise ValueError(
        f"retrieval: query_to_target[{rows[bad[0]]}] = {cols[bad[0]]} is out of range "
        f"[0, {num_candidates}) ({bad.size} out-of-range target(s) in all)")
  return rows, cols


def _best_correct_scores(sim_rows: np.ndarray, rows: np.ndarray,
                         cols: np.ndarray) -> np.ndarray:
  """Highest score among each row's correct columns ([R] from an [R, N] block).

  ``rows`` are local to ``sim_rows`` and cover every row. The highest-scoring correct
  column is the one with the best rank, since the rank only decreases as the score grows.
  The maximum is taken in the matrix's own dtype, so each value is exactly one of the
  row's entries and compares equal to its exact duplicates only (a cast to float64 would
  merge distinct integers above 2**53).
  """
  dtype = sim_rows.dtype
  lowest = -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min
  best = np.full(sim_rows.shape[0], lowest, dtype=dtype)
  np.maximum.at(best, rows, sim_rows[rows, cols])
  return best


def _block_ranks(sim_rows: np.ndarray, best: np.ndarray) -> np.ndarray:
  """Tie-averaged 1-based rank of score ``best[r]`` within row ``r`` of ``sim_rows``."""
  threshold = best[:, None]
  greater = np.count_nonzero(sim_rows > threshold, axis=1)
  equal = np.count_nonzero(sim_rows == threshold, axis=1)
  return greater + (equal + 1) / 2.0


def _rank_rows(sim_rows: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """Ranks of every row of ``sim_rows``, in row sub-blocks to bound the boolean
  temporaries (a row is never split, and its target score is one of its own entries)."""
  n_rows, n_cols = sim_rows.shape
  step = max(1, _RANK_BLOCK_ENTRIES // max(n_cols, 1))
  best = _best_correct_scores(sim_rows, rows, cols)
  out = np.empty(n_rows, dtype=np.float64)
  for start in range(0, n_rows, step):
    stop = min(start + step, n_rows)
    out[start:stop] = _block_ranks(sim_rows[start:stop], best[start:stop])
  return out


def ranks(similarity: np.ndarray, query_to_target: QueryToTarget = None) -> np.ndarray:
  """1-based, tie-averaged rank of each query's correct candidate.

  Args:
    similarity: [Q, N] real array, higher is more similar; every entry finite.
    query_to_target: None for ground truth on the diagonal (needs N >= Q); else, per query,
      its correct column as an int, or its correct columns as a list/set/array of ints
      (the query's rank is then the best rank among them). A [Q] or [Q, K] int array works.

  Returns:
    [Q] float64 ranks in [1, N]; half-integers where the correct score ties with others.

  Raises:
    ValueError: on a non-2-D, empty or non-finite matrix, or a bad ``query_to_target``.
  """
  sim = _check_similarity(similarity)
  rows, cols = _targets_csr(query_to_target, *sim.shape)
  return _rank_rows(sim, rows, cols)


def metrics_from_ranks(rank_values: np.ndarray) -> dict[str, float]:
  """Recall at 1/5/10/50 (percent), median and mean rank from 1-based ranks.

  Args:
    rank_values: [Q] 1-based ranks (floats allowed: tie-averaged ranks are half-integers).

  Returns:
    {"R@1", "R@5", "R@10", "R@50", "MdR", "MnR"} as Python floats. R@k counts rank <= k;
    MdR is ``np.median`` of the ranks.
  """
  r = np.asarray(rank_values, dtype=np.float64)
  if r.ndim != 1 or r.size == 0:
    raise ValueError(f"retrieval: ranks must be a non-empty 1-D array, got shape {r.shape}")
  if not np.all(np.isfinite(r)) or np.any(r < 1):
    raise ValueError("retrieval: ranks must be finite and >= 1 (they are 1-based)")
  metrics = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in RECALL_KS}
  metrics["MdR"] = float(np.median(r))
  metrics["MnR"] = float(np.mean(r))
  return metrics


def retrieval_metrics(similarity: np.ndarray,
                      query_to_target: QueryToTarget = None) -> dict[str, float]:
  """Retrieval metrics of a query-by-candidate similarity matrix.

  Definitions are in the module docstring. In short: ranks are 1-based and tie-averaged
  (a correct score tied with one other at the top has rank 1.5); ``R@k`` is the percent of
  queries with rank <= k (a true R@k: the HSE authors' code reports R@50 under the name
  "R@10"); ``MdR`` is the numpy median of the 1-based ranks (the HSE code uses
  floor(median of 0-based ranks) + 1); ``MnR`` their mean.

  Args:
    similarity: [Q, N] real array, rows are queries and columns candidates.
    query_to_target: None for ground truth on the diagonal; else per query an int column
      or a collection of int columns (multiple correct candidates), as in ``ranks``.

  Returns:
    {"R@1", "R@5", "R@10", "R@50", "MdR", "MnR"} as Python floats.

  Raises:
    ValueError: if ``similarity`` is not 2-D, has non-finite entries (the message gives
      their count), or ``query_to_target`` has the wrong length or out-of-range indices.
  """
  return metrics_from_ranks(ranks(similarity, query_to_target))


def recall_curve(ranks_or_similarity: np.ndarray, max_rank: int | None = None,
                 query_to_target: QueryToTarget = None) -> tuple[np.ndarray, np.ndarray]:
  """Recall (percent) as a function of the rank cut-off, for recall-vs-rank plots.

  Args:
    ranks_or_similarity: [Q] 1-based ranks (e.g. from ``ranks``) or a [Q, N] similarity
      matrix, which is ranked with ``query_to_target`` first.
    max_rank: largest cut-off; defaults to N for a matrix, else ceil(max rank), so the
      curve ends at 100 %.
    query_to_target: as in ``ranks``; only used with a similarity matrix.

  Returns:
    (rank_values, recall_percent): [max_rank] int64 cut-offs 1..max_rank and [max_rank]
    float64 percent of queries with rank <= cut-off.
  """
  x = np.asarray(ranks_or_similarity)
  if x.ndim == 2:
    r = ranks(x, query_to_target)
    default_max = x.shape[1]
  elif x.ndim == 1:
    if query_to_target is not None:
      raise ValueError("retrieval: query_to_target only applies to a similarity matrix")
    r = x.astype(np.float64)
    metrics_from_ranks(r)  # validates: non-empty, finite, >= 1
    default_max = int(math.ceil(float(r.max())))
  else:
    raise ValueError(
        f"retrieval: recall_curve takes [Q] ranks or a [Q, N] matrix, got shape {x.shape}")
  if max_rank is None:
    max_rank = default_max
  if max_rank < 1:
    raise ValueError(f"retrieval: max_rank must be >= 1, got {max_rank}")
  cutoffs = np.arange(1, max_rank + 1, dtype=np.int64)
  # searchsorted on the sorted ranks counts ranks <= each cut-off in O((Q + K) log Q).
  counts = np.searchsorted(np.sort(r), cutoffs, side="right")
  return cutoffs, 100.0 * counts / r.size


def plot_recall_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str,
                       title: str = "") -> None:
  """Writes a recall-vs-rank PNG, one line per curve (as Fig. 1 of the HSE supplement).

  Args:
    curves: name (e.g. "p2v", "v2p") -> (rank_values [K], recall_percent [K]), as returned
      by ``recall_curve``.
    path: output PNG file; parent folders are created.
    title: figure title.
  """
  if not curves:
    raise ValueError("retrieval: plot_recall_curves needs at least one curve")
  checked = {}
  for name, (x, y) in curves.items():
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
      raise ValueError(
          f"retrieval: curve {name!r} needs equal-length non-empty 1-D arrays, got "
          f"{x.shape} and {y.shape}")
    if np.any(x <= 0):
      raise ValueError(f"retrieval: curve {name!r} has ranks <= 0 (the x axis is log scale)")
    checked[name] = (x, y)

  with png_figure(path, title) as (_, ax):
    for name, (x, y) in checked.items():
      ax.plot(x, y, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("Rank")
    ax.set_ylabel("Recall (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")


@contextlib.contextmanager
def png_figure(path: str, title: str = "", figsize: tuple[float, float] = (5, 4)):
  """Yields (pyplot, axes) of a new headless figure; saves it to ``path`` (PNG, 100 dpi,
  parent dirs created) with ``title`` on exit and always closes it. Shared by every
  evaluator's plot."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  # Headless: eval jobs run without a display; set before pyplot picks a backend.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=figsize)
  try:
    yield plt, ax
    if title:
      ax.set_title(title)
    parent = os.path.dirname(os.fspath(path))
    if parent:
      os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
  finally:
    plt.close(fig)


def plot_observed_curve(ns: list[int], curve: dict[str, dict[str, list[float]]],
                        path: str, title: str = "") -> None:
  """Recall vs number of observed clips/sentences (as HSE Fig. 4), one line per
  (direction, metric)."""
  with png_figure(path, title) as (_, ax):
    for direction, by_metric in curve.items():
      for name, values in by_metric.items():
        ax.plot(ns, values, marker="o", label=f"{direction} {name}")
    ax.set_xlabel("observed clips / sentences")
    ax.set_ylabel("Recall (%)")
    ax.set_xticks(ns)
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
