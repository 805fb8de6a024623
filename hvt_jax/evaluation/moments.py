"""Moment localization in a video corpus (HAMMER §3.5, FLAT): the two-stage evaluator.

Declared like every evaluator (``evaluators.py``)::

  config.evals.moments = dict(
      type="moments", split="val", pred="localize", prefix="", log_steps=0,
      top_k_videos=100,          # stage 1: videos kept per query, localized in stage 2
      moment_ranking="per_video",  # | "xml"
      moments_per_video=100,     # "xml": moments taken from each retrieved video
      svmr_moments=100,          # moments ranked in the ground-truth video (SVMR list)
      max_moment_seconds=0.0,    # > 0: drop longer predicted moments (counted)
      max_queries=0, max_videos=0, subsample_seed=0,   # 0 = all (CPU runs: a subsample)
      duration_buckets=4,        # int: equal-count buckets; or increasing edges in seconds
      query_block=0, cand_block=0, pair_block=0,   # per-device block sizes; 0: from memory
      submission=True)           # write the TVR standalone_eval submission file

Stage 1, video retrieval (VR): the split is streamed once through the family's ``video_view``
(``encode_candidate``: the video-only layers, once per video) and once through the
``query_view`` (``encode_query``: the text tower, once per query); every query is
ranked against every video with the model's pairwise ``score`` (Eq. 9) by the device-side
scorer (``evaluation.scorer.rank_corpus``: blocks of pairs sharded over the mesh, a running
top-K and the exact tie-averaged rank of the query's own video; all pairs never exist at
once). Stage 2, temporal localization (TL): ``localize`` on the aligned (query, retrieved
video) pairs and on (query, ground-truth video), in blocks of ``pair_block`` pairs per
device (0: the largest block that fits the device's free memory, as the compiled
``localize`` counts it, ``choose_pair_block``; stage 1's blocks likewise,
``scorer.choose_blocks``; both logged): argmax start/end under end > start (Eq. 5, the model's rule), ``(start s, end s,
score)`` best first.

Moment ranking over the corpus (``moment_ranking``):

* ``"per_video"`` (default, the paper's reading of Eq. 3): one moment per retrieved video,
  its best one, in the order of the videos' VR scores (the submission's score column is the
  VR logit).
* ``"xml"``: the ``moments_per_video`` best moments of each of the top-K videos ranked
  together by log p(v|h) + log p(t_s) + log p(t_e) (XML's p(v)·p_st·p_ed, Lei et al. 2020),
  p(v|h) a softmax over the top-K videos' VR logits. Our choice: a softmax over the top K
  rather than the corpus; the two differ by a per-query constant, so the ranking is the
  same. With ``moments_per_video`` >= 100 the first 100 moments are exactly those of all
  moments of the top-K videos (each video's share of the global top 100 is among its own
  top 100).

Metrics (flat names, ``<prefix>_`` prepended to each task when ``prefix`` is set):

* ``vr/R@{1,5,10,100}``, ``vr/MdR``, ``vr/MnR`` (Table 2): the rank of the query's video
  among all evaluated videos (1-based, ties at their average rank, ``retrieval``).
* ``tl/mIoU``, ``tl/R@1@IoU{0.3,0.5,0.7}`` (Table 3): the best moment in the ground-truth
  video (single-video TL).
* ``svmr/R@{1,5,10,100}@IoU{0.5,0.7}``: the ``svmr_moments`` best moments of the
  ground-truth video; ``vcmr/R@{1,5,10,100}@IoU{0.5,0.7}`` (Table 1): the corpus moment
  list, a moment in another video scoring IoU 0 — both exactly as TVR's ``standalone_eval``
  (``localization.corpus_moment_metrics``: IoU >= t, list order, first 100 count).
* ``by_duration/<lo>-<hi>s/{vr/MdR, vr/R@k, tl/mIoU, vcmr/..., num_queries}`` (Fig. 2–3):
  the same per bucket of the ground-truth video's duration. Every query is in exactly one
  bucket, so the buckets' ``num_queries`` add up to the split's: bucket ``[lo, hi)`` with
  the outer ones open-ended (the first also holds every shorter video, the last every
  longer one: ``bucket_of``), compared in the durations' own precision (float32 as
  evaluated: the edges are cast to it, so a 2.3 s video, 2.2999999523 in float32, is on an
  edge of 2.3, not below it). ``duration_buckets=n`` (default 4): edges at the quantiles of
  the evaluated queries' video durations, rounded to 0.1 s for readable names, so the
  buckets hold about equal numbers of queries (our choice: the paper does not give its
  bins); the outer names are then the shortest and the longest duration to 0.1 s (TVR val's
  ``90.4-184s`` holds its 184.02 s video). Edges given as a list name the buckets as given;
  durations outside them are counted in the outer buckets, with a warning.
* ``num_queries``, ``num_videos``, ``dropped_long_moments``.

A query-only split (TVR test_public: queries in the dataset metadata, the split's records
its video corpus, ``data_prep/tvr.py``) gets predictions and no metrics besides the counts.
Files: ``<prefix>_tvr_submission.json`` (``tvr_submission.json`` without a prefix) in
TVR's format (``localization.write_tvr_submission``: VCMR, SVMR, VR lists, video2idx from
the dataset's TVR video index when it has one, else the record index). TVR's script gives
the SVMR and VCMR metrics above from it (they are computed from the same lists). Its VR
recall reads the VR list, the ``top_k_videos`` best videos in stage-1 order, and equals
``vr/R@k`` only when ``top_k_videos`` >= 100 (fewer, e.g. runlocal's 4: the list ends there,
so TVR's R@k for k > 4 is its R@4, while ``vr/R@k`` uses the rank among all videos) and no
video's score ties the ground-truth video's across position k (``vr/R@k`` averages tied
ranks; the list orders tied videos lower candidate index first).

Subsample (``max_queries``/``max_videos``, for CPU runs of full-size splits): the queries
are drawn first (uniformly, seeded), then as many of their videos as ``max_videos`` allows
(queries whose video does not fit are dropped), then other videos as distractors; every
kept query keeps its ground-truth video. Deterministic given ``subsample_seed``.

Empty videos: a video with no feature row in any stream the view reads (visual modalities
and subtitle; the family's ``video_view`` sets ``empty_video``) would be encoded from padding
only (the resampled grid then holds one all-zero frame), scoring alike against every query
in VR and offering no real moment in TL. It is left out before anything else, as a
candidate of every query and with its own queries (``corpus.non_empty``: a warning names
it; ``num_empty_videos`` counts such videos; ``num_queries``/``num_videos`` count what is
evaluated). In a query-only split only the corpus side is filtered.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import tensorflow as tf
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hvt_jax import flops
from hvt_jax.evaluation import corpus, localization, scorer
from hvt_jax.input import pipeline

VR_KS = (1, 5, 10, 100)
RANKINGS = ("per_video", "xml")


# --------------------------------------------------------------------------------------
# The host side of a split: encodings and what the metrics need.


@dataclasses.dataclass
class CorpusData:
  """A split's encodings and labels on the host.

  Attributes:
    query_enc: pytree of [Q, ...] arrays (``encode_query``).
    video_enc: pytree of [N, ...] arrays (``encode_candidate``).
    query_ids: [Q] sentence ids (TVR desc_id).
    query_video: [Q] int64 position of the query's video in the video rows; -1 (query-only
      split) when unknown.
    segments: [Q, 2] float32 ground-truth (start, end) seconds.
    video_ids: [N] video ids.
    video_index: [N] int64 record index of each video in its split.
    durations: [N] float32 seconds.
  """
  query_enc: Any
  video_enc: Any
  query_ids: list[str]
  query_video: np.ndarray
  segments: np.ndarray
  video_ids: list[str]
  video_index: np.ndarray
  durations: np.ndarray

  @property
  def has_ground_truth(self) -> bool:
    return bool(self.query_video.size) and bool(np.all(self.query_video >= 0))

  def take(self, queries: np.ndarray, videos: np.ndarray) -> "CorpusData":
    """The rows ``queries`` and ``videos`` (sorted index arrays); query_video re-pointed."""
    new_pos = np.full(len(self.video_ids), -1, np.int64)
    new_pos[videos] = np.arange(videos.size)
    qv = self.query_video[queries]
    return CorpusData(
        query_enc=jax.tree.map(lambda x: x[queries], self.query_enc),
        video_enc=jax.tree.map(lambda x: x[videos], self.video_enc),
        query_ids=[self.query_ids[i] for i in queries],
        query_video=np.where(qv >= 0, new_pos[np.maximum(qv, 0)], -1),
        segments=self.segments[queries], video_ids=[self.video_ids[i] for i in videos],
        video_index=self.video_index[videos], durations=self.durations[videos])


def subsample(query_video: np.ndarray, num_videos: int, max_queries: int, max_videos: int,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic subsample that keeps each kept query's ground-truth video.

  Queries are drawn in a seeded random order; a query is kept while ``max_queries`` is not
  reached and its video is already kept or still fits in ``max_videos``; the remaining
  video slots go to other videos drawn at random (distractors). Queries with no video
  (-1: query-only split) are drawn without that constraint.

  Args:
    query_video: [Q] int position of each query's video, or -1.
    num_videos: N.
    max_queries: queries kept (0: all).
    max_videos: videos kept (0: all).
    seed: random seed.

  Returns:
    (kept query indices, kept video indices), both sorted int64 arrays.

  Raises:
    ValueError: negative limits.
  """
  if max_queries < 0 or max_videos < 0:
    raise ValueError(f"moments: max_queries={max_queries}, max_videos={max_videos}: "
                     "need >= 0 (0 = all)")
  query_video = np.asarray(query_video, np.int64)
  num_q = query_video.size
  max_q = max_queries or num_q
  max_v = max_videos or num_videos
  if max_q >= num_q and max_v >= num_videos:
    return np.arange(num_q), np.arange(num_videos)
  rng = np.random.default_rng([seed, 7])
  kept_q, kept_v = [], set()
  for q in rng.permutation(num_q):
    if len(kept_q) >= max_q:
      break
    v = int(query_video[q])
    if v >= 0 and v not in kept_v:
      if len(kept_v) >= max_v:
        continue
      kept_v.add(v)
    kept_q.append(int(q))
  rest = np.setdiff1d(np.arange(num_videos), np.fromiter(kept_v, np.int64, len(kept_v)))
  fill = rng.permutation(rest)[:max(0, max_v - len(kept_v))]
  videos = np.union1d(np.fromiter(kept_v, np.int64, len(kept_v)), fill).astype(np.int64)
  return np.sort(np.asarray(kept_q, np.int64)), videos


# --------------------------------------------------------------------------------------
# Stage 2: localize aligned (query, video) pairs.


@functools.cache
def localize_fn(localize: Callable[..., Any], top_k: int) -> Callable[..., jax.Array]:
  """The prediction function ``localize(params, query_enc, video_enc, top_k)`` for aligned
  pairs, jitted once per (model graph, top_k)."""
  return jax.jit(lambda params, query, video: localize(params, query, video, top_k))


def choose_pair_block(fn: Callable[..., jax.Array], params: Any, query_enc: Any,
                      video_enc: Any, num_pairs: int, *, mesh: Mesh,
                      memory_fraction: float = 0.8,
                      budget_bytes: int | None = None) -> tuple[int, int]:
  """Stage 2's pairs per device: the largest block whose compiled ``fn`` fits
  ``memory_fraction`` of the free memory (``scorer.free_bytes``; or ``budget_bytes``), at
  most ``num_pairs`` / devices (``scorer.largest_block``); logged.

  Returns:
    (pairs per device, estimated bytes per device).

  Raises:
    MemoryError: not even one pair fits.
    ValueError: the backend gives no memory analysis (set ``pair_block``).
  """
  source = "given"
  if budget_bytes is None:
    free, source = scorer.free_bytes(mesh)
    budget_bytes = int(memory_fraction * free)
  rows = NamedSharding(mesh, P(mesh.axis_names))

  @functools.cache
  def memory(block: int) -> int:
    spec = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        (block * mesh.size, *np.shape(x)[1:]), np.result_type(x), sharding=rows), tree)
    return scorer.program_bytes(fn.lower(params, spec(query_enc), spec(video_enc)).compile())

  block, est = scorer.largest_block(memory, max(1, -(-num_pairs // mesh.size)), budget_bytes)
  logging.info("moments: pair_block %d per device, estimated %.3f GiB of a %.3f GiB budget "
               "(%.0f%% of free memory, %s)", block, est / 2**30, budget_bytes / 2**30,
               100 * memory_fraction, source)
  return block, est


def localize_pairs(fn: Callable[..., jax.Array], params: Any, query_enc: Any,
                   video_enc: Any, query_rows: np.ndarray, video_rows: np.ndarray, *,
                   mesh: Mesh, block: int) -> np.ndarray:
  """``fn(params, query_enc[query_rows], video_enc[video_rows])`` in fixed-shape blocks.

  Pairs go through ``block`` per device at a time, sharded over every mesh axis (the last
  block padded with pair 0, whose output is dropped): one compiled shape, at most two
  blocks of gathered encodings in flight.

  Args:
    fn: jitted (params, query block, video block) -> [B, M, 3].
    params: model parameters, already placed (replicated) on ``mesh``.
    query_enc, video_enc: host pytrees with leading dims Q and N.
    query_rows, video_rows: [P] int indices of the aligned pairs.
    mesh: devices.
    block: pairs per device per call; 0: from memory (``choose_pair_block``).

  Returns:
    [P, M, 3] float32 (start s, end s, score), best first.
  """
  n = int(np.size(query_rows))
  if block <= 0:
    block = choose_pair_block(fn, params, query_enc, video_enc, n, mesh=mesh)[0]
  size = block * mesh.size
  rows = NamedSharding(mesh, P(mesh.axis_names))
  outs = []
  for i, start in enumerate(range(0, n, size)):
    idx = np.zeros((2, size), np.int64)
    stop = min(start + size, n)
    idx[0, :stop - start] = query_rows[start:stop]
    idx[1, :stop - start] = video_rows[start:stop]
    q = jax.tree.map(lambda x: x[idx[0]], query_enc)
    v = jax.tree.map(lambda x: x[idx[1]], video_enc)
    outs.append(fn(params, jax.device_put(q, rows), jax.device_put(v, rows)))
    if i >= 2:
      jax.block_until_ready(outs[i - 2])
  if not outs:
    return np.zeros((0, 0, 3), np.float32)
  return np.concatenate(jax.device_get(outs))[:n].astype(np.float32)


# --------------------------------------------------------------------------------------
# Moment lists and metrics (numpy).


def corpus_moments(top_videos: np.ndarray, top_scores: np.ndarray, moments: np.ndarray,
                   ranking: str = "per_video", max_pred: int = 100,
                   max_seconds: float = 0.0) -> tuple[list[np.ndarray], int]:
  """The ranked corpus moment list of each query (VCMR).

  Args:
    top_videos: [Q, K] int video positions from stage 1, best first.
    top_scores: [Q, K] float VR logits f(v, h) (Eq. 9) of those videos.
    moments: [Q, K, M, 3] float (start s, end s, log p(t_s) + log p(t_e)) per video, best
      first; non-finite scores are padding.
    ranking: "per_video" (each video's first moment that passes ``max_seconds``, in video
      order, scored by the VR logit) or "xml" (every moment, scored log_softmax_K(f)[v] +
      its TL score, sorted descending; ties keep video order, then moment order).
    max_pred: moments kept per query (TVR counts 100).
    max_seconds: > 0: moments longer than this are dropped (counted).

  Returns:
    ([Q] arrays [P, 4] float64 of (video position, start, end, score), best first;
     number of moments dropped for their length).

  Raises:
    ValueError: unknown ranking or inconsistent shapes.
  """
  if ranking not in RANKINGS:
    raise ValueError(f"moments: moment_ranking={ranking!r}; valid: {RANKINGS}")
  top_videos, top_scores = np.asarray(top_videos), np.asarray(top_scores, np.float64)
  moments = np.asarray(moments, np.float64)
  if moments.ndim != 4 or moments.shape[:2] != top_videos.shape or moments.shape[3] != 3:
    raise ValueError(f"moments: moments {moments.shape} must be [Q, K, M, 3] with [Q, K] = "
                     f"{top_videos.shape}")
  ok = np.isfinite(moments[..., 2])
  long = np.zeros_like(ok)
  if max_seconds > 0:
    long = ok & (moments[..., 1] - moments[..., 0] > max_seconds)
  ok &= ~long
  out = []
  if ranking == "per_video":
    first = np.argmax(ok, axis=2)                      # [Q, K] first usable moment
    has = np.take_along_axis(ok, first[..., None], 2)[..., 0]
    best = np.take_along_axis(moments, first[..., None, None], 2)[:, :, 0]   # [Q, K, 3]
    for q in range(top_videos.shape[0]):
      keep = has[q] & (top_videos[q] >= 0)
      rows = np.stack([top_videos[q][keep], best[q, keep, 0], best[q, keep, 1],
                       top_scores[q][keep]], axis=1)
      out.append(rows[:max_pred])
    # A video's later moments are never used: only moments dropped in a video that had to
    # fall back past them count.
    dropped = int(np.sum(long & (np.arange(moments.shape[2]) < first[..., None])))
    return out, dropped
  valid_video = top_videos >= 0
  logits = np.where(valid_video, top_scores, -np.inf)
  log_pv = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)   # [Q, K]
  total = log_pv[..., None] + moments[..., 2]                            # [Q, K, M]
  for q in range(top_videos.shape[0]):
    use = ok[q] & valid_video[q][:, None]
    k_idx, m_idx = np.nonzero(use)                     # video order, then moment order
    score = total[q, k_idx, m_idx]
    order = np.argsort(-score, kind="stable")[:max_pred]
    k_idx, m_idx = k_idx[order], m_idx[order]
    out.append(np.stack([top_videos[q, k_idx], moments[q, k_idx, m_idx, 0],
                         moments[q, k_idx, m_idx, 1], score[order]], axis=1))
  return out, int(long.sum())


def duration_edges(durations: np.ndarray, buckets: int | Sequence[float]) -> np.ndarray:
  """[B + 1] float64 bucket edges in seconds (B >= 1 buckets): ``buckets`` edges as given
  (increasing), or up to ``n`` buckets at the quantiles of ``durations`` (the queries' video
  durations, seconds) rounded to 0.1 s (equal ones merged; one bucket when all are equal).
  The outer edges only name the outer buckets, which ``bucket_of`` leaves open-ended."""
  if isinstance(buckets, (int, np.integer)):
    if buckets < 1:
      raise ValueError(f"moments: duration_buckets={buckets}; need >= 1 or a list of edges")
    edges = np.quantile(np.asarray(durations, np.float64), np.linspace(0, 1, buckets + 1))
    edges = np.unique(np.round(edges, 1))
    return edges if edges.size >= 2 else np.repeat(edges, 2)
  edges = np.asarray(buckets, np.float64)
  if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
    raise ValueError(f"moments: duration_buckets={buckets!r}: need >= 2 increasing edges "
                     "(seconds) or a number of buckets")
  return edges


def bucket_of(durations: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """[n] int bucket index in [0, B) of each of n durations, for B + 1 ``edges``: every
  duration is in exactly one bucket. Bucket b is [edges[b], edges[b+1]), except that the
  first one has no lower bound and the last one no upper bound. The inner edges are cast to
  the durations' float dtype (float32 durations are compared with float32 edges)."""
  d = np.asarray(durations)
  if not np.issubdtype(d.dtype, np.floating):
    d = d.astype(np.float64)
  inner = np.asarray(edges, np.float64)[1:-1].astype(d.dtype)
  return np.searchsorted(inner, d, side="right")


def _bucket_name(lo: float, hi: float) -> str:
  return f"{lo:g}-{hi:g}s" if np.isfinite(hi) else f"{lo:g}s+"


def vr_metrics(ranks: np.ndarray) -> dict[str, float]:
  """VR recall at 1/5/10/100 (percent), median and mean rank of 1-based ranks (Table 2)."""
  r = np.asarray(ranks, np.float64)
  out = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in VR_KS}
  out["MdR"] = float(np.median(r))
  out["MnR"] = float(np.mean(r))
  return out


def moment_metrics(data: CorpusData, ranks: np.ndarray, vcmr: list[np.ndarray],
                   svmr: list[np.ndarray], buckets: int | Sequence[float] = 4
                   ) -> dict[str, float]:
  """Every metric of the module docstring from stage 1 ranks and the moment lists.

  Args:
    data: the evaluated split (with ground truth).
    ranks: [Q] 1-based VR rank of each query's video.
    vcmr: [Q] corpus moment lists ([P, 4] (video position, start, end, score), best first).
    svmr: [Q] moment lists in the query's ground-truth video, best first (the first row is
      the single-video TL prediction).
    buckets: ``duration_edges``'s argument.

  Returns:
    Flat {name: float}: ``vr/...``, ``tl/...``, ``svmr/...``, ``vcmr/...``,
    ``by_duration/<bucket>/...``.
  """
  num_q = len(data.query_ids)
  codes = {vid: i for i, vid in enumerate(data.video_ids)}
  gt = [{"desc_id": i, "vid_name": data.video_ids[v], "ts": seg.tolist()}
        for i, (v, seg) in enumerate(zip(data.query_video, data.segments))]
  as_entries = lambda lists: [{"desc_id": i, "predictions": rows.tolist()}
                              for i, rows in enumerate(lists)]
  vcmr_e, svmr_e = as_entries(vcmr), as_entries(svmr)
  tl_pred = np.asarray([rows[0, 1:3] if len(rows) else (0.0, 0.0) for rows in svmr],
                       np.float64)
  if any(len(rows) == 0 for rows in svmr):
    logging.warning("moments: %d queries have no moment in their video (TL IoU 0)",
                    sum(len(rows) == 0 for rows in svmr))

  def metrics_of(sel: np.ndarray) -> dict[str, float]:
    out = {f"vr/{k}": v for k, v in vr_metrics(ranks[sel]).items()}
    out.update({f"tl/{k}": v for k, v in localization.localization_metrics(
        tl_pred[sel], data.segments[sel]).items()})
    moment = localization.corpus_moment_metrics(
        [vcmr_e[i] for i in sel], [gt[i] for i in sel], video2idx=codes,
        svmr_predictions=[svmr_e[i] for i in sel])
    out.update({k: v for k, v in moment.items() if not k.startswith("vr/")})
    return out

  metrics = metrics_of(np.arange(num_q))
  video_dur = data.durations[data.query_video]
  edges = duration_edges(video_dur, buckets)
  which = bucket_of(video_dur, edges)
  lo, hi = edges[[0, -1]].astype(video_dur.dtype)     # float32 durations: float32 edges
  outside = (video_dur < lo) | (video_dur > hi)
  if not isinstance(buckets, (int, np.integer)) and outside.any():
    logging.warning("moments: %d queries have a video outside duration_buckets [%g, %g] s; "
                    "counted in the outer buckets", outside.sum(), edges[0], edges[-1])
  for b in range(len(edges) - 1):
    sel = np.flatnonzero(which == b)
    name = f"by_duration/{_bucket_name(edges[b], edges[b + 1])}"
    metrics[f"{name}/num_queries"] = float(sel.size)
    if sel.size:
      metrics.update({f"{name}/{k}": v for k, v in metrics_of(sel).items()
                      if k.startswith(("vr/", "tl/mIoU", "vcmr/"))})
  return metrics


def predict(data: CorpusData, preds: Any, params: Any, mesh: Mesh, *,
            top_k_videos: int = 100, moment_ranking: str = "per_video",
            moments_per_video: int = 100, svmr_moments: int = 100,
            max_moment_seconds: float = 0.0,
            blocks: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
  """Stage 1 ranking and stage 2 localization of ``data`` with the model's prediction
  functions.

  Args:
    data: the split's encodings (``CorpusData``).
    preds: the prediction functions ``score`` and ``localize`` by name
      (``hvt_jax.models.base.PredictFns``).
    params: the parameters, on the host or replicated.
    mesh: devices (``corpus.ranking_mesh``).
    top_k_videos, moment_ranking, moments_per_video, svmr_moments, max_moment_seconds:
      the evaluator options (module docstring).
    blocks: (query_block, cand_block) of the scorer and pair_block of stage 2, per device;
      0: from memory (``scorer.choose_blocks``, ``choose_pair_block``).

  Returns:
    {"ranks": [Q] 1-based VR ranks (with ground truth), "top_videos"/"top_scores": [Q, K]
     stage 1's videos and VR logits, "best": [Q, K, 2] each retrieved video's best moment
     (s), "vcmr": [Q] corpus moment lists ([P, 4] (video position, start, end, score)),
     "svmr": [Q] moment lists in the ground-truth video (with ground truth), "dropped":
     moments dropped for their length}.
  """
  query_block, cand_block, pair_block = blocks
  num_q, num_v = len(data.query_ids), len(data.video_ids)
  k = min(top_k_videos, num_v)
  targets = data.query_video if data.has_ground_truth else np.zeros(num_q, np.int64)
  with jax.set_mesh(mesh):
    ranked = scorer.rank_corpus(data.query_enc, data.video_enc, targets,
                                corpus.score_fn(preds["score"], False), mesh=mesh, params=params,
                                top_k=k, query_block=query_block,
                                cand_block=min(cand_block, num_v))
    placed = jax.device_put(params, NamedSharding(mesh, P()))
    # The corpus list needs 1 moment per video ("per_video"; more to fall back past
    # over-long ones) or moments_per_video ("xml"); the SVMR list svmr_moments. Two
    # compiled shapes: at scale a top-100 per pair costs ~1.5x a top-1
    # (benchmarks/bench_hammer_corpus.py).
    per_video = (moments_per_video if moment_ranking == "xml" or max_moment_seconds > 0
                 else 1)
    fn = localize_fn(preds["localize"], per_video)
    vcmr, best, dropped = [], [], 0
    block = pair_block   # 0: one choice for every chunk (one compiled shape)
    if block <= 0:
      block = choose_pair_block(fn, placed, data.query_enc, data.video_enc, num_q * k,
                                mesh=mesh)[0]
    chunk = max(1, (block * mesh.size * 16) // k)   # queries per stage-2 chunk
    for start in range(0, num_q, chunk):
      rows = np.arange(start, min(start + chunk, num_q))
      vids = ranked.top_indices[rows]
      moments = localize_pairs(fn, placed, data.query_enc, data.video_enc,
                               np.repeat(rows, k), vids.reshape(-1), mesh=mesh,
                               block=block).reshape(rows.size, k, -1, 3)
      lists, d = corpus_moments(vids, ranked.top_scores[rows], moments, moment_ranking,
                                max_seconds=max_moment_seconds)
      vcmr.extend(lists)
      best.append(moments[:, :, 0, :2])
      dropped += d
    out = {"top_videos": ranked.top_indices, "top_scores": ranked.top_scores,
           "best": np.concatenate(best), "vcmr": vcmr, "dropped": dropped}
    if data.has_ground_truth:
      out["ranks"] = ranked.ranks
      moments = localize_pairs(localize_fn(preds["localize"], svmr_moments), placed, data.query_enc,
                               data.video_enc, np.arange(num_q), data.query_video, mesh=mesh,
                               block=pair_block)
      ok = np.isfinite(moments[..., 2])
      if max_moment_seconds > 0:
        ok &= moments[..., 1] - moments[..., 0] <= max_moment_seconds
      out["svmr"] = [np.concatenate([np.full((int(m.sum()), 1), v), rows[m]], axis=1)
                     .astype(np.float64)
                     for v, rows, m in zip(data.query_video, moments, ok)]
  return out


def _desc_id(sentence_id: str) -> int | str:
  """TVR's integer desc_id where the id is one, else the string."""
  return int(sentence_id) if sentence_id.isdigit() else sentence_id


# --------------------------------------------------------------------------------------
# The evaluator.


@functools.cache
def _encode_fn(encode: Callable[..., Any], side: str):
  """Jitted encode_query (with the ground-truth segment) or encode_candidate (with the
  duration)."""
  key = "segment" if side == "query" else "duration"
  return jax.jit(lambda params, batch: (encode(params, batch), batch[key]))


class MomentEvaluator:
  """Two-stage moment localization over a split (module docstring: options, metrics)."""

  def __init__(self, ctx: corpus.EvalContext, split: str, *, pred: str = "localize",
               prefix: str = "", video_view: str = "video", query_view: str = "query",
               log_steps: int = 0, top_k_videos: int = 100,
               moment_ranking: str = "per_video", moments_per_video: int = 100,
               svmr_moments: int = 100, max_moment_seconds: float = 0.0,
               max_queries: int = 0, max_videos: int = 0, subsample_seed: int = 0,
               duration_buckets: int | Sequence[float] = 4, query_block: int = 0,
               cand_block: int = 0, pair_block: int = 0, submission: bool = True):
    if moment_ranking not in RANKINGS:
      raise ValueError(f"moments evaluator: moment_ranking={moment_ranking!r}; valid: "
                       f"{RANKINGS}")
    # models.base.Ranker and Localizer; ``pred`` names the localizer (default ``localize``).
    self.preds = {f: ctx.pred(f, "moments") for f in ("encode_query", "encode_candidate",
                                                      "score")}
    self.preds["localize"] = ctx.pred(pred, "moments")
    self.video_view = ctx.get_view(video_view, "moments")
    self.query_view = ctx.get_view(query_view, "moments")
    if (min(top_k_videos, moments_per_video, svmr_moments) < 1
        or min(query_block, cand_block, pair_block) < 0):
      raise ValueError("moments evaluator: top_k_videos, moments_per_video and svmr_moments "
                       "must be >= 1, the block sizes >= 0 (0: from memory)")
    if not isinstance(duration_buckets, (int, np.integer)):
      duration_edges(np.zeros(1), tuple(duration_buckets))   # validates the edges
    self.ctx, self.split, self.prefix, self.log_steps = ctx, split, prefix, log_steps
    self.top_k_videos, self.ranking = int(top_k_videos), moment_ranking
    self.moments_per_video, self.svmr_moments = int(moments_per_video), int(svmr_moments)
    self.max_moment_seconds = float(max_moment_seconds)
    self.max_queries, self.max_videos = int(max_queries), int(max_videos)
    self.subsample_seed = int(subsample_seed)
    self.duration_buckets = (int(duration_buckets)
                             if isinstance(duration_buckets, (int, np.integer))
                             else tuple(float(e) for e in duration_buckets))
    self.blocks = (int(query_block), int(cand_block), int(pair_block))
    self.submission = submission
    # Stage 1 and 2's FLOPs (XLA's count of one block, scaled) and time, per run
    # (``evaluators.run_all`` logs them as <split>/perf/ranking_*).
    self.perf = flops.Tally.on(corpus.ranking_mesh(ctx.mesh),
                                ctx.config.model.get("dtype", "float32"))

  # -- streaming ---------------------------------------------------------------------

  def _query_only(self) -> dict[str, Any] | None:
    extra = self.ctx.meta.get("extra", {})
    return extra.get("queries", {}).get(self.split)

  def videos(self, params: Any) -> tuple[Any, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """The split's ``video_view`` stream on the host: (video encodings [N, ...], [N] float32
    durations in seconds, video ids, [N] int64 record indices, [N] bool ``empty_video``
    flags). What ``load`` and free-text queries (``evaluation.query``) rank against."""
    venc, dur, vids, vindex, empty = [], [], [], [], []
    encode = _encode_fn(self.preds["encode_candidate"], "video")
    for (enc, d), rows in corpus.stream(self.ctx, self.split, encode, params,
                                        view=self.video_view,
                                        strings=("video_id",), empty=True):
      venc.append(enc)
      dur.append(d)
      vids.extend(rows["video_id"])
      vindex.append(rows["video_index"])
      empty.append(rows[corpus.EMPTY])
    return (jax.tree.map(lambda *xs: np.concatenate(xs), *venc),
            np.concatenate(dur).astype(np.float32), vids,
            np.concatenate(vindex).astype(np.int64), np.concatenate(empty))

  def load(self, params: Any) -> tuple[CorpusData, np.ndarray]:
    """Streams the split through both views; returns its encodings and labels, and the
    videos' [N] bool ``empty_video`` flags (module docstring)."""
    concat = lambda parts: jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    venc, dur, vids, vindex, empty = self.videos(params)
    query_only = self._query_only()
    if query_only is not None:
      qenc, segs, qids = self._stream_query_only(params, query_only)
      qvideo = np.full(len(qids), -1, np.int64)
    else:
      qenc, segs, qids, qindex = [], [], [], []
      for (enc, seg), rows in corpus.stream(
          self.ctx, self.split, _encode_fn(self.preds["encode_query"], "query"), params,
          view=self.query_view, strings=("sentence_id",)):
        qenc.append(enc)
        segs.append(seg)
        qids.extend(rows["sentence_id"])
        qindex.append(rows["video_index"])
      qenc, segs = concat(qenc), np.concatenate(segs)
      qids = self._desc_ids(qids)
      position = np.full(int(vindex.max()) + 1, -1, np.int64)
      position[vindex] = np.arange(vindex.size)
      qvideo = position[np.concatenate(qindex)]
    data = CorpusData(query_enc=qenc, video_enc=venc, query_ids=list(qids),
                      query_video=qvideo, segments=np.asarray(segs, np.float32),
                      video_ids=list(vids), video_index=vindex, durations=dur)
    return data, empty

  def _desc_ids(self, sentence_ids: list[str]) -> list[str]:
    """The view's "<video_id>#<i>" ids as the dataset's own sentence ids where it stores
    them (TVR's desc_id: metadata ``extra.desc_ids[split][video_id][i]``)."""
    table = self.ctx.meta.get("extra", {}).get("desc_ids", {}).get(self.split)
    if not table:
      return sentence_ids
    out = []
    for sid in sentence_ids:
      video, _, i = sid.rpartition("#")
      out.append(str(table[video][int(i)]))
    return out

  def _stream_query_only(self, params: Any, queries: dict[str, Any]):
    """Encodes a query-only split's queries (metadata, ``data_prep/tvr.py``) with the
    ``query_view`` applied to one record holding them all (no video: segments
    [-1, -1]). Every process encodes all of them (they are in every process's metadata),
    as every process ranks the gathered encodings."""
    tokens = [list(map(int, t)) for t in queries["tokens"]]
    ids = [str(d) for d in queries["desc_ids"]]
    if not tokens:
      raise ValueError(f"moments evaluator: query-only split {self.split!r} has no queries")
    view = self.query_view
    cfg = pipeline.view_config(self.ctx.config, self.ctx.meta)
    record = {"video_id": tf.constant(""), "duration": tf.constant(0.0),
              "tokens": tf.ragged.constant(tokens, dtype=tf.int64),
              "segments": -tf.ones([len(tokens), 2], tf.float32),
              "sentences": tf.constant(list(queries["sentences"]))}
    examples = view.fn(record, cfg, tf.constant(0, tf.int64))
    keep = [k for k in examples if k not in view.host_only]
    batch = pipeline.local_batch_size(self.ctx.config.eval_batch_size)
    ds = tf.data.Dataset.from_tensor_slices({k: examples[k] for k in keep})
    n = len(tokens)
    pad = (-n) % batch
    ds = ds.concatenate(ds.take(1).repeat(pad)).batch(batch)
    fn = _encode_fn(self.preds["encode_query"], "query")
    out = []
    for b in ds.as_numpy_iterator():
      out.append(jax.device_get(fn(params, b)))
    enc, segs = jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *out)
    return enc, segs, ids

  # -- running -------------------------------------------------------------------------

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Returns (metrics, what ``write`` needs)."""
    params = corpus.host_params(state)
    data, empty = self.load(params)
    keep = corpus.non_empty(empty, data.video_ids, f"moments {self.split} (no feature row)")
    if keep.size < empty.size:   # their queries go too; a query-only split keeps its own
      data = data.take(np.flatnonzero(~np.isin(data.query_video, np.flatnonzero(empty))),
                       keep)
    full_q, full_v = len(data.query_ids), len(data.video_ids)
    q_keep, v_keep = subsample(data.query_video, full_v, self.max_queries, self.max_videos,
                               self.subsample_seed)
    if q_keep.size < full_q or v_keep.size < full_v:
      data = data.take(q_keep, v_keep)
      logging.info("moments %s: subsample of %d/%d queries and %d/%d videos", self.split,
                   q_keep.size, full_q, v_keep.size, full_v)
    if not data.query_ids:
      raise ValueError(f"moments evaluator: no query of split {self.split!r} left "
                       f"(max_queries={self.max_queries}, max_videos={self.max_videos})")
    start = time.perf_counter()
    pred = predict(data, self.preds, params, corpus.ranking_mesh(self.ctx.mesh),
                   top_k_videos=self.top_k_videos, moment_ranking=self.ranking,
                   moments_per_video=self.moments_per_video, svmr_moments=self.svmr_moments,
                   max_moment_seconds=self.max_moment_seconds, blocks=self.blocks)
    self.perf.add(self._flops(data, params), time.perf_counter() - start)
    metrics: dict[str, float] = {}
    if data.has_ground_truth:
      metrics = moment_metrics(data, pred["ranks"], pred["vcmr"], pred["svmr"],
                               self.duration_buckets)
    metrics.update(num_queries=float(len(data.query_ids)),
                   num_videos=float(len(data.video_ids)),
                   num_empty_videos=float(empty.sum()),
                   dropped_long_moments=float(pred["dropped"]))
    if self.prefix:
      metrics = {f"{self.prefix}_{k}": v for k, v in metrics.items()}
    return metrics, {"data": data, "pred": pred}

  def _flops(self, data: CorpusData, params: Any) -> float:
    """XLA's FLOPs of ``predict``: every (query, video) pair's score, and the localizer on
    each query's top_k_videos (+ its ground-truth video for SVMR); one block each, scaled."""
    num_q, num_v = len(data.query_ids), len(data.video_ids)
    score = corpus.score_fn(self.preds["score"], False)
    loc = localize_fn(self.preds["localize"], 1)
    stage2 = num_q * (min(self.top_k_videos, num_v) + int(data.has_ground_truth))
    q, v = data.query_enc, data.video_enc
    return (num_q * num_v * flops.pair_flops(score, q, v, params, grid=True)
            + stage2 * flops.pair_flops(lambda a, b, p: loc(p, a, b), q, v, params,
                                        grid=False))

  def video2idx(self, data: CorpusData) -> dict[str, int]:
    """TVR's video indices when the dataset has them for every evaluated video, else each
    video's record index in the split."""
    index = self.ctx.meta.get("extra", {}).get("video_index", {}).get(self.split) or {}
    if all(v in index for v in data.video_ids):
      return {v: int(index[v]) for v in data.video_ids}
    return {v: int(i) for v, i in zip(data.video_ids, data.video_index)}

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    """The TVR submission file (VCMR, SVMR when there is ground truth, VR)."""
    del step
    if not self.submission:
      return
    data, pred = results["data"], results["pred"]
    names = np.asarray(data.video_ids, dtype=object)

    def entries(lists):
      return [{"desc_id": _desc_id(qid),
               "predictions": [[names[int(r[0])], r[1], r[2], r[3]] for r in rows.tolist()]}
              for qid, rows in zip(data.query_ids, lists)]

    # VR list: the top-K videos in stage 1 order, each with its best moment.
    vr = [np.concatenate([v[:, None], b, s[:, None]], axis=1)
          for v, b, s in zip(pred["top_videos"], pred["best"], pred["top_scores"])]
    name = f"{self.prefix}_tvr_submission.json" if self.prefix else "tvr_submission.json"
    localization.write_tvr_submission(
        os.path.join(out_dir, name), self.video2idx(data), entries(pred["vcmr"]),
        svmr=entries(pred["svmr"]) if "svmr" in pred else None, vr=entries(vr))


EVALUATORS = {"moments": MomentEvaluator}
