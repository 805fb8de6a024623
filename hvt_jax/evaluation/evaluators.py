"""Evaluators that run a model over a split, declared in ``config.evals.<name>``, and the
one runner that builds, runs and reports them.

``config.evals.<name>``: ``type`` (a key of ``EVALUATORS``), ``split``, ``pred`` (the
model's prediction function it uses, ``hvt_jax.models.base``), ``prefix`` (metric-name
prefix), ``log_steps`` (evaluate every N training steps; 0 = at the end of training only),
plus the type's own options. ``run_all`` merges the metrics of every evaluator of a split
into one ``workdir/eval/<split>/metrics.json`` (flat ``{name: float}``), writes each
evaluator's per-query top-K predictions (``<prefix>_predictions.jsonl``: ids and scores, for
inspection) and its plots, and logs ``<split>/<name>`` scalars.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from hvt_jax import models
from hvt_jax.evaluation import hse_tasks, retrieval, scorer
from hvt_jax.input import pipeline


@functools.cache
def encode_fn(graphdef: Any):
  """One jitted (encode_query, encode_candidate) per model graph, reused across splits."""

  def encode(params, batch):
    model = nnx.merge(graphdef, params)
    return model.encode_query(batch), model.encode_candidate(batch)

  return jax.jit(encode)


@functools.cache
def score_fn(graphdef: Any, reverse: bool):
  """The model's pairwise ``score`` as the scorer calls it (stable: compiled once).

  ``reverse``: the queries are candidate encodings (videos) and the candidates query
  encodings (texts): score(text block, video block) transposed.
  """

  def score(q, c, params):
    model = nnx.merge(graphdef, params)
    return model.score(c, q).T if reverse else model.score(q, c)

  return score


def allgather_strings(values: list[str]) -> list[str]:
  """Concatenates every process's strings in process order (UTF-8 as padded bytes; every
  process contributes an array of the same shape, as collectives require)."""
  if jax.process_count() == 1:
    return list(values)
  data = [v.encode("utf-8") for v in values]
  sizes = multihost_utils.process_allgather(
      np.asarray([len(data), max(map(len, data), default=1)]))
  rows_per, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
  arr = np.zeros((rows_per, width), np.uint8)
  for i, d in enumerate(data):
    arr[i, :len(d)] = np.frombuffer(d, np.uint8)
  rows = multihost_utils.process_allgather(arr, tiled=True).reshape(-1, rows_per, width)
  return [bytes(r).rstrip(b"\0").decode("utf-8")
          for proc, n in zip(rows, sizes[:, 0]) for r in proc[:n]]


def ranking_mesh(mesh: Mesh) -> Mesh:
  """The training mesh with one process; each process's own devices otherwise (every
  process then ranks the gathered encodings; the scorer places inputs from its host)."""
  if jax.process_count() == 1:
    return mesh
  return Mesh(np.array(jax.local_devices()).reshape(-1, 1), ("data", "model"))


class RetrievalEvaluator:
  """Text <-> video retrieval over a split whose records pair each text with its video
  (HSE Tables 1-4: paragraph -> video ``p2v`` and video -> paragraph ``v2p``).

  The split is streamed once: ``encode_query`` (texts) and ``encode_candidate`` (videos)
  run on each batch; the encodings and the ids stay on the host; the device-side scorer
  (``evaluation.scorer``) ranks every query against the corpus with the model's ``score``,
  block by block, exact tie-averaged ranks and a running top-K, never the full matrix.
  """

  PREDS = ("score",)

  def __init__(self, setup: Any, split: str, *, pred: str = "score", prefix: str = "p2v",
               reverse_prefix: str = "v2p", top_k: int = 10, plot: bool = True,
               log_steps: int = 0, query_block: int = 256, cand_block: int = 1024):
    if pred not in self.PREDS:
      raise ValueError(f"retrieval evaluator: pred={pred!r}; valid: {self.PREDS}")
    model_cls = models.get_model_class(setup.config.model.name)
    if not all(hasattr(model_cls, f) for f in ("encode_query", "encode_candidate", pred)):
      raise ValueError(f"retrieval evaluator: model {setup.config.model.name!r} has no "
                       f"encode_query/encode_candidate/{pred} (models.base.Ranker)")
    self.setup, self.split, self.prefix = setup, split, prefix
    self.reverse_prefix, self.top_k, self.plot = reverse_prefix, top_k, plot
    self.log_steps, self.blocks = log_steps, (query_block, cand_block)
    self.encode = encode_fn(setup.graphdef)
    self.view = pipeline.get_view(setup.config.model.name)

  def encodings(self, state: dict[str, Any]):
    """(query encodings, candidate encodings, ids, input stats) of the whole split."""
    ds, steps, total = pipeline.eval_dataset(self.setup.config, self.split)
    self.input_stats = pipeline.InputStats()
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    batches = tqdm.tqdm(
        pipeline.iterate(ds, self.setup.mesh, self.view, self.input_stats), total=steps,
        desc=f"eval {self.split}", leave=False,
        disable=(jax.process_index() > 0 or not self.setup.config.get("progress_bar", True)))
    queries, cands, order, local_ids = [], [], [], {}
    for batch, host in batches:
      q, c = self.encode(state["params"], batch)
      q, c = multihost_utils.process_allgather((q, c), tiled=True)
      real = host["example_mask"].astype(bool)
      local_ids.update(zip(host["video_index"][real].tolist(),
                           (v.decode("utf-8") for v in host["video_id"][real])))
      # Rows of the global batch, in the order of the encodings: each process's slice.
      mask, index = (multihost_utils.process_allgather(host[k], tiled=True)
                     for k in ("example_mask", "video_index"))
      mask = mask.astype(bool)
      order.extend(index[mask].tolist())
      queries.append(jax.tree.map(lambda x: x[mask], q))
      cands.append(jax.tree.map(lambda x: x[mask], c))
    query_enc = jax.tree.map(lambda *xs: np.concatenate(xs), *queries)
    cand_enc = jax.tree.map(lambda *xs: np.concatenate(xs), *cands)
    gathered = dict(zip(map(int, allgather_strings([str(k) for k in local_ids])),
                        allgather_strings(list(local_ids.values()))))
    ids = [gathered[i] for i in order]
    if len(ids) != total:
      raise RuntimeError(f"evaluated {len(ids)} examples of split {self.split!r}, "
                         f"expected {total}")
    return query_enc, cand_enc, ids

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Returns (metrics, {prefix: (ScorerResult, ids)}) for ``run_all`` to report."""
    query_enc, cand_enc, ids = self.encodings(state)
    params = state["params"]
    if jax.process_count() > 1:
      params = multihost_utils.process_allgather(params, tiled=True)
    mesh = ranking_mesh(self.setup.mesh)
    k = min(self.top_k, len(ids))
    directions = [(self.prefix, query_enc, cand_enc, False)]
    if self.reverse_prefix:
      directions.append((self.reverse_prefix, cand_enc, query_enc, True))
    metrics, results = {}, {}
    for prefix, q, c, reverse in directions:
      with jax.set_mesh(mesh):
        res = scorer.rank_corpus(q, c, None, score_fn(self.setup.graphdef, reverse),
                                 mesh=mesh, params=params, top_k=k,
                                 query_block=self.blocks[0], cand_block=self.blocks[1])
      metrics.update({f"{prefix}/{name}": v for name, v in res.metrics().items()})
      results[prefix] = (res, ids)
    metrics["num_examples"] = float(len(ids))
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
          title=f"{self.setup.config.model.name} {self.split} (step {step})")


EVALUATORS = {"retrieval": RetrievalEvaluator, **hse_tasks.EVALUATORS}


def from_config(config: Any, setup: Any, splits: list[str] | None = None) -> list[Any]:
  """Builds ``config.evals`` (``{name: {type, split, ...}}``), optionally for other splits."""
  out = []
  for name, cfg in config.get("evals", {}).items():
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in EVALUATORS:
      raise ValueError(f"config.evals.{name}.type={kind!r}; valid: {sorted(EVALUATORS)}")
    split = cfg.pop("split")
    for s in (splits or [split]):
      try:
        out.append(EVALUATORS[kind](setup, s, **cfg))
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
                                                 "empty_segments"})
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
