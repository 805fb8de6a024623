"""Evaluators that run a model over a split, declared in ``config.evals.<name>``.

Each evaluator has ``run(state, step) -> {metric: value}`` and writes
``workdir/eval/<split>/metrics.json`` (flat ``{name: float}``, names prefixed by direction)
plus its plots. The same objects run inside the train loop and from ``hvt-eval``.
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

from hvt_jax.evaluation import retrieval
from hvt_jax.input import pipeline


@functools.cache
def _embed_fn(graphdef: Any, keys: tuple[str, ...]):
  """One jitted embedding function per (model graph, outputs): reused across splits."""

  def embed(params, batch):
    model = nnx.merge(graphdef, params)
    out = model.embed(batch)
    return {k: out[k] for k in keys}

  return jax.jit(embed)


class RetrievalEvaluator:
  """Video <-> paragraph retrieval (HSE Tables 1-4): p2v and v2p metrics and curves.

  Embeddings of the whole split are gathered to the host; the similarity is ranked in
  chunks (``retrieval.chunked_ranks``) so memory stays bounded on large splits.
  """

  def __init__(self, setup: Any, split: str, *, video_key: str = "video",
               text_key: str = "paragraph", chunk_size: int = 1024, plot: bool = True):
    self.setup, self.split, self.chunk_size, self.plot = setup, split, chunk_size, plot
    self.keys = (video_key, text_key)
    self.embed = _embed_fn(setup.graphdef, self.keys)

  def embeddings(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    ds, steps, total = pipeline.eval_dataset(self.setup.config, self.split)
    videos, texts, masks = [], [], []
    self.input_stats = pipeline.InputStats()
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    batches = tqdm.tqdm(pipeline.iterate(ds, self.setup.mesh, self.input_stats), total=steps,
                        desc=f"eval {self.split}", leave=False,
                        disable=(jax.process_index() > 0
                                 or not self.setup.config.get("progress_bar", True)))
    for batch in batches:
      out = self.embed(state["params"], batch)
      gathered = multihost_utils.process_allgather(
          (out[self.keys[0]], out[self.keys[1]], batch["example_mask"]), tiled=True)
      videos.append(gathered[0])
      texts.append(gathered[1])
      masks.append(gathered[2])
    mask = np.concatenate(masks).astype(bool)
    video, text = np.concatenate(videos)[mask], np.concatenate(texts)[mask]
    if len(video) != total:
      raise RuntimeError(f"evaluated {len(video)} examples of split {self.split!r}, "
                         f"expected {total}")
    return video, text

  def run(self, state: dict[str, Any], step: int, workdir: str) -> dict[str, float]:
    video, text = self.embeddings(state)
    ranks = {"p2v": retrieval.chunked_ranks(text, video, chunk_size=self.chunk_size),
             "v2p": retrieval.chunked_ranks(video, text, chunk_size=self.chunk_size)}
    metrics = {f"{d}/{k}": v for d, r in ranks.items()
               for k, v in retrieval.metrics_from_ranks(r).items()}
    metrics["num_examples"] = float(len(video))
    # Examples whose clips/sentences/words a static limit cut, summed over processes.
    # and segments that covered no feature row (left out of the clip level).
    for name, count in (("truncated_examples", self.input_stats.truncated),
                        ("empty_segments", self.input_stats.empty_segments)):
      metrics[name] = float(np.sum(multihost_utils.process_allgather(np.asarray(count))))
    if jax.process_index() == 0:
      out_dir = os.path.join(workdir, "eval", self.split)
      os.makedirs(out_dir, exist_ok=True)
      with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump({**metrics, "step": float(step)}, f, indent=2, sort_keys=True)
      if self.plot:
        curves = {d: retrieval.recall_curve(r, max_rank=len(video)) for d, r in ranks.items()}
        retrieval.plot_recall_curves(
            curves, os.path.join(out_dir, "recall_curve.png"),
            title=f"{self.setup.config.model.name} {self.split} (step {step})")
    return metrics


EVALUATORS = {"retrieval": RetrievalEvaluator}


def from_config(config: Any, setup: Any,
                splits: list[str] | None = None) -> list[RetrievalEvaluator]:
  """Builds ``config.evals`` (``{name: {type, split, ...}}``), optionally for other splits."""
  out = []
  for name, cfg in config.get("evals", {}).items():
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in EVALUATORS:
      raise ValueError(f"config.evals.{name}.type={kind!r}; valid: {sorted(EVALUATORS)}")
    for split in (splits or [cfg.pop("split")]):
      cfg.pop("split", None)
      out.append(EVALUATORS[kind](setup, split, **cfg))
  return out


def run_all(evals: list[Any], state: dict[str, Any], step: int, writer: Any,
            workdir: str) -> dict[str, float]:
  """Runs every evaluator, logs ``<split>/<metric>`` scalars, returns them."""
  results = {}
  for ev in evals:
    metrics = ev.run(state, step, workdir)
    results.update({f"{ev.split}/{k}": v for k, v in metrics.items()})
    logging.info("eval %s at step %d: %s", ev.split, step,
                 ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
  writer.write_scalars(step, results)
  return results
