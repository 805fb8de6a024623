"""MCHA's text <-> video retrieval: several captions per video, designated test captions, and
the holistic modality weights (paper §4.1, Table 5).

``type="mcha_retrieval"`` streams a split twice (``corpus.stream``): videos through
``encode_candidate`` (``mcha_view.video_view``) and captions through ``encode_query``
(``mcha_view.caption_view``: every caption of every video; with ``input.paragraph``, one
concatenated paragraph per video, ActivityNet's protocol). The pairwise ``score`` then ranks
through the device-side scorer (``evaluation.scorer``) in blocks (``query_block`` ×
``cand_block`` pairs at a time: the LAM's per-pair tensors are [Bq, Bc, L, d_uni]):

* ``t2v``: each caption against every video; its target is its own video;
* ``v2t``: each video against every kept caption; its rank is the best among its own
  captions (MSR-VTT full test, LSMDC: several captions per video);
* ``caption_index_file``: one designated caption per video (MSR-VTT 1k-A: the JSFusion
  caption of each of the 1,000 test videos). A pickle or JSON dict {video_id: caption
  index}, e.g. ``jsfusion_val_caption_idx.pkl`` from the Collaborative Experts MSR-VTT data
  bundle (github.com/albanie/collaborative-experts, which MMT reads too). The caption is
  picked in the input pipeline (``mcha_view.designated_caption_view``), so only the
  designated captions go through the text tower. A video without an entry, or an index
  beyond its captions, is an error naming the file. Not with ``input.paragraph`` (a
  paragraph is already one query per video).

Empty videos: a video none of whose experts (``input.experts``) has a feature row
(``mcha_view.video_view``'s ``empty_video``) has nothing for the video side to encode: every
expert is masked, so its scores are a constant (an all-ties entry in R@k and MdR) or not
even finite (the scorer then stops with an error about the score function). It is left out
of both rankings, as a candidate and a query, and so are its captions (``corpus.non_empty``:
counted in ``num_empty_videos``, named in a warning).

Metrics (``metrics.json``): ``t2v/R@{1,5,10,50}``, ``MdR``, ``MnR`` (ties at their average
rank) and the same for ``v2t``; ``modality_weight/<expert>``: the mean holistic weight of
each expert over the kept captions paired with their own video (Table 5), also written to
``modality_weights.json``; ``num_examples`` (ranked captions), ``num_videos`` (ranked
videos), ``num_empty_videos``, ``truncated_examples``.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
from typing import Any

import jax
import numpy as np

from hvt_jax.evaluation import corpus, retrieval, scorer
from hvt_jax.input import pipeline
from hvt_jax.families.mcha import view as mcha_view


@functools.cache
def _fns(encode_candidate: Any, encode_query: Any, modality_weights: Any):
  """Jitted (videos, captions, paired modality weights) of the prediction functions."""

  def captions(params, batch):
    index = {k: batch[k] for k in ("caption_index", "caption_count") if k in batch}
    return encode_query(params, batch), index

  def weights(params, probs, avail):
    one = lambda p, a: modality_weights(params, {"weight_probs": p[None]},
                                        {"avail": a[None]})
    return jax.vmap(one)(probs, avail)[:, 0, 0]

  return jax.jit(encode_candidate), jax.jit(captions), jax.jit(weights)


def load_caption_index(path: str) -> dict[str, int]:
  """{video_id: caption index} from a pickle (.pkl/.pickle) or JSON file.

  Raises:
    ValueError: not a dict of str -> int (names the file).
  """
  if path.endswith((".pkl", ".pickle")):
    with open(path, "rb") as f:
      data = pickle.load(f)
  else:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  if not isinstance(data, dict) or not all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in data.values()):
    raise ValueError(f"{path}: expected a dict {{video_id: caption index (int)}}")
  return {str(k): int(v) for k, v in data.items()}


def _concat(parts: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


class MCHARetrievalEvaluator:
  """Caption <-> video retrieval of MCHA (see the module docstring)."""

  PREDS = ("score",)

  def __init__(self, ctx: Any, split: str, *, pred: str = "score", prefix: str = "t2v",
               reverse_prefix: str = "v2t", caption_index_file: str = "", top_k: int = 10,
               plot: bool = True, log_steps: int = 0, query_block: int = 16,
               cand_block: int = 64):
    if pred not in self.PREDS:
      raise ValueError(f"mcha_retrieval evaluator: pred={pred!r}; valid: {self.PREDS}")
    self.fns = _fns(*(ctx.pred(f, "mcha_retrieval") for f in
                      ("encode_candidate", "encode_query", "modality_weights")))
    self.score = ctx.pred(pred, "mcha_retrieval")
    self.ctx, self.split, self.prefix = ctx, split, prefix
    self.reverse_prefix, self.top_k, self.plot = reverse_prefix, top_k, plot
    self.log_steps, self.blocks = log_steps, (query_block, cand_block)
    self.caption_index = load_caption_index(caption_index_file) if caption_index_file else None
    self.caption_index_file = caption_index_file
    paragraph = ctx.config.input.get("paragraph", False)
    if paragraph and self.caption_index is not None:
      raise ValueError("mcha_retrieval evaluator: caption_index_file with input.paragraph "
                       "(a paragraph is already one query per video)")
    self.video_view = pipeline.View(mcha_view.video_view, stat_keys=("truncated",))
    if self.caption_index is not None:
      self.caption_view = pipeline.View(mcha_view.designated_caption_view(self.caption_index),
                                        stat_keys=("truncated",))
    else:
      self.caption_view = pipeline.View(
          mcha_view.paragraph_view if paragraph else mcha_view.caption_view,
          per_row="" if paragraph else "tokens", stat_keys=("truncated",))

  def encodings(self, state: dict[str, Any]):
    """(caption encodings, video encodings, caption -> video position, caption ids,
    video ids, truncated count, number of empty videos) of the non-empty videos and their
    captions, the captions filtered by ``caption_index_file``."""
    videos_fn, captions_fn, _ = self.fns
    params = state["params"]
    stats = pipeline.InputStats()
    vids, vrows = [], {"video_index": [], "video_id": [], corpus.EMPTY: []}
    for out, rows in corpus.stream(self.ctx, self.split, videos_fn, params,
                                   view=self.video_view, strings=("video_id",), stats=stats,
                                   empty=True):
      vids.append(out)
      for key in ("video_index", corpus.EMPTY):
        vrows[key].append(rows[key])
      vrows["video_id"].extend(rows["video_id"])
    caps, cap_video, cap_index = [], [], []
    for (out, index), rows in corpus.stream(self.ctx, self.split, captions_fn, params,
                                            view=self.caption_view, stats=stats):
      caps.append(out)
      cap_video.append(rows["video_index"])
      cap_index.append(index)
    position = {int(v): p for p, v in enumerate(np.concatenate(vrows["video_index"]))}
    cap_video = np.asarray([position[int(v)] for v in np.concatenate(cap_video)], np.int32)
    cap_index = _concat(cap_index)
    video_ids = vrows["video_id"]
    if self.caption_index is not None:
      self._check_designated(cap_index, cap_video, video_ids)
    cap_ids = [f"{video_ids[v]}#{i}" for v, i in zip(cap_video, cap_index["caption_index"])]
    empty = np.concatenate(vrows[corpus.EMPTY])
    keep = corpus.non_empty(empty, video_ids, f"mcha_retrieval {self.split} (no expert has "
                                              "a feature row)")
    new_position = np.full(len(video_ids), -1, np.int32)
    new_position[keep] = np.arange(keep.size)
    kept_caps = np.flatnonzero(new_position[cap_video] >= 0)
    return (corpus.take(_concat(caps), kept_caps), corpus.take(_concat(vids), keep),
            new_position[cap_video[kept_caps]], [cap_ids[i] for i in kept_caps],
            [video_ids[i] for i in keep], stats.truncated, int(empty.sum()))

  def _check_designated(self, index: dict[str, np.ndarray], cap_video: np.ndarray,
                        video_ids: list[str]) -> None:
    """Every video has an entry and its index names one of its captions (else ValueError
    naming the file)."""
    want, count = index["caption_index"], index["caption_count"]
    for what, bad in (("has no designated caption", want < 0),
                      ("has a caption index beyond its captions", want >= count)):
      if bad.any():
        first = video_ids[cap_video[np.flatnonzero(bad)[0]]]
        raise ValueError(f"{self.caption_index_file}: video {first!r} of split "
                         f"{self.split!r} {what} ({int(bad.sum())} such videos)")

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Returns (metrics, results for ``write``)."""
    del step
    caps, vids, cap_video, cap_ids, video_ids, truncated, num_empty = self.encodings(state)
    params = corpus.host_params(state)
    mesh = corpus.ranking_mesh(self.ctx.mesh)
    per_video = np.bincount(cap_video, minlength=len(video_ids))
    v2t_targets = np.full((len(video_ids), max(int(per_video.max()), 1)), -1, np.int32)
    fill = np.zeros(len(video_ids), np.int64)
    for row, v in enumerate(cap_video):
      v2t_targets[v, fill[v]] = row
      fill[v] += 1
    ranked = {}
    for prefix, q, c, targets, reverse in (
        (self.prefix, caps, vids, cap_video, False),
        (self.reverse_prefix, vids, caps, v2t_targets, True)):
      if not prefix:
        continue
      n_cand = jax.tree.leaves(c)[0].shape[0]
      with jax.set_mesh(mesh):
        ranked[prefix] = scorer.rank_corpus(
            q, c, targets, corpus.score_fn(self.score, reverse), mesh=mesh,
            params=params, top_k=min(self.top_k, n_cand), query_block=self.blocks[0],
            cand_block=self.blocks[1])
    metrics = {f"{p}/{k}": v for p, r in ranked.items() for k, v in r.metrics().items()}
    metrics.update(num_examples=float(len(cap_ids)), num_videos=float(len(video_ids)),
                   num_empty_videos=float(num_empty), truncated_examples=float(truncated))
    weights = {}
    if "weight_probs" in caps:
      w = np.asarray(self.fns[2](
          params, caps["weight_probs"], vids["avail"][cap_video]))
      experts = self.ctx.config.input.experts
      weights = {e: float(w[:, j].mean()) for j, e in enumerate(experts)}
      metrics.update({f"modality_weight/{e}": v for e, v in weights.items()})
    ids = {self.prefix: (cap_ids, video_ids), self.reverse_prefix: (video_ids, cap_ids)}
    return metrics, {"ranked": ranked, "ids": ids, "weights": weights}

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    """Per-query top-K (``<prefix>_predictions.jsonl``), recall curves, modality weights."""
    for prefix, res in results["ranked"].items():
      queries, cands = results["ids"][prefix]
      with open(os.path.join(out_dir, f"{prefix}_predictions.jsonl"), "w",
                encoding="utf-8") as f:
        for i, qid in enumerate(queries):
          f.write(json.dumps({"query": qid, "rank": float(res.ranks[i]), "top_k": [
              [cands[j], float(s)] for j, s in zip(res.top_indices[i], res.top_scores[i])]})
                  + "\n")
    if results["weights"]:
      with open(os.path.join(out_dir, "modality_weights.json"), "w", encoding="utf-8") as f:
        json.dump(results["weights"], f, indent=2)
    if self.plot:
      curves = {p: retrieval.recall_curve(r.ranks, max_rank=len(results["ids"][p][1]))
                for p, r in results["ranked"].items()}
      retrieval.plot_recall_curves(
          curves, os.path.join(out_dir, f"{self.prefix}_recall_curve.png"),
          title=f"{self.split} (step {step})")


EVALUATORS = {"mcha_retrieval": MCHARetrievalEvaluator}
