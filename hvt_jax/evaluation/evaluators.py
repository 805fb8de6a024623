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

import dataclasses
import functools
import json
import os
import pickle
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from absl import logging
from jax.experimental import multihost_utils

from hvt_jax import checkpoints, flops
from hvt_jax.evaluation import corpus, moments, retrieval, scorer
from hvt_jax.input import pipeline


class RetrievalEvaluator:
  """Text <-> video retrieval over a split: one evaluator, three protocols.

  * Paired (default): the model's own view gives one (text, video) pair per record (HSE
    Tables 1-4: paragraph -> video ``p2v``, video -> paragraph ``v2p``). The split is
    streamed once (``corpus.stream``); ``encode_query`` and ``encode_candidate`` run on
    each batch; text i's target is video i and video i's is text i.
  * Texts of their own (``video_view`` and ``query_view``, names of the family's views;
    MCHA §4.1): the split is streamed twice, the videos through ``video_view``
    (``encode_candidate``) and the texts through ``query_view`` (``encode_query``: every
    caption of a record when the view has one example per row, or one paragraph). A text's
    target is its record's video; a video's rank is the best among its own texts' ranks
    (MSR-VTT full test, LSMDC). ``caption_index_file``: one designated text per video
    (MSR-VTT 1k-A: the JSFusion caption of each test video), a pickle or JSON dict
    {video_id: caption index}, e.g. ``jsfusion_val_caption_idx.pkl`` of the Collaborative
    Experts MSR-VTT bundle; the text is picked in the input pipeline (``designated_view``),
    so only designated texts reach the text tower. The index counts the source's captions,
    so it goes through the dataset's record of captions the converter dropped
    (``stored_caption_index``; a dataset without that record is read as dropping none, with
    a warning). A video without an entry, an index beyond its texts, or a designated caption
    the converter dropped (empty, or no tokens: the protocol's query does not exist) is an
    error naming the file. Text ids (``<video_id>#<i>``) name the source index.
    ``modality_weights``: also the mean holistic weight of each expert over the texts
    paired with their own video (``modality_weight/<expert>``, MCHA Table 5;
    ``modality_weights.json``), from the prediction function ``modality_weights``, where the
    text encodings carry them (MCHA without its holistic part has none: no such metrics).
  * Incomplete observation (``observe_first=N``; HSE §4.2, Fig. 4): paired retrieval when
    only the first n clips and n sentences of each record are observed, n = 1 … N, through
    the family's ``observe_first`` view factory (what it cuts is documented there). Metrics
    ``<group>/<prefix>/<metric>@n=<n>`` for the ranking ``metrics`` kept (default R@1, R@5),
    ``<group>/num_examples``, ``<group>/num_empty_videos@n=<n>``; ``<group>_curve.json`` and
    ``<group>_curve.png``. At n >= every record's segments the numbers equal the paired
    protocol's.

  Ranking: the encodings and ids stay on the host; the device-side scorer
  (``evaluation.scorer``) ranks every query against the corpus with the prediction function
  ``pred`` (default ``score``; any of the model's pairwise scores, (query encodings [Bq],
  candidate encodings [Bc]) -> [Bq, Bc], e.g. MCHA's ``holistic_score``), block by block
  (``query_block`` × ``cand_block`` pairs per device; 0, the default: the largest blocks
  that fit the device's free memory, ``scorer.choose_blocks``, logged), exact tie-averaged
  ranks and the top-K, never the full matrix. ``trim_tokens``: (mask, leaves...) names of
  the text encoding's [T, L] bool token mask and its other [T, L, ...] leaves; their padded
  token axis is cut per block of texts to the longest text (``scorer.TokenTrim``, exact for
  a score that masks the padding: MCHA's, ``configs/mcha``), and once, to the longest
  text, where the texts are the candidates.

  Empty videos: a video with nothing to encode (the view's ``empty_video``: HSE, no
  segment covers a feature row; MCHA, no expert has a row) would score a constant against
  everything, an all-ties entry in R@k and MdR. It is left out of the ranked set on both
  sides, with its texts (``corpus.non_empty``), counted in ``num_empty_videos`` and named
  in a warning; HSE and FSE leave out the same videos, so they are compared on one set.

  Metrics: ``<prefix>/R@k``, ``MdR``, ``MnR`` of each direction (``<group>/`` before them
  when ``group`` is set), ``num_examples`` (the ranked texts), ``num_empty_videos``,
  ``truncated_examples`` and, where the view counts them, ``empty_segments``; with texts
  of their own also ``num_videos``. Files: ``<prefix>_predictions.jsonl`` (each query's
  top-K) and the recall curves (``recall_curve.png``).
  """

  def __init__(self, ctx: corpus.EvalContext, split: str, *, pred: str = "score",
               prefix: str = "p2v", reverse_prefix: str = "v2p", top_k: int = 10,
               plot: bool = True, log_steps: int = 0, query_block: int = 0,
               cand_block: int = 0, video_view: str = "", query_view: str = "",
               caption_index_file: str = "", modality_weights: bool = False,
               observe_first: int = 0, metrics: tuple[str, ...] = ("R@1", "R@5"),
               group: str = "", trim_tokens: Sequence[str] = ()):
    name = "retrieval"
    if bool(video_view) != bool(query_view):
      raise ValueError(f"{name} evaluator: video_view={video_view!r} and "
                       f"query_view={query_view!r}: give both or neither")
    if caption_index_file and not query_view:
      raise ValueError(f"{name} evaluator: caption_index_file needs query_view")
    if observe_first and query_view:
      raise ValueError(f"{name} evaluator: observe_first is a paired protocol; not with "
                       "video_view/query_view")
    self.ctx, self.split, self.prefix = ctx, split, prefix
    self.reverse_prefix, self.top_k, self.plot = reverse_prefix, top_k, plot
    self.log_steps, self.blocks = log_steps, (query_block, cand_block)
    self.group, self.metric_names = group, tuple(metrics)
    self.trim = (scorer.TokenTrim(trim_tokens[0], tuple(trim_tokens[1:])) if trim_tokens
                 else None)
    self.score = ctx.pred(pred, name)
    # The ranking's FLOPs (XLA's count for one block of the score) and time, per run.
    self.perf = flops.Tally.on(corpus.ranking_mesh(ctx.mesh),
                                ctx.config.model.get("dtype", "float32"))
    self.encode = corpus.encode_fn(ctx, name)          # paired: both towers on one batch
    # ``text_view``: the texts' view before ``designated_view`` (free-text queries).
    self.video_view = self.query_view = self.text_view = None
    self.caption_index, self.caption_index_file = None, caption_index_file
    # {video_id: source indices of captions the converter did not store} (data_prep.mmt_experts)
    self.dropped_captions = ctx.meta.get("extra", {}).get("dropped_captions")
    if query_view:
      self.video_view = ctx.get_view(video_view, name)
      self.query_view = self.text_view = ctx.get_view(query_view, name)
      if caption_index_file:
        if not self.query_view.per_row:
          raise ValueError(f"{name} evaluator: caption_index_file needs a query_view with "
                           f"one example per text; {query_view!r} has one per record")
        self.caption_index = load_caption_index(caption_index_file)
        self.query_view = designated_view(self.query_view, stored_caption_index(
            self.caption_index, self.dropped_captions, caption_index_file))
    self.weights = _weights_fn(ctx.pred("modality_weights", name)) if modality_weights else None
    self.observe_first = int(observe_first)
    if self.observe_first:
      self.observe = ctx.get_view("observe_first", name)   # a factory: n -> View
      self.observe(1, ctx.config.input)                     # rejects what it cannot cut

  # -- encodings -----------------------------------------------------------------------

  def paired(self, params: Any, view: pipeline.View | None = None):
    """(query encodings, candidate encodings, ids, [N] empty flags, input stats) of every
    record of the split through ``view`` (default: the model's), on the host."""
    stats = pipeline.InputStats()
    queries, cands, ids, empty = [], [], [], []
    for (q, c), rows in corpus.stream(self.ctx, self.split, self.encode, params, view=view,
                                      strings=("video_id",), stats=stats, empty=True):
      queries.append(q)
      cands.append(c)
      ids.extend(rows["video_id"])
      empty.append(rows[corpus.EMPTY])
    return _concat(queries), _concat(cands), ids, np.concatenate(empty), stats

  def _video_stream(self, params: Any, stats: pipeline.InputStats | None = None):
    """Texts of their own: (video encodings, [V] record indices, video ids, [V] empty
    flags) of the split's ``video_view`` stream."""
    vids, index, video_ids, empty = [], [], [], []
    videos_fn = _jit(self.ctx.preds["encode_candidate"], "candidate")
    for out, rows in corpus.stream(self.ctx, self.split, videos_fn, params,
                                   view=self.video_view, strings=("video_id",), stats=stats,
                                   empty=True):
      vids.append(out)
      index.append(rows["video_index"])
      video_ids.extend(rows["video_id"])
      empty.append(rows[corpus.EMPTY])
    return _concat(vids), np.concatenate(index), video_ids, np.concatenate(empty)

  def videos(self, params: Any) -> tuple[Any, list[str], np.ndarray]:
    """The split's videos as this evaluator ranks them, on the host: (candidate encodings
    [V, ...], video ids, [V] empty flags). Paired: ``paired``'s candidates; texts of their
    own: the ``video_view`` stream. What free-text queries rank against
    (``evaluation.query``)."""
    if self.query_view is None:
      _, cands, ids, empty, _ = self.paired(params)
      return cands, ids, empty
    vids, _, video_ids, empty = self._video_stream(params)
    return vids, video_ids, empty

  def separate(self, params: Any):
    """Texts of their own: (text encodings, video encodings, text -> video position, text
    ids, video ids, [V] empty flags, input stats), texts filtered by ``caption_index_file``."""
    stats = pipeline.InputStats()
    vids, index, video_ids, empty = self._video_stream(params, stats)
    texts_fn = _jit(self.ctx.preds["encode_query"], "query")
    texts, text_video, text_index = [], [], []
    for (out, idx), rows in corpus.stream(self.ctx, self.split, texts_fn, params,
                                          view=self.query_view, stats=stats):
      texts.append(out)
      text_video.append(rows["video_index"])
      text_index.append(idx)
    position = {int(v): p for p, v in enumerate(index)}
    text_video = np.asarray([position[int(v)] for v in np.concatenate(text_video)], np.int32)
    text_index = _concat(text_index)
    if self.caption_index is not None:
      self._check_designated(text_index, text_video, video_ids)
    within = text_index.get("caption_index")
    if within is None:   # the texts' order within their record
      within = np.zeros(len(text_video), np.int64)
      for v in np.unique(text_video):
        within[text_video == v] = np.arange(int((text_video == v).sum()))
    # Captions (not paragraphs) are named by their source index.
    lost = (self.dropped_captions or {}) if "caption_count" in text_index else {}
    text_ids = [f"{video_ids[v]}#{source_caption_index(int(i), lost.get(video_ids[v], ()))}"
                for v, i in zip(text_video, within)]
    return _concat(texts), vids, text_video, text_ids, video_ids, empty, stats

  def _check_designated(self, index: dict[str, np.ndarray], text_video: np.ndarray,
                        video_ids: list[str]) -> None:
    """Every video has an entry and its index names one of its stored texts (else
    ValueError naming the file)."""
    want, count = index["caption_index"], index["caption_count"]
    for what, bad in (("has no designated caption", want == -1),
                      ("has a caption index beyond its captions", want >= count),
                      ("has its designated caption {i} dropped by the converter (empty or no "
                       "tokens; the dataset's metadata extra.dropped_captions), so the "
                       "protocol's query does not exist; evaluate every caption "
                       "(caption_index_file='') or fix the caption and re-convert",
                       want == DROPPED)):
      if bad.any():
        first = video_ids[text_video[np.flatnonzero(bad)[0]]]
        what = what.format(i=self.caption_index.get(first))
        raise ValueError(f"{self.caption_index_file}: video {first!r} of split "
                         f"{self.split!r} {what} ({int(bad.sum())} such videos)")

  # -- running -------------------------------------------------------------------------

  def _name(self, metric: str) -> str:
    return f"{self.group}/{metric}" if self.group else metric

  def _rank(self, params: Any, queries: Any, cands: Any, targets: tuple[Any, Any],
            top_k: int) -> dict[str, scorer.ScorerResult]:
    """{prefix: ScorerResult} of both directions (``reverse_prefix`` "" skips the second):
    ``targets`` of the texts (None: row i is video i) and of the videos (None: row i is
    text i; [V, T] with -1 padding: any of a video's texts)."""
    mesh = corpus.ranking_mesh(self.ctx.mesh)
    out = {}
    for prefix, q, c, t, reverse in ((self.prefix, queries, cands, targets[0], False),
                                     (self.reverse_prefix, cands, queries, targets[1], True)):
      if not prefix:
        continue
      n_cand = jax.tree.leaves(c)[0].shape[0]
      if self.trim is not None and reverse:   # the texts are the candidates: cut once
        c = self.trim.cut(c, self.trim.lengths(c).max())
      score, start = corpus.score_fn(self.score, reverse), time.perf_counter()
      with jax.set_mesh(mesh):
        out[prefix] = scorer.rank_corpus(
            q, c, t, score, mesh=mesh, params=params,
            top_k=min(top_k, n_cand), query_block=self.blocks[0], cand_block=self.blocks[1],
            trim=None if reverse else self.trim)
      # XLA's count of one 8 x 8 block, scaled; with cut captions (trim) an upper bound.
      n_q = jax.tree.leaves(q)[0].shape[0]
      self.perf.add(n_q * n_cand * flops.pair_flops(score, q, c, params, grid=True),
                    time.perf_counter() - start)
    return out

  def _counts(self, stats: pipeline.InputStats, view: pipeline.View) -> dict[str, float]:
    """Examples a static limit cut, and segments that covered no feature row (where the
    view counts them), summed over processes."""
    out = {"truncated_examples": stats.truncated}
    if "empty_segments" in view.stat_keys:
      out["empty_segments"] = stats.empty_segments
    return {k: float(np.sum(multihost_utils.process_allgather(np.asarray(v))))
            for k, v in out.items()}

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Returns (metrics, what ``write`` needs)."""
    del step
    if self.observe_first:
      return self._run_observed(state)
    params = corpus.host_params(state)
    if self.query_view is None:
      queries, cands, ids, empty, stats = self.paired(state["params"])
      keep = corpus.non_empty(empty, ids, f"retrieval {self.split} (the video has nothing "
                                          "to encode)")
      queries, cands = corpus.take((queries, cands), keep)
      ids = [ids[i] for i in keep]
      ranked = self._rank(params, queries, cands, (None, None), self.top_k)
      metrics = {"num_examples": float(len(ids))}
      results = {"ranked": ranked, "ids": {self.prefix: (ids, ids),
                                           self.reverse_prefix: (ids, ids)}}
      view = self.ctx.view
    else:
      texts, vids, text_video, text_ids, video_ids, empty, stats = self.separate(
          state["params"])
      keep = corpus.non_empty(empty, video_ids, f"retrieval {self.split} (the video has "
                                                "nothing to encode)")
      position = np.full(len(video_ids), -1, np.int32)
      position[keep] = np.arange(keep.size)
      kept = np.flatnonzero(position[text_video] >= 0)
      texts, vids = corpus.take(texts, kept), corpus.take(vids, keep)
      text_video, text_ids = position[text_video[kept]], [text_ids[i] for i in kept]
      video_ids = [video_ids[i] for i in keep]
      per_video = np.bincount(text_video, minlength=len(video_ids))
      v2t = np.full((len(video_ids), max(int(per_video.max(initial=0)), 1)), -1, np.int32)
      fill = np.zeros(len(video_ids), np.int64)
      for row, v in enumerate(text_video):
        v2t[v, fill[v]] = row
        fill[v] += 1
      ranked = self._rank(params, texts, vids, (text_video, v2t), self.top_k)
      metrics = {"num_examples": float(len(text_ids)), "num_videos": float(len(video_ids))}
      results = {"ranked": ranked, "ids": {self.prefix: (text_ids, video_ids),
                                           self.reverse_prefix: (video_ids, text_ids)}}
      if self.weights is not None and "weight_probs" in texts:   # w/o HRM: no weights
        w = np.asarray(self.weights(params, texts["weight_probs"],
                                    vids["avail"][text_video]))
        experts = self.ctx.config.input.experts
        results["weights"] = {e: float(w[:, j].mean()) for j, e in enumerate(experts)}
        metrics.update({f"modality_weight/{e}": v for e, v in results["weights"].items()})
      view = self.query_view
    metrics.update({f"{p}/{k}": v for p, r in ranked.items() for k, v in r.metrics().items()})
    metrics["num_empty_videos"] = float(empty.sum())
    metrics.update(self._counts(stats, view))
    return {self._name(k): v for k, v in metrics.items()}, results

  def _run_observed(self, state: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Incomplete observation: the paired protocol for n = 1 … ``observe_first``."""
    params = corpus.host_params(state)
    curve: dict[str, dict[str, list[float]]] = {}
    metrics: dict[str, float] = {}
    ns = list(range(1, self.observe_first + 1))
    for n in ns:
      q, c, ids, empty, _ = self.paired(state["params"], self.observe(n, self.ctx.config.input))
      keep = corpus.non_empty(empty, ids, f"retrieval {self.split} n={n} (nothing to "
                                          "encode in the first n segments)")
      q, c = corpus.take((q, c), keep)
      metrics[self._name(f"num_empty_videos@n={n}")] = float(empty.sum())
      for direction, res in self._rank(params, q, c, (None, None), 0).items():
        for name, value in res.metrics().items():
          if name in self.metric_names:
            metrics[self._name(f"{direction}/{name}@n={n}")] = value
            curve.setdefault(direction, {}).setdefault(name, []).append(value)
    metrics[self._name("num_examples")] = float(len(ids))
    return metrics, {"curve": curve, "n": ns}

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    """Per-query top-K (``<prefix>_predictions.jsonl``), recall curves, the modality
    weights; with ``observe_first`` the recall-vs-n curve (json and png)."""
    stem = self.group or self.prefix
    if self.observe_first:
      with open(os.path.join(out_dir, f"{stem}_curve.json"), "w", encoding="utf-8") as f:
        json.dump({"n": results["n"], "step": step, **results["curve"]}, f, indent=2)
      if self.plot:
        retrieval.plot_observed_curve(results["n"], results["curve"],
                                      os.path.join(out_dir, f"{stem}_curve.png"),
                                      title=f"{self.split} (step {step})")
      return
    prefix = f"{self.group}_" if self.group else ""
    for direction, res in results["ranked"].items():
      queries, cands = results["ids"][direction]
      with open(os.path.join(out_dir, f"{prefix}{direction}_predictions.jsonl"), "w",
                encoding="utf-8") as f:
        for i, qid in enumerate(queries):
          f.write(json.dumps({
              "query": qid, "rank": float(res.ranks[i]),
              "top_k": [[cands[j], float(s)] for j, s in zip(res.top_indices[i],
                                                             res.top_scores[i])]}) + "\n")
    if results.get("weights"):
      with open(os.path.join(out_dir, f"{prefix}modality_weights.json"), "w",
                encoding="utf-8") as f:
        json.dump(results["weights"], f, indent=2)
    if self.plot:
      curves = {p: retrieval.recall_curve(r.ranks, max_rank=len(results["ids"][p][1]))
                for p, r in results["ranked"].items()}
      retrieval.plot_recall_curves(curves, os.path.join(out_dir, f"{prefix}recall_curve.png"),
                                   title=f"{self.split} (step {step})")


def load_caption_index(path: str) -> dict[str, int]:
  """{video_id: caption index} from a pickle (.pkl/.pickle) or JSON file.

  Raises:
    ValueError: no such file, or not a dict of str -> int >= 0 (names the file).
  """
  if not os.path.isfile(path):
    raise ValueError(f"caption_index_file={path!r}: no such file (a {{video_id: caption "
                     "index} pickle or JSON, e.g. MSR-VTT 1k-A's jsfusion_val_caption_idx.pkl "
                     "from MMT's or Collaborative Experts' MSR-VTT release; "
                     "caption_index_file='' ranks every caption instead)")
  if path.endswith((".pkl", ".pickle")):
    with open(path, "rb") as f:
      data = pickle.load(f)
  else:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  if not isinstance(data, dict) or not all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
      for v in data.values()):
    raise ValueError(f"{path}: expected a dict {{video_id: caption index (int >= 0)}}")
  return {str(k): int(v) for k, v in data.items()}


# ``stored_caption_index``'s value for a designated caption the converter dropped.
DROPPED = -2


def stored_caption_index(designated: dict[str, int], dropped: dict[str, list[int]] | None,
                         path: str) -> dict[str, int]:
  """Designated source caption indices -> positions among each record's stored captions.

  A converter that drops a caption (empty, no tokens) stores the others in order, so a
  designated index i is the stored caption i - (dropped indices below i);
  ``dropped`` (the dataset's metadata["extra"]["dropped_captions"], ``data_prep.mmt_experts``)
  names them per video.

  Args:
    designated: {video_id: source caption index} (``load_caption_index``).
    dropped: {video_id: dropped source indices}; None (a dataset that does not record them,
      e.g. converted before it did): read as none dropped, with a warning.
    path: the caption index file (the warning).

  Returns:
    {video_id: stored position, or ``DROPPED`` when the designated caption itself was
    dropped (the evaluator raises for a video of its split)}.
  """
  if dropped is None:
    logging.warning("%s: the dataset does not record which captions its converter dropped "
                    "(metadata extra.dropped_captions; re-convert with hvt-prepare): caption "
                    "indices are taken as positions among the stored captions", path)
    return dict(designated)
  out = {}
  for video_id, i in designated.items():
    lost = dropped.get(video_id, ())
    out[video_id] = DROPPED if i in lost else i - sum(j < i for j in lost)
  return out


def source_caption_index(stored: int, lost: Sequence[int]) -> int:
  """The source index of a record's ``stored``-th caption, given its dropped source indices
  (``stored_caption_index``'s inverse)."""
  for j in sorted(lost):
    if j <= stored:
      stored += 1
  return stored


def designated_view(view: pipeline.View, designated: dict[str, int]) -> pipeline.View:
  """``view`` (one example per text of a record) reduced to each record's designated text.

  Args:
    view: a per-row view (``per_row``), e.g. MCHA's every-caption view.
    designated: {video_id: index of the text among the record's rows}
      (``stored_caption_index``).

  Returns:
    A view with one example per record: row ``caption_index`` of ``view``'s examples (the
    same keys, so the same jitted text encoder applies), plus ``caption_index`` [] int32
    (-1 for a video without an entry, ``DROPPED``) and ``caption_count`` [] int32 (the
    record's texts).
    An index outside [0, caption_count) yields row 0: the evaluator checks both and raises,
    naming the file.
  """
  keys = tf.constant(list(designated), tf.string)
  values = tf.constant(list(designated.values()), tf.int32)
  table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)

  def fn(example: dict[str, Any], cfg: Any, seed: tf.Tensor | None = None):
    every = view.fn(example, cfg, seed)
    n = tf.shape(every["example_mask"])[0]
    want = table.lookup(example["video_id"])
    row = tf.clip_by_value(want, 0, tf.maximum(n - 1, 0))
    out = {k: v[row] for k, v in every.items()}
    out["caption_index"], out["caption_count"] = want, n
    return out

  return dataclasses.replace(view, fn=fn, per_row="")


def _concat(parts: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


@functools.cache
def _jit(encode: Any, side: str):
  """Jitted ``encode_candidate`` (``side="candidate"``, videos) or ``encode_query`` with the
  texts' position within their record (``caption_index``/``caption_count`` where the view
  has them)."""
  if side == "candidate":
    return jax.jit(encode)

  def texts(params, batch):
    index = {k: batch[k] for k in ("caption_index", "caption_count") if k in batch}
    return encode(params, batch), index

  return jax.jit(texts)


@functools.cache
def _weights_fn(modality_weights: Any):
  """Jitted per-text expert weights of (text, own video) pairs."""

  def weights(params, probs, avail):
    one = lambda p, a: modality_weights(params, {"weight_probs": p[None]},
                                        {"avail": a[None]})
    return jax.vmap(one)(probs, avail)[:, 0, 0]

  return jax.jit(weights)


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
  ``best`` and ``best_mode`` (``checkpoints.BEST_FIELDS``) are the trainer's and the eval
  job's, not the evaluator's.

  ``types``: the family's own evaluator types, available beside the shared ``EVALUATORS``.

  Everything an evaluator needs that can be checked without running it is checked here,
  so the trainer calls this before its first step: the type, the splits it reads (they
  must exist in the dataset and have records), and the evaluator's own options (its
  prediction function, the model and dataset fields it needs: each constructor raises).

  Raises:
    ValueError: naming the ``config.evals.<name>`` field that is wrong.
  """
  out, seen = [], {}
  available = {**EVALUATORS, **types}
  for name, cfg in config.get("evals", {}).items():
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in available:
      raise ValueError(f"config.evals.{name}.type={kind!r}; valid: {sorted(available)}")
    split = cfg.pop("split")
    for field in checkpoints.BEST_FIELDS:   # the run's best checkpoint: no evaluator option
      cfg.pop(field, None)
    _check_splits(ctx, name, cfg, splits or [split], flag=bool(splits))
    for s in (splits or [split]):
      try:
        out.append(available[kind](ctx, s, **cfg))
      except (TypeError, ValueError) as e:
        raise ValueError(f"config.evals.{name}: {e}") from None
    # Two evaluators of one split writing into one metric namespace (prefix / group):
    # known now, not only when their metrics meet after training (run_all).
    namespace = cfg.get("group") or cfg.get("prefix", kind)
    for s in (splits or [split]):
      other = seen.setdefault((s, namespace), name)
      if other != name:
        raise ValueError(f"config.evals.{other} and config.evals.{name} both write metrics "
                         f"of split {s!r} under {namespace!r}: give them different "
                         "prefixes (config.evals.<name>.prefix or .group)")
  return out


def due(evaluator: Any, step: int, last: bool) -> bool:
  """Whether ``evaluator`` runs after training step ``step``."""
  return last or bool(evaluator.log_steps and step % evaluator.log_steps == 0)


def run_all(evals: list[Any], state: dict[str, Any], step: int, writer: Any,
            workdir: str) -> dict[str, float]:
  """Runs ``evals``, merges each split's metrics into one metrics.json, writes predictions
  and plots, logs ``<split>/<metric>`` scalars; returns them. Evaluators with a ``perf``
  tally (``flops.Tally``: the retrieval ranking) add ``<split>/perf/ranking_flops``,
  ``_seconds``, ``_tflops_per_sec`` and, where the device's peak is known, ``_mfu`` to the
  logged scalars (not to metrics.json).

  Raises:
    ValueError: two evaluators of one split produce the same metric name (set ``prefix``).
  """
  by_split: dict[str, dict[str, float]] = {}
  ranking: dict[str, flops.Tally] = {}    # per split: the evaluators' ranking work
  for ev in evals:
    if hasattr(ev, "perf"):
      ev.perf.reset()
    metrics, results = ev.run(state, step)
    if hasattr(ev, "perf"):
      ranking.setdefault(ev.split, flops.Tally(ev.perf.peak, ev.perf.devices)).add(
          ev.perf.flops, ev.perf.seconds)
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
  perf = {f"{split}/perf/ranking_{k}": v for split, tally in ranking.items()
          for k, v in tally.metrics().items()}
  if perf:
    logging.info("eval perf at step %d: %s", step, ", ".join(
        f"{k}={v:.4g}" for k, v in perf.items()))
  writer.write_scalars(step, {**results, **perf})
  return results
