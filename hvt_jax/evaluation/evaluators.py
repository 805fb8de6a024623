"""Evaluators that run a model over a split, declared in ``config.evals.<name>``, and the
one runner that builds, runs and reports them.

``config.evals.<name>``: ``type`` (a key of ``EVALUATORS``, the shared types, or of the
model family's ``evaluators``), ``split``, ``pred`` (the prediction function it uses, among
the model's ``PREDICT_FNS``: ``hvt_jax.models.base``), ``prefix`` (metric-name
prefix), ``log_steps`` (evaluate every N training steps; 0 = at the end of training only),
plus the type's own options. ``run_all`` merges the metrics of every evaluator of a split
into one ``workdir/eval/<split>/metrics.json`` (flat ``{name: float}``), writes each
evaluator's per-query top-K predictions (``<prefix>_predictions.jsonl``: ids and scores, for
inspection) and its plots, and logs ``<split>/<name>`` scalars.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from hvt_jax.evaluation import corpus, moments, retrieval
from hvt_jax.input import pipeline


class RetrievalEvaluator:
  """Text <-> video retrieval over a split whose records pair each text with its video
  (HSE Tables 1-4: paragraph -> video ``p2v`` and video -> paragraph ``v2p``).

  The split is streamed once (``corpus.stream``): ``encode_query`` (texts) and
  ``encode_candidate`` (videos) run on each batch; the encodings and the ids stay on the
  host; the device-side scorer (``evaluation.scorer``, via ``corpus.rank``) ranks every
  query against the corpus with the model's ``score``, block by block, exact tie-averaged
  ranks and a running top-K, never the full matrix.

  Empty videos: a video that keeps no clip (no segment covers a feature row, e.g. its
  features end before its first annotated moment; the view's ``empty_video``) has no clip
  level, so HSE's video and paragraph embeddings would be all zeros, scoring 0 against
  everything: an all-ties entry in R@k and MdR. It is left out of the ranked set on both
  sides (its paragraph as a query and a candidate, its video likewise), counted in
  ``num_empty_videos`` and named in a warning (``corpus.non_empty``). FSE leaves out the
  same videos, so HSE and FSE are compared on one set, as are the other HSE evaluators.
  Metrics: ``<prefix>/R@k``, ``MdR``, ``MnR`` of each direction, ``num_examples`` (the
  ranked pairs), ``num_empty_videos``, ``truncated_examples``, ``empty_segments``.
  """

  PREDS = ("score",)

  def __init__(self, ctx: corpus.EvalContext, split: str, *, pred: str = "score",
               prefix: str = "p2v",
               reverse_prefix: str = "v2p", top_k: int = 10, plot: bool = True,
               log_steps: int = 0, query_block: int = 256, cand_block: int = 1024):
    if pred not in self.PREDS:
      raise ValueError(f"retrieval evaluator: pred={pred!r}; valid: {self.PREDS}")
    self.ctx, self.split, self.prefix = ctx, split, prefix
    self.reverse_prefix, self.top_k, self.plot = reverse_prefix, top_k, plot
    self.log_steps, self.blocks = log_steps, (query_block, cand_block)
    self.encode = corpus.encode_fn(ctx)
    ctx.pred(pred, "retrieval")

  def encodings(self, state: dict[str, Any]):
    """(query encodings, candidate encodings, ids, number of empty videos) of the split's
    non-empty videos, on the host."""
    self.input_stats = pipeline.InputStats()
    queries, cands, ids, empty = [], [], [], []
    for (q, c), rows in corpus.stream(self.ctx, self.split, self.encode, state["params"],
                                      strings=("video_id",), stats=self.input_stats,
                                      empty=True):
      queries.append(q)
      cands.append(c)
      ids.extend(rows["video_id"])
      empty.append(rows[corpus.EMPTY])
    concat = lambda parts: jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    empty = np.concatenate(empty)
    keep = corpus.non_empty(empty, ids, f"retrieval {self.split} (no clip covers a feature "
                                        "row)")
    queries, cands = corpus.take((concat(queries), concat(cands)), keep)
    return queries, cands, [ids[i] for i in keep], int(empty.sum())

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Returns (metrics, {prefix: (ScorerResult, ids)}) for ``run_all`` to report."""
    query_enc, cand_enc, ids, num_empty = self.encodings(state)
    ranked = corpus.rank(self.ctx, query_enc, cand_enc, corpus.host_params(state),
                         (self.prefix, self.reverse_prefix), top_k=min(self.top_k, len(ids)),
                         blocks=self.blocks)
    metrics = {f"{prefix}/{name}": v for prefix, res in ranked.items()
               for name, v in res.metrics().items()}
    results = {prefix: (res, ids) for prefix, res in ranked.items()}
    metrics["num_examples"] = float(len(ids))
    metrics["num_empty_videos"] = float(num_empty)
    # Examples whose clips/sentences/words a static limit cut, summed over processes, and
    # segments that covered no feature row (left out of the clip level).
    for name, count in (("truncated_examples", self.input_stats.truncated),
                        ("empty_segments", self.input_stats.empty_segments)):
      metrics[name] = float(np.sum(multihost_utils.process_allgather(np.asarray(count))))
    return metrics, results

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    """Per-query top-K predictions (jsonl) and the recall curve of each direction."""
    for prefix, (res, ids) in results.items():
      with open(os.path.join(out_dir, f"{prefix}_predictions.jsonl"), "w",
                encoding="utf-8") as f:
        for i, qid in enumerate(ids):
          f.write(json.dumps({
              "query": qid, "target": qid, "rank": float(res.ranks[i]),
              "top_k": [[ids[j], float(s)] for j, s in zip(res.top_indices[i],
                                                           res.top_scores[i])]}) + "\n")
    if self.plot:
      curves = {p: retrieval.recall_curve(r.ranks, max_rank=len(ids))
                for p, (r, ids) in results.items()}
      retrieval.plot_recall_curves(
          curves, os.path.join(out_dir, "recall_curve.png"),
          title=f"{self.split} (step {step})")


# The shared evaluator types; a family adds its own (``hvt_jax.families.Family.evaluators``).
EVALUATORS = {"retrieval": RetrievalEvaluator, **moments.EVALUATORS}


def _check_splits(ctx: corpus.EvalContext, name: str, cfg: dict[str, Any], splits: list[str],
                  flag: bool) -> None:
  """Every split an evaluator reads (``split``, or ``--split`` when ``flag``, and options
  named ``*_split``/``*_splits``) is a non-empty split of the dataset."""
  available = ctx.meta["splits"]
  named = [("--split" if flag else f"config.evals.{name}.split", s) for s in splits]
  for key, value in cfg.items():
    if key.endswith(("_split", "_splits")):
      named += [(f"config.evals.{name}.{key}", s)
                for s in ([value] if isinstance(value, str) else value)]
  for where, split in named:
    if split not in available or not available[split]:
      problem = "is not a split of" if split not in available else "has no records in"
      raise ValueError(f"{where}={split!r} {problem} dataset {ctx.data_dir} (splits with "
                       f"records: {sorted(k for k, v in available.items() if v)})")


def from_config(config: Any, ctx: corpus.EvalContext, types: dict[str, type],
                splits: list[str] | None = None) -> list[Any]:
  """Builds ``config.evals`` (``{name: {type, split, ...}}``), optionally for other splits.

  ``types``: the family's own evaluator types, available beside the shared ``EVALUATORS``.

  Everything an evaluator needs that can be checked without running it is checked here,
  so the trainer calls this before its first step: the type, the splits it reads (they
  must exist in the dataset and have records), and the evaluator's own options (its
  prediction function, the model and dataset fields it needs: each constructor raises).

  Raises:
    ValueError: naming the ``config.evals.<name>`` field that is wrong.
  """
  out = []
  available = {**EVALUATORS, **types}
  for name, cfg in config.get("evals", {}).items():
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in available:
      raise ValueError(f"config.evals.{name}.type={kind!r}; valid: {sorted(available)}")
    split = cfg.pop("split")
    _check_splits(ctx, name, cfg, splits or [split], flag=bool(splits))
    for s in (splits or [split]):
      try:
        out.append(available[kind](ctx, s, **cfg))
      except TypeError as e:
        raise ValueError(f"config.evals.{name}: {e}") from None
  return out


def due(evaluator: Any, step: int, last: bool) -> bool:
  """Whether ``evaluator`` runs after training step ``step``."""
  return last or bool(evaluator.log_steps and step % evaluator.log_steps == 0)


def run_all(evals: list[Any], state: dict[str, Any], step: int, writer: Any,
            workdir: str) -> dict[str, float]:
  """Runs ``evals``, merges each split's metrics into one metrics.json, writes predictions
  and plots, logs ``<split>/<metric>`` scalars; returns them.

  Raises:
    ValueError: two evaluators of one split produce the same metric name (set ``prefix``).
  """
  by_split: dict[str, dict[str, float]] = {}
  for ev in evals:
    metrics, results = ev.run(state, step)
    merged = by_split.setdefault(ev.split, {})
    clash = sorted(set(metrics) & set(merged) - {"num_examples", "truncated_examples",
                                                 "empty_segments", "num_empty_videos"})
    if clash:
      raise ValueError(f"evaluators of split {ev.split!r} both write {clash}: give them "
                       "different prefixes (config.evals.<name>.prefix)")
    merged.update(metrics)
    if jax.process_index() == 0:
      out_dir = os.path.join(workdir, "eval", ev.split)
      os.makedirs(out_dir, exist_ok=True)
      ev.write(out_dir, step, results)
  results = {}
  for split, metrics in by_split.items():
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "eval", split, "metrics.json"), "w",
                encoding="utf-8") as f:
        json.dump({**metrics, "step": float(step)}, f, indent=2, sort_keys=True)
    results.update({f"{split}/{k}": v for k, v in metrics.items()})
    logging.info("eval %s at step %d: %s", split, step,
                 ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
  writer.write_scalars(step, results)
  return results
