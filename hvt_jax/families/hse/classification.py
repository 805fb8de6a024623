"""Action classification metrics and the supervised-classifier evaluator (HSE Table 6, right).

``top_k_accuracy`` ranks classes by logit with ties at their average rank (the convention of
every ranking metric here, ``retrieval.ranks``); ``ClassificationEvaluator`` (``"classify"``)
runs an ``hse_classifier`` over a split and reports ``<prefix>/top1``, ``<prefix>/top5``,
``<prefix>/mean_class_top1`` (percent) and counts.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import numpy as np

from hvt_jax.evaluation import corpus
from hvt_jax.families.hse import heads as hse_heads


def class_ranks(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
  """1-based rank of each row's target class, ties at their average rank.

  Args:
    logits: [N, K] scores, higher is better.
    target: [N] int class indices in [0, K).

  Returns:
    [N] float64 ranks.

  Raises:
    ValueError: shapes disagree or a target is out of range.
  """
  logits, target = np.asarray(logits, np.float64), np.asarray(target)
  if logits.ndim != 2 or target.shape != logits.shape[:1]:
    raise ValueError(f"class_ranks: logits {logits.shape} and target {target.shape}")
  if ((target < 0) | (target >= logits.shape[1])).any():
    raise ValueError(f"class_ranks: targets outside [0, {logits.shape[1]})")
  own = logits[np.arange(len(target)), target][:, None]
  return (logits > own).sum(1) + ((logits == own).sum(1) + 1) / 2.0


def top_k_accuracy(logits: np.ndarray, target: np.ndarray,
                   ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
  """{"top<k>": percent of rows whose target ranks <= k, "mean_class_top1": top-1 averaged
  over the classes present} (tie-averaged ranks, ``class_ranks``)."""
  ranks = class_ranks(logits, target)
  out = {f"top{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
  out["mean_class_top1"] = float(np.mean(
      [100.0 * np.mean(ranks[target == c] <= 1) for c in np.unique(target)]))
  return out


@functools.cache
def _classify_fn(classify: Any):
  return jax.jit(lambda params, batch: (classify(params, batch), batch["label_id"]))


class ClassificationEvaluator:
  """Top-1/top-5 action classification of an ``hse_classifier`` over a split (HSE §4.4,
  "Train Classifier"): the whole video's frozen clip-level embedding through the MLP.

  Videos without a label (``label_id == -1``) are left out and counted
  (``<prefix>/num_unlabeled``). Writes ``<prefix>_per_class.json`` (videos and top-1 per
  class).
  """

  def __init__(self, ctx: Any, split: str, *, pred: str = "classify",
               prefix: str = "classify", log_steps: int = 0):
    if pred != "classify":
      raise ValueError(f"classify evaluator: pred={pred!r}; valid: ('classify',)")
    self.classify = _classify_fn(ctx.pred("classify", "classify"))
    self.ctx, self.split, self.prefix, self.log_steps = ctx, split, prefix, log_steps
    self.classes = hse_heads.classes_of(ctx.meta)

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    logits, labels = [], []
    for (lg, lab), _ in corpus.stream(self.ctx, self.split, self.classify,
                                      state["params"]):
      logits.append(lg)
      labels.append(lab)
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    keep = labels >= 0
    p = self.prefix
    metrics = {f"{p}/num_videos": float(keep.sum()), f"{p}/num_unlabeled": float((~keep).sum()),
               f"{p}/chance_top1": 100.0 / len(self.classes)}
    if not keep.any():
      return metrics, {}
    metrics.update({f"{p}/{k}": v for k, v in top_k_accuracy(logits[keep], labels[keep]).items()})
    ranks = class_ranks(logits[keep], labels[keep])
    per_class = {self.classes[c]: {"videos": int((labels[keep] == c).sum()),
                                   "top1": float(100.0 * np.mean(ranks[labels[keep] == c] <= 1))}
                 for c in np.unique(labels[keep])}
    return metrics, {"per_class": per_class}

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    if results:
      with open(os.path.join(out_dir, f"{self.prefix}_per_class.json"), "w",
                encoding="utf-8") as f:
        json.dump({"step": step, **results}, f, indent=2, sort_keys=True)
