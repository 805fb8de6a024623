"""Temporal localization metrics in plain numpy, following TVR's ``standalone_eval``.

Three levels (the README's "Metrics" contract):

* ``temporal_iou``: pairwise IoU of [start, end] windows.
* ``localization_metrics``: temporal localization (TL) of one moment per query in a known
  video: mean IoU and R@1 at IoU 0.3/0.5/0.7, all in percent (HAMMER, Table 3).
* ``corpus_moment_metrics``: moment retrieval over a video corpus as TVR evaluates it
  (Lei et al., 2020, ``standalone_eval/eval.py``):

  - VCMR (video corpus moment retrieval), ``vcmr/R@{k}@IoU{t}``: percent of queries whose
    top-k predicted (video, start, end) triplets contain one in the ground-truth video with
    IoU >= t.
  - SVMR (single video moment retrieval), ``svmr/R@{k}@IoU{t}``: the same, counting only
    the predictions that lie in the ground-truth video.
  - VR (video retrieval), ``vr/R@{k}``: percent of queries whose ground-truth video is
    among the first k distinct videos of the predictions.

TVR conventions kept here: IoU is ``max(0, min(ends) - max(starts)) / (max(ends) -
min(starts))`` (their formula divides by the hull of the two windows, which equals the union
whenever the windows overlap and gives 0 otherwise, so it is the true IoU of valid windows),
computed in float32 for the corpus metrics exactly as TVR does, and compared with ``>=``;
only the first ``max_pred_per_query`` (100) predictions of a query count; prediction and
ground-truth query ids must match one to one; a ground truth with 4 or more windows
(DiDeMo) counts a prediction as correct only if it reaches the threshold with at least 2 of
them. Differences, stated so numbers can be compared: predictions are sorted by their score
(descending, stable) before truncation, where TVR assumes the file is already sorted; a
query with no predictions counts as a miss (TVR would crash on it); a ground truth with 2
or 3 windows (undefined in TVR) counts a prediction correct if it matches any one of them;
percentages are not rounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import logging
import os
from typing import Any

import numpy as np

_TL_THRESHOLDS = (0.3, 0.5, 0.7)
_CORPUS_THRESHOLDS = (0.5, 0.7)
_CORPUS_KS = (1, 5, 10, 100)
# TVR's rule for DiDeMo-style ground truth with >= 4 annotated windows per query: a
# prediction must reach the IoU threshold with at least 2 of them.
_MULTI_GT_MIN_WINDOWS = 4
_MULTI_GT_MIN_OVERLAPS = 2


def _as_windows(x, name: str, dtype) -> np.ndarray:
  arr = np.asarray(x, dtype=dtype)
  if arr.ndim not in (1, 2) or arr.shape[-1] != 2:
    raise ValueError(f"localization: {name} must be [2] or [N, 2] windows, got {arr.shape}")
  n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
  if n_bad:
    raise ValueError(f"localization: {name} has {n_bad} non-finite values (NaN or inf)")
  return arr


def temporal_iou(pred: np.ndarray, gt: np.ndarray, dtype=np.float64) -> np.ndarray:
  """Pairwise temporal IoU of [start, end] windows.

  A window with start > end is empty: it intersects nothing, so its IoU is 0; two windows
  with an empty union (e.g. both zero-length at the same point) also have IoU 0.

  Args:
    pred: [N, 2] or [2] windows (start, end), finite.
    gt: [M, 2] or [2] windows (start, end), finite.
    dtype: float dtype of the arithmetic; the corpus metrics use float32 to reproduce TVR.

  Returns:
    IoU in [0, 1] of shape [N, M]; a [2] input drops its axis, so ([N, 2], [2]) gives [N],
    ([2], [M, 2]) gives [M] and ([2], [2]) a 0-d array.
  """
  p = _as_windows(pred, "pred", dtype)
  g = _as_windows(gt, "gt", dtype)
  p2, g2 = p.reshape(-1, 2), g.reshape(-1, 2)
  ps, pe = p2[:, 0:1], p2[:, 1:2]
  gs, ge = g2[None, :, 0], g2[None, :, 1]
  inter = np.maximum(0, np.minimum(pe, ge) - np.maximum(ps, gs))
  # TVR's denominator: the hull of both windows. Where they overlap it equals the union;
  # where they don't the intersection is 0, so the quotient is the true IoU either way.
  hull = np.maximum(pe, ge) - np.minimum(ps, gs)
  iou = np.divide(inter, hull, out=np.zeros_like(inter), where=inter > 0)
  if p.ndim == 1:
    iou = iou[0]
  if g.ndim == 1:
    iou = iou[..., 0]
  return iou


def _iou_name(threshold: float) -> str:
  return f"IoU{threshold:g}"


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
  out = tuple(float(t) for t in thresholds)
  if not out or any(not 0 < t <= 1 for t in out):
    # A threshold of 0 would count every prediction in a wrong video as correct in TVR's
    # formula (0 >= 0), so it is refused rather than silently meaningless.
    raise ValueError(f"localization: IoU thresholds must be in (0, 1], got {thresholds}")
  return out


def localization_metrics(pred: np.ndarray, gt: np.ndarray,
                         iou_thresholds: Sequence[float] = _TL_THRESHOLDS) -> dict[str, float]:
  """Temporal localization of one predicted window per query (HAMMER's TL metrics).

  Args:
    pred: [N, 2] predicted (start, end) per query.
    gt: [N, 2] ground-truth (start, end) per query, aligned with ``pred``.
    iou_thresholds: thresholds t for ``R@1@IoU{t}``.

  Returns:
    {"mIoU": mean IoU in percent, "R@1@IoU0.3": percent of queries with IoU >= 0.3, ...}.
  """
  p = _as_windows(pred, "pred", np.float64)
  g = _as_windows(gt, "gt", np.float64)
  if p.ndim != 2 or p.shape != g.shape or p.shape[0] == 0:
    raise ValueError(
        f"localization: pred and gt must both be [N, 2] with N > 0, got {p.shape} and "
        f"{g.shape}")
  thresholds = _check_thresholds(iou_thresholds)
  # Row-wise IoU: temporal_iou on one pair at a time would build an [N, N] matrix.
  inter = np.maximum(0, np.minimum(p[:, 1], g[:, 1]) - np.maximum(p[:, 0], g[:, 0]))
  hull = np.maximum(p[:, 1], g[:, 1]) - np.minimum(p[:, 0], g[:, 0])
  iou = np.divide(inter, hull, out=np.zeros_like(inter), where=inter > 0)
  metrics = {"mIoU": float(100.0 * iou.mean())}
  for t in thresholds:
    metrics[f"R@1@{_iou_name(t)}"] = float(100.0 * np.mean(iou >= t))
  return metrics


class _VideoCodes:
  """Maps video references (names, or indices of ``video2idx``) to integer codes.

  With ``video2idx`` the code is the video's index, and a prediction may name its video by
  either the name or the index (as TVR's submission does). Without it, names are interned
  and predictions must use names.
  """

  def __init__(self, video2idx: Mapping[str, int] | None):
    self.video2idx = None
    self._names: dict[str, int] = {}
    if video2idx is not None:
      self.video2idx = {str(k): int(v) for k, v in video2idx.items()}
      values = np.fromiter(self.video2idx.values(), dtype=np.int64, count=len(self.video2idx))
      if np.unique(values).size != values.size:
        raise ValueError("localization: video2idx maps two videos to the same index")
      self._valid_idx = np.sort(values)

  def of_name(self, name: str, where: str) -> int:
    if self.video2idx is not None:
      if name not in self.video2idx:
        raise ValueError(f"localization: {where}: video {name!r} is not in video2idx")
      return self.video2idx[name]
    return self._names.setdefault(name, len(self._names))

  def of_indices(self, idx: np.ndarray, where: str) -> np.ndarray:
    if self.video2idx is None:
      raise ValueError(
          f"localization: {where}: predictions name videos by index; pass video2idx")
    known = np.isin(idx, self._valid_idx)
    if not np.all(known):
      raise ValueError(
          f"localization: {where}: video index {int(idx[~known][0])} is not in video2idx")
    return idx.astype(np.int64)


def _parse_rows(rows: Sequence[Sequence[Any]], where: str, codes: _VideoCodes,
                dtype=np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Parses one query's [[video, start, end, (score), ...], ...], sorted by score if given.

  Args:
    rows: the query's prediction rows; columns after the fourth are ignored (as in TVR).
    where: names the query in error messages.
    codes: video reference resolver.
    dtype: dtype of the returned windows; float32 by default, as TVR's evaluation casts its
      prediction matrix to float32.

  Returns:
    (video codes [P] int64, windows [P, 2] ``dtype``, scores [P] float64 or None when the
    rows have no score column), best score first.
  """
  if len(rows) == 0:
    return np.empty(0, np.int64), np.empty((0, 2), dtype), None
  # Names go through the object path even if they look numeric ("12" must not become
  # video index 12, which a float conversion of the whole matrix would do).
  numeric = not any(isinstance(r[0], str) for r in rows)
  arr = None
  if numeric:
    try:
      arr = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError):
      numeric = False
  if arr is None:
    arr = np.asarray(rows, dtype=object)
  if arr.ndim != 2 or arr.shape[1] < 3:
    raise ValueError(
        f"localization: {where}: each prediction must be [video, start, end, score] with "
        f"the same length for all rows")
  if numeric:
    vid_col = arr[:, 0]
    if np.any(vid_col != np.round(vid_col)):
      raise ValueError(f"localization: {where}: video indices must be integers")
    videos = codes.of_indices(vid_col.astype(np.int64), where)
  else:
    videos = np.empty(arr.shape[0], np.int64)
    for i, ref in enumerate(arr[:, 0]):
      if isinstance(ref, str):
        videos[i] = codes.of_name(ref, where)
      elif isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        videos[i] = codes.of_indices(np.asarray([ref]), where)[0]
      else:
        raise ValueError(
            f"localization: {where}: video reference {ref!r} is not a name or an index")
  try:
    values = arr[:, 1:4].astype(np.float64)
  except (ValueError, TypeError) as e:
    raise ValueError(f"localization: {where}: start/end/score must be numbers") from e
  n_bad = values.size - int(np.count_nonzero(np.isfinite(values)))
  if n_bad:
    raise ValueError(f"localization: {where}: {n_bad} non-finite start/end/score values")
  scores = None
  if values.shape[1] == 3:
    order = np.argsort(-values[:, 2], kind="stable")
    videos, values = videos[order], values[order]
    scores = values[:, 2]
  return videos, values[:, :2].astype(dtype), scores


def _index_predictions(predictions: Sequence[Mapping[str, Any]], name: str,
                       gt_ids: set, codes: _VideoCodes) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
  """desc_id -> (video codes, windows) of one task's predictions, checked against the GT."""
  out = {}
  for i, item in enumerate(predictions):
    if "desc_id" not in item or "predictions" not in item:
      raise ValueError(f"localization: {name}[{i}] lacks 'desc_id' or 'predictions'")
    desc_id = item["desc_id"]
    if desc_id in out:
      raise ValueError(f"localization: {name} has desc_id {desc_id!r} twice")
    videos, windows, _ = _parse_rows(item["predictions"], f"{name} desc_id {desc_id!r}", codes)
    out[desc_id] = (videos, windows)
  missing = gt_ids - out.keys()
  extra = out.keys() - gt_ids
  if missing or extra:
    # TVR asserts the same (match_number=True): a partial file would inflate recall.
    raise ValueError(
        f"localization: {name} and ground_truth desc_ids differ: {len(missing)} missing "
        f"(e.g. {sorted(missing, key=str)[:3]}), {len(extra)} unknown "
        f"(e.g. {sorted(extra, key=str)[:3]})")
  n_empty = sum(1 for videos, _ in out.values() if videos.size == 0)
  if n_empty:
    logging.warning("localization: %d of %d queries in %s have no predictions (misses)",
                    n_empty, len(out), name)
  return out


def _parse_ground_truth(ground_truth: Sequence[Mapping[str, Any]],
                        codes: _VideoCodes) -> dict[Any, tuple[int, np.ndarray]]:
  """desc_id -> (video code, [M, 2] float32 windows)."""
  out = {}
  for i, item in enumerate(ground_truth):
    if "desc_id" not in item or "ts" not in item:
      raise ValueError(f"localization: ground_truth[{i}] lacks 'desc_id' or 'ts'")
    video = item.get("vid_name", item.get("video"))
    if not isinstance(video, str):
      raise ValueError(
          f"localization: ground_truth[{i}] needs a 'vid_name' (or 'video') string, got "
          f"{video!r}")
    desc_id = item["desc_id"]
    if desc_id in out:
      raise ValueError(f"localization: ground_truth has desc_id {desc_id!r} twice")
    windows = _as_windows(item["ts"], f"ground_truth desc_id {desc_id!r} 'ts'", np.float32)
    out[desc_id] = (codes.of_name(video, f"ground_truth desc_id {desc_id!r}"),
                    windows.reshape(-1, 2))
  if not out:
    raise ValueError("localization: ground_truth is empty")
  return out


def _correct(windows: np.ndarray, gt_windows: np.ndarray, thresholds: tuple[float, ...]
             ) -> np.ndarray:
  """[T, P] bool: prediction p reaches threshold t (the video is checked by the caller)."""
  iou = temporal_iou(windows, gt_windows, dtype=np.float32)  # [P, M]
  need = _MULTI_GT_MIN_OVERLAPS if gt_windows.shape[0] >= _MULTI_GT_MIN_WINDOWS else 1
  # Python-float thresholds compare in float32 (NEP 50), exactly as in TVR.
  return np.stack([np.count_nonzero(iou >= t, axis=1) >= need for t in thresholds])


def _hits(correct: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
  """[T, K] bool: any correct prediction among the first k, for each threshold and k."""
  first = np.cumsum(correct, axis=1) > 0  # [T, P]: a hit at or before position p
  n = correct.shape[1]
  return np.stack([first[:, min(k, n) - 1] if n else np.zeros(len(correct), bool)
                   for k in ks], axis=1)


def corpus_moment_metrics(
    predictions: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    iou_thresholds: Sequence[float] = _CORPUS_THRESHOLDS,
    ks: Sequence[int] = _CORPUS_KS,
    *,
    video2idx: Mapping[str, int] | None = None,
    svmr_predictions: Sequence[Mapping[str, Any]] | None = None,
    vr_predictions: Sequence[Mapping[str, Any]] | None = None,
    max_pred_per_query: int | None = 100,
) -> dict[str, float]:
  """VCMR, SVMR and VR recall (percent) as TVR's ``standalone_eval`` defines them.

  Args:
    predictions: per query ``{"desc_id", "predictions": [[video, start, end, score], ...]}``
      ranked over the whole corpus; ``video`` is a name, or an index of ``video2idx``.
      Rows are sorted by score (descending, stable) when a score column is present.
    ground_truth: per query ``{"desc_id", "vid_name" (or "video"), "ts": [start, end]}``;
      ``ts`` may also be a list of windows (DiDeMo: correct means IoU >= t with at least 2
      of 4+ windows; with 2 or 3 windows, with any one).
    iou_thresholds: IoU thresholds t in (0, 1].
    ks: recall cut-offs k.
    video2idx: video name -> index; needed when predictions name videos by index.
    svmr_predictions: SVMR predictions (moments of the ground-truth video, as in a TVR
      "SVMR" submission); by default ``predictions`` filtered to the ground-truth video
      after truncation to ``max_pred_per_query``, as TVR evaluates an SVMR list.
    vr_predictions: VR predictions (one row per video, as in a TVR "VR" submission); by
      default the distinct videos of ``predictions`` in order of first appearance. Note a
      top-100 moment list usually holds fewer than 100 distinct videos.
    max_pred_per_query: predictions per query that count (TVR: 100); None keeps all.

  Returns:
    Flat dict of floats: ``vcmr/R@{k}@IoU{t}`` and ``svmr/R@{k}@IoU{t}`` for each t and k,
    and ``vr/R@{k}`` for each k.

  Raises:
    ValueError: malformed entries, unknown videos, non-finite values, or desc_ids that
      differ between predictions and ground truth.
  """
  thresholds = _check_thresholds(iou_thresholds)
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f"localization: ks must be positive, got {ks}")
  if max_pred_per_query is not None and max_pred_per_query < 1:
    raise ValueError(f"localization: max_pred_per_query must be >= 1, got {max_pred_per_query}")
  limit = slice(None, max_pred_per_query)

  codes = _VideoCodes(video2idx)
  gt = _parse_ground_truth(ground_truth, codes)
  gt_ids = set(gt)
  vcmr = _index_predictions(predictions, "predictions", gt_ids, codes)
  svmr = vcmr if svmr_predictions is None else _index_predictions(
      svmr_predictions, "svmr_predictions", gt_ids, codes)
  vr = vcmr if vr_predictions is None else _index_predictions(
      vr_predictions, "vr_predictions", gt_ids, codes)

  n_t, n_k = len(thresholds), len(ks)
  vcmr_hits = np.zeros((n_t, n_k), np.int64)
  svmr_hits = np.zeros((n_t, n_k), np.int64)
  vr_hits = np.zeros(n_k, np.int64)
  for desc_id, (gt_video, gt_windows) in gt.items():
    videos, windows = vcmr[desc_id]
    videos, windows = videos[limit], windows[limit]
    in_video = videos == gt_video
    vcmr_hits += _hits(_correct(windows, gt_windows, thresholds) & in_video, ks)

    videos, windows = svmr[desc_id]
    videos, windows = videos[limit], windows[limit]
    svmr_hits += _hits(_correct(windows[videos == gt_video], gt_windows, thresholds), ks)

    videos = vr[desc_id][0]
    _, first = np.unique(videos, return_index=True)
    distinct = videos[np.sort(first)][limit]
    vr_hits += _hits((distinct == gt_video)[None], ks)[0]

  n = len(gt)
  metrics = {}
  for task, hits in (("vcmr", vcmr_hits), ("svmr", svmr_hits)):
    for ti, t in enumerate(thresholds):
      for ki, k in enumerate(ks):
        metrics[f"{task}/R@{k}@{_iou_name(t)}"] = float(100.0 * hits[ti, ki] / n)
  for ki, k in enumerate(ks):
    metrics[f"vr/R@{k}"] = float(100.0 * vr_hits[ki] / n)
  return metrics


def _submission_entries(entries: Sequence[Mapping[str, Any]], name: str,
                        codes: _VideoCodes, max_pred_per_query: int | None) -> list[dict]:
  """One task's entries in TVR's layout: video indices, rows sorted by score."""
  out, seen = [], set()
  keep = slice(None, max_pred_per_query)
  for i, item in enumerate(entries):
    if "desc_id" not in item or "predictions" not in item:
      raise ValueError(f"localization: {name}[{i}] lacks 'desc_id' or 'predictions'")
    desc_id = item["desc_id"]
    if isinstance(desc_id, np.integer):
      desc_id = int(desc_id)  # json can't write numpy ints
    if desc_id in seen:
      raise ValueError(f"localization: {name} has desc_id {desc_id!r} twice")
    seen.add(desc_id)
    where = f"{name} desc_id {desc_id!r}"
    # float64 windows, so the file keeps the caller's values (not float32 round-offs).
    videos, windows, scores = _parse_rows(item["predictions"], where, codes, np.float64)
    if videos.size and scores is None:
      raise ValueError(f"localization: {where}: submission rows need [video, start, end, score]")
    entry = {"desc_id": desc_id}
    if "desc" in item:
      entry["desc"] = str(item["desc"])
    if scores is None:
      entry["predictions"] = []
    else:
      # tolist() gives Python ints/floats in one call; iterating numpy scalars is ~10x slower.
      entry["predictions"] = [
          [v, st, ed, sc] for v, (st, ed), sc in
          zip(videos[keep].tolist(), windows[keep].tolist(), scores[keep].tolist())]
    out.append(entry)
  return out


def write_tvr_submission(path: str, video2idx: Mapping[str, int],
                         vcmr: Sequence[Mapping[str, Any]],
                         svmr: Sequence[Mapping[str, Any]] | None = None,
                         vr: Sequence[Mapping[str, Any]] | None = None,
                         max_pred_per_query: int | None = 100) -> dict[str, Any]:
  """Writes predictions in the JSON format of TVR's ``standalone_eval``.

  The file is ``{"video2idx": {name: idx}, "VCMR": [...], "SVMR": [...], "VR": [...]}``;
  each task is a list of ``{"desc_id", ("desc"), "predictions": [[video_idx, start, end,
  score], ...]}`` sorted by score (descending). Tasks passed as None are left out, which
  TVR's script accepts (it evaluates the tasks present).

  Args:
    path: output JSON file; parent folders are created.
    video2idx: video name -> integer index, one index per video.
    vcmr: VCMR predictions; a row's video may be a name or an index of ``video2idx``.
    svmr: optional SVMR predictions, same layout.
    vr: optional VR predictions, same layout (start and end are not used by TVR).
    max_pred_per_query: rows kept per query (TVR reads only the first 100); None keeps all.

  Returns:
    The submission dict that was written.
  """
  codes = _VideoCodes(video2idx)
  submission: dict[str, Any] = {"video2idx": dict(codes.video2idx)}
  for key, entries in (("VCMR", vcmr), ("SVMR", svmr), ("VR", vr)):
    if entries is not None:
      submission[key] = _submission_entries(entries, key, codes, max_pred_per_query)
  parent = os.path.dirname(os.fspath(path))
  if parent:
    os.makedirs(parent, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    # dumps (one C-encoder call) is several times faster than dump's chunked writes.
    f.write(json.dumps(submission, allow_nan=False))
  return submission
