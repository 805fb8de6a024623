"""HSE beyond retrieval (HSE ECCV 2018 §4.2 Fig. 4, §4.4 Table 6, Fig. 5): evaluators.

Registered in ``evaluators.EVALUATORS`` and declared like every evaluator in
``config.evals.<name>`` (``type``, ``split``, ``prefix``, ``log_steps`` + options):

* ``"incomplete"`` (``IncompleteRetrievalEvaluator``): retrieval when only the first n
  clips and the first n sentences are observed, n = 1 … ``max_observed``;
  metrics ``<prefix>/p2v/R@1@n=2`` …, ``<prefix>_curve.json`` and ``<prefix>_curve.png``.
* ``"zeroshot"`` (``ZeroShotEvaluator``): zero-shot action recognition with the low-level
  encoders; metrics ``<prefix>/top1``, ``<prefix>/top5``, ``<prefix>/oov_rate`` ….
* ``"embeddings"`` (``EmbeddingPlotEvaluator``): a t-SNE picture of the clip and sentence
  embeddings of a split, ``embeddings_tsne.png``.

They work for HSE and FSE (model names ``hse``/``fse``, the HSE view) and stream and rank
through ``evaluation.corpus``, as the retrieval evaluator does. Those that rank leave out
the videos that keep no clip (the view's ``empty_video``: no segment covers a feature row),
as the retrieval evaluator does and for its reason (``evaluators.RetrievalEvaluator``):
counted in ``<prefix>/num_empty_videos``, named in a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from absl import logging
from flax import nnx

from data_prep import reader, text
from hvt_jax import losses
from hvt_jax.evaluation import corpus, retrieval, scorer
from hvt_jax.input import hse_view, ops, pipeline

_HSE_FAMILY = ("hse", "fse")


def _check_family(setup: Any, kind: str) -> None:
  name = setup.config.model.name
  if name not in _HSE_FAMILY:
    raise ValueError(f"{kind} evaluator: model {name!r} is not HSE/FSE (valid: "
                     f"{_HSE_FAMILY})")


# --------------------------------------------------------------------------------------
# Input: the HSE view of a record observed up to its first n clips/sentences.


def observe_first(example: dict[str, Any], cfg: Any, n: int | None,
                  seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """The HSE view (``hse_view.hse_view``) of a record of which only the first ``n``
  segments (clips) and ``n`` sentences are observed; ``n=None``: the whole record.

  The record, not the batch, is cut, so every input is consistent with the observed part:
    * clips/sentences: the record's first n segments and sentences (stored order: time order
      in ActivityNet Captions and the demo); those beyond n are masked exactly as padding
      (``clip_mask``, ``sentence_mask``, ``clip_frame_mask``, ``sentence_token_mask`` False,
      zero frames and tokens). A segment that covers no feature row counts as observed
      but gives no clip, as in the full view.
    * paragraph context (``paragraph_tokens``): the observed sentences' tokens only.
    * video context (``video_frames``): rows subsampled (``max_video_frames``,
      ``frame_sampling``) from the observed clips' time span, first row of the earliest to
      last row of the latest observed clip (gaps between them included); no rows when none
      of them covers a row.
  A record with at most n segments is not cut at all (a video with fewer clips than n uses
  all it has, its whole-video context included), so n >= every record's number of
  segments gives exactly the full view, and the full retrieval metrics.
  Needs ``cfg.clip_source == "segments"`` (uniform proposals have no "first n sentences").
  """
  if n is None:
    return hse_view.hse_view(example, cfg, seed)
  if n < 1:
    raise ValueError(f"observe_first: n={n}, need n >= 1")
  if cfg.get("clip_source", "segments") != "segments":
    raise ValueError("incomplete observations need input.clip_source='segments'")
  segments = example["segments"]
  cut = tf.shape(segments)[0] > n
  rec = dict(example)
  rec["segments"], rec["tokens"] = segments[:n], example["tokens"][:n]
  out = dict(hse_view.hse_view(rec, cfg, seed))
  feats = example[f"features/{cfg.modality}"]
  start, end, valid = ops.time_to_rows(segments[:n], example[f"timestamps/{cfg.modality}"],
                                       example["duration"], cfg.clip_rule,
                                       cfg.get("zero_length", "keep"))
  any_valid = tf.reduce_any(valid)
  lo = tf.where(any_valid, tf.reduce_min(tf.where(valid, start, tf.int32.max)), 0)
  hi = tf.where(any_valid, tf.reduce_max(tf.where(valid, end, -1)), -1)
  idx, mask = ops.sample_rows(tf.reshape(lo, [1]), tf.reshape(hi, [1]),
                              cfg.max_video_frames, cfg.get("frame_sampling", "authors"))
  frames = tf.gather(feats, idx[0]) * tf.cast(mask[0], feats.dtype)[:, None]
  out["video_frames"] = tf.where(cut, frames, out["video_frames"])
  out["video_frame_mask"] = tf.where(cut, mask[0], out["video_frame_mask"])
  return out


def _view(n: int | None = None, with_label: bool = False) -> pipeline.View:
  """The HSE view observed up to n clips/sentences, optionally carrying the host-side
  ``label`` string."""

  def fn(example, cfg, seed):
    out = observe_first(example, cfg, n, seed)
    if with_label:
      out["label"] = example["label"]
    return out

  base = pipeline.get_view("hse")
  return dataclasses.replace(base, fn=fn, host_keys=("label",) if with_label else ())


def instance_view(example: dict[str, Any], cfg: Any,
                  seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """One example per labelled action instance of a record (``instances/segments`` seconds,
  ``instances/labels``), cut as the whole video is for zero-shot recognition: the instance's
  feature rows (``ops.time_to_rows`` with ``cfg.clip_rule``/``zero_length``) subsampled to
  ``max_video_frames`` (``ops.sample_rows`` with ``cfg.frame_sampling``).

  Returns:
    [I, ...] along the leading axis: video_frames [I, Fv, D] float32 (zeros where masked),
    video_frame_mask [I, Fv] bool, example_mask [I] (True), and the host-side label [I]
    string, "" for an instance that covers no feature row (all its frames masked; the
    evaluator counts it).
  """
  del seed  # Deterministic.
  feats = example[f"features/{cfg.modality}"]
  start, end, valid = ops.time_to_rows(example["instances/segments"],
                                       example[f"timestamps/{cfg.modality}"],
                                       example["duration"], cfg.clip_rule,
                                       cfg.get("zero_length", "keep"))
  idx, mask = ops.sample_rows(start, end, cfg.max_video_frames,
                              cfg.get("frame_sampling", "authors"))
  mask = mask & valid[:, None]
  frames = tf.gather(feats, idx) * tf.cast(mask, feats.dtype)[..., None]
  labels = tf.where(valid, example["instances/labels"], "")
  return {"video_frames": frames, "video_frame_mask": mask, "label": labels,
          "example_mask": tf.ones_like(valid)}


# --------------------------------------------------------------------------------------
# Model pieces: the low (clip/sentence) level of HSE, or FSE's single level.


@functools.cache
def _video_low_fn(graphdef: Any):
  def fn(params, batch):
    model = nnx.merge(graphdef, params)
    return losses.unit(model.encode_clip_level(batch["video_frames"],
                                                  batch["video_frame_mask"]))
  return jax.jit(fn)


@functools.cache
def _text_low_fn(graphdef: Any):
  def fn(params, tokens, extra_words=None):
    model = nnx.merge(graphdef, params)
    return losses.unit(model.encode_sentence_level(tokens, tokens > 0, extra_words))
  return jax.jit(fn)


@functools.cache
def _levels_fn(graphdef: Any):
  """Clip and sentence embeddings (HSE) or video and paragraph (FSE), unit-normalised, with
  their masks."""

  def fn(params, batch):
    model = nnx.merge(graphdef, params)
    out = model.embed(batch)
    if "clips" in out:
      return dict(clips=losses.unit(out["clips"]), clip_mask=batch["clip_mask"],
                  sentences=losses.unit(out["sentences"]), sentence_mask=batch["sentence_mask"])
    ones = jnp.ones(out["video"].shape[:1] + (1,), bool)
    return dict(clips=losses.unit(out["video"])[:, None], clip_mask=ones,
                sentences=losses.unit(out["paragraph"])[:, None], sentence_mask=ones)

  return jax.jit(fn)


# --------------------------------------------------------------------------------------
# 1. Retrieval from incomplete observations (Fig. 4).


class IncompleteRetrievalEvaluator:
  """Paragraph <-> video retrieval observing only the first n clips and n sentences (HSE
  §4.2, Fig. 4), for n = 1 … ``max_observed`` (default ``config.input.max_clips``).

  Each n streams the split through ``observe_first`` (what is cut, including the context
  inputs, is documented there), encodes with the model's ``encode_query``/
  ``encode_candidate`` and ranks with the device-side scorer, as the retrieval evaluator.
  Metrics: ``<prefix>/<dir>/<R@1|R@5>@n=<n>`` for dir p2v and v2p (``metrics`` option
  selects the ranking metrics kept), ``<prefix>/num_examples`` (the split's videos) and
  ``<prefix>/num_empty_videos@n=<n>``: the videos whose first n segments give no clip,
  left out of that n's ranking on both sides (their embeddings would be built from no
  clip; ``corpus.non_empty``). At n >= every video's number of segments the numbers equal
  the retrieval evaluator's.
  """

  def __init__(self, setup: Any, split: str, *, pred: str = "score",
               prefix: str = "incomplete", max_observed: int | None = None,
               metrics: tuple[str, ...] = ("R@1", "R@5"), plot: bool = True,
               log_steps: int = 0, query_block: int = 256, cand_block: int = 1024):
    _check_family(setup, "incomplete")
    if pred != "score":
      raise ValueError(f"incomplete evaluator: pred={pred!r}; valid: ('score',)")
    if setup.config.input.get("clip_source", "segments") != "segments":
      raise ValueError("incomplete evaluator needs config.input.clip_source='segments'")
    self.setup, self.split, self.prefix, self.plot = setup, split, prefix, plot
    self.max_observed = int(max_observed or setup.config.input.max_clips)
    self.metric_names, self.log_steps = tuple(metrics), log_steps
    self.blocks = (query_block, cand_block)

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    params = corpus.host_params(state)
    encode = corpus.encode_fn(self.setup.graphdef)
    curve: dict[str, dict[str, list[float]]] = {}
    metrics: dict[str, float] = {}
    for n in range(1, self.max_observed + 1):
      view = _view(n)
      qs, cs, ids, empty = [], [], [], []
      for (q, c), rows in corpus.stream(self.setup, self.split, encode, params, view=view,
                                        strings=("video_id",), empty=True):
        qs.append(q["embedding"])
        cs.append(c["embedding"])
        ids.extend(rows["video_id"])
        empty.append(rows[corpus.EMPTY])
      empty = np.concatenate(empty)
      keep = corpus.non_empty(empty, ids, f"incomplete {self.split} n={n} (no clip in the "
                                          "first n segments)")
      q, c = np.concatenate(qs)[keep], np.concatenate(cs)[keep]
      metrics[f"{self.prefix}/num_empty_videos@n={n}"] = float(empty.sum())
      ranked = corpus.rank(self.setup, {"embedding": q}, {"embedding": c}, params,
                           ("p2v", "v2p"), top_k=0, blocks=self.blocks)
      for direction, res in ranked.items():
        for name, value in res.metrics().items():
          if name in self.metric_names:
            metrics[f"{self.prefix}/{direction}/{name}@n={n}"] = value
            curve.setdefault(direction, {}).setdefault(name, []).append(value)
    metrics[f"{self.prefix}/num_examples"] = float(len(ids))
    return metrics, {"curve": curve, "n": list(range(1, self.max_observed + 1)),
                     "step": step}

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    """``<prefix>_curve.json`` ({n, p2v: {R@1: [...]}, ...}) and ``<prefix>_curve.png``."""
    with open(os.path.join(out_dir, f"{self.prefix}_curve.json"), "w",
              encoding="utf-8") as f:
      json.dump({"n": results["n"], "step": step, **results["curve"]}, f, indent=2)
    if self.plot:
      plot_incomplete_curve(results["n"], results["curve"],
                            os.path.join(out_dir, f"{self.prefix}_curve.png"),
                            title=f"{self.setup.config.model.name} {self.split} "
                                  f"(step {step})")


def plot_incomplete_curve(ns: list[int], curve: dict[str, dict[str, list[float]]],
                          path: str, title: str = "") -> None:
  """Recall vs number of observed clips/sentences (as HSE Fig. 4), one line per
  (direction, metric)."""
  with retrieval.png_figure(path, title) as (_, ax):
    for direction, by_metric in curve.items():
      for name, values in by_metric.items():
        ax.plot(ns, values, marker="o", label=f"{direction} {name}")
    ax.set_xlabel("observed clips / sentences")
    ax.set_ylabel("Recall (%)")
    ax.set_xticks(ns)
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")


# --------------------------------------------------------------------------------------
# 2. Zero-shot action recognition (Table 6, left).


def encode_labels(labels: list[str], vocab: list[str], filled: list[str] = ()
                  ) -> tuple[np.ndarray, float]:
  """Class names -> ([K, L] int32 word ids, 0-padded; OOV rate in percent of label words).

  Names are tokenised as the dataset's sentences (``data_prep.text.word_tokenize``); a word
  missing from the vocabulary is ``filled[j]``'s id V + j when listed there (a vector from
  outside the vocabulary, ``extra_words``), else ``<unk>`` (counted in the OOV rate).
  """
  index = {t: i for i, t in enumerate(vocab)}
  extra = {w: len(vocab) + j for j, w in enumerate(filled)}
  words = [text.word_tokenize(label) for label in labels]
  total = sum(len(w) for w in words)
  oov = sum(w not in index and w not in extra for ws in words for w in ws)
  ids = [[index.get(w, extra.get(w, index[text.UNK])) for w in ws] or [index[text.UNK]]
         for ws in words]
  out = np.zeros((len(labels), max(map(len, ids), default=1)), np.int32)
  for i, row in enumerate(ids):
    out[i, :len(row)] = row
  return out, 100.0 * oov / max(total, 1)


def glove_fill(labels: list[str], vocab: list[str], path: str,
               dim: int) -> tuple[list[str], np.ndarray]:
  """The label words outside ``vocab`` that the vectors file ``path`` has, and their
  vectors ([M, dim] float32): what ``word_vectors`` fills instead of ``<unk>``."""
  from data_prep import embeddings  # pylint: disable=g-import-not-at-top
  index = set(vocab)
  oov = sorted({w for label in labels for w in text.word_tokenize(label)} - index)
  if not oov:
    return [], np.zeros((0, dim), np.float32)
  # oov_std=0: words the file lacks get zero rows, so the found ones are the nonzero rows.
  matrix, _ = embeddings.load_word_vectors(path, [text.PAD, text.UNK, *oov], dim=dim,
                                           oov_std=0.0)
  found = [i for i in range(2, len(oov) + 2) if np.any(matrix[i])]
  return [oov[i - 2] for i in found], matrix[found]


def zero_shot_metrics(video_emb: np.ndarray, labels: list[str], class_emb: np.ndarray,
                      classes: list[str], mesh: Any, blocks: tuple[int, int] = (256, 256),
                      unit: str = "videos"
                      ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """Top-1/top-5 accuracy (percent) of unit video embeddings [N, D] with class names
  ``labels`` [N] against unit class embeddings [K, D] (``classes``, same order), ranked by
  cosine on the device-side scorer (exact ranks, ties at their average rank).

  Returns:
    ({top1, top5, mean_class_top1 (per-class top-1 averaged over the classes present),
    chance_top1 (100 / K), majority_top1 (always answering the split's most frequent class:
    a reference, it peeks at the label distribution), num_classes, num_<unit> (N)},
    {class: {<unit>, top1}}); ``unit`` names what the N rows are ("videos", "instances").
  """
  index = {c: i for i, c in enumerate(classes)}
  target = np.asarray([index[label] for label in labels], np.int32)
  with jax.set_mesh(mesh):
    res = scorer.rank_corpus(np.asarray(video_emb, np.float32),
                             np.asarray(class_emb, np.float32), target, scorer.dot_score,
                             mesh=mesh, top_k=1, query_block=blocks[0], cand_block=blocks[1])
  ranked = res.metrics()
  per_class = {c: {unit: int((target == i).sum()),
                   "top1": float(100.0 * np.mean(res.ranks[target == i] <= 1))}
               for i, c in enumerate(classes) if (target == i).any()}
  counts = np.bincount(target, minlength=len(classes))
  return {"top1": ranked["R@1"], "top5": ranked["R@5"],
          "mean_class_top1": float(np.mean([v["top1"] for v in per_class.values()])),
          "chance_top1": 100.0 / len(classes),
          "majority_top1": float(100.0 * counts.max() / len(target)),
          "num_classes": float(len(classes)), f"num_{unit}": float(len(target))}, per_class


class ZeroShotEvaluator:
  """Zero-shot action recognition with the low-level embeddings (HSE §4.4, Table 6 left).

  Classes are encoded as sentences by the sentence-level text encoder (HSE ``text_low``
  over the label's word ids in the dataset's word vocabulary; unknown words -> ``<unk>``,
  reported as ``<prefix>/oov_rate``, percent of label words); videos by the clip-level
  video encoder (HSE ``video_low``; "we take the raw video and apply the clip-level video
  encoder", §4.4). FSE has one level: its video and text encoders play both roles. Cosine
  similarity, no re-training; ranked by the device-side scorer (videos are queries, classes
  candidates).

  ``videos`` says what a video is:
    * ``"whole"`` (default; the paper's "raw video"): the whole video, the view's
      ``video_frames`` (``max_video_frames`` rows subsampled uniformly), labelled by the
      records' ``label`` field (``hvt-prepare activitynet_labels`` and the demo write it);
      videos without a label are left out (``<prefix>/num_unlabeled``).
    * ``"instances"``: each labelled action instance (the records' ``instances``: ActivityNet
      v1.3's annotations, the demo's clips), its own rows subsampled the same way
      (``instance_view``); instances that cover no feature row are left out
      (``<prefix>/num_empty_instances``). Datasets written before instances were part of the
      schema must be converted again (a ValueError says so).
  With ``"whole"``, videos that keep no clip (the view's ``empty_video``) are left out too
  (``<prefix>/num_empty_videos``): the same videos every HSE/FSE ranking leaves out.
  Classes = the sorted distinct non-empty labels of the evaluated videos (not train + split:
  a class no evaluated video has would only add distractors). Metrics: ``<prefix>/top1``,
  ``<prefix>/top5``, ``<prefix>/mean_class_top1`` (percent), the references
  ``<prefix>/chance_top1`` (100/K) and ``<prefix>/majority_top1`` (``zero_shot_metrics``),
  ``<prefix>/oov_rate``, counts ``<prefix>/num_classes`` and ``<prefix>/num_videos`` (or
  ``num_instances``); writes ``<prefix>_per_class.json``.

  ``word_vectors`` (a GloVe/word2vec text file, ``data_prep.embeddings``): the paper relies
  on GloVe for label words the training captions never had ("as we are using pre-trained
  word vector (GloVe), it allows the transfer to unseen actions"). With it the evaluator
  also reports the classes encoded with those words' vectors in place of ``<unk>``
  (``<prefix>/glove/top1`` …, ``<prefix>/glove/oov_rate``: words neither in the vocabulary
  nor the file, ``<prefix>/glove/filled_words``); the plain metrics stay those without.
  The file's dimension must be the model's word dimension.
  """

  VIDEOS = ("whole", "instances")

  def __init__(self, setup: Any, split: str, *, pred: str = "low_level",
               prefix: str = "zeroshot", log_steps: int = 0, query_block: int = 256,
               cand_block: int = 256, word_vectors: str = "", videos: str = "whole"):
    _check_family(setup, "zeroshot")
    if pred != "low_level":
      raise ValueError(f"zeroshot evaluator: pred={pred!r}; valid: ('low_level',)")
    if videos not in self.VIDEOS:
      raise ValueError(f"zeroshot evaluator: videos={videos!r}; valid: {self.VIDEOS}")
    if videos == "instances" and "instances" not in setup.meta:
      raise ValueError(f"zeroshot evaluator (videos='instances'): dataset {setup.data_dir} "
                       "has no instances field (written before it was part of the schema); "
                       "convert it again")
    self.videos = videos
    if word_vectors and not os.path.exists(word_vectors):
      raise ValueError(f"zeroshot evaluator: word_vectors file {word_vectors!r} not found")
    self.setup, self.split, self.prefix, self.log_steps = setup, split, prefix, log_steps
    self.blocks = (query_block, cand_block)
    self.word_vectors = word_vectors

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    params, graphdef = corpus.host_params(state), self.setup.graphdef
    p, unit = self.prefix, "videos" if self.videos == "whole" else "instances"
    if self.videos == "whole":
      view, unlabeled = _view(None, with_label=True), f"{p}/num_unlabeled"
    else:
      view = pipeline.View(instance_view, per_row="instances/labels", host_keys=("label",))
      unlabeled = f"{p}/num_empty_instances"
    whole = unit == "videos"
    videos, labels, ids, empty = [], [], [], []
    if whole or self.setup.meta["instances"].get(self.split, 0):
      for emb, rows in corpus.stream(self.setup, self.split, _video_low_fn(graphdef), params,
                                     view=view, strings=("label", "video_id"), empty=whole):
        videos.append(emb)
        labels.extend(rows["label"])
        ids.extend(rows["video_id"])
        empty.extend(rows.get(corpus.EMPTY, ()))
    metrics = {}
    if whole:
      keep = corpus.non_empty(np.asarray(empty, bool), ids, f"zeroshot {self.split} (no clip "
                                                            "covers a feature row)")
      videos, labels = [np.concatenate(videos)[keep]], [labels[i] for i in keep]
      metrics[f"{p}/num_empty_videos"] = float(len(ids) - keep.size)
    labelled = np.asarray([bool(label) for label in labels], bool)
    classes = sorted({label for label in labels if label})
    metrics.update({f"{p}/num_classes": float(len(classes)),
                    unlabeled: float((~labelled).sum())})
    if not classes:
      logging.warning("zeroshot evaluator: split %r has no labelled %s (records' %s field)",
                      self.split, unit, "`label`" if unit == "videos" else "`instances`")
      return metrics, {}
    vocab = reader.load_vocab(self.setup.data_dir)
    videos = np.concatenate(videos)[labelled]
    labels = [label for label in labels if label]
    mesh = corpus.ranking_mesh(self.setup.mesh)
    variants = [("", [], None)]
    if self.word_vectors:
      dim = int(self.setup.config.model.word_dim)
      filled, vectors = glove_fill(classes, vocab, self.word_vectors, dim)
      variants.append(("glove/", filled, jnp.asarray(vectors)))
      metrics[f"{p}/glove/filled_words"] = float(len(filled))
    results = {}
    for tag, filled, vectors in variants:
      tokens, oov = encode_labels(classes, vocab, filled)
      class_emb = np.asarray(_text_low_fn(graphdef)(params, jnp.asarray(tokens), vectors))
      scores, per_class = zero_shot_metrics(videos, labels, class_emb, classes, mesh,
                                            self.blocks, unit)
      metrics.update({f"{p}/{tag}{k}": v for k, v in scores.items()})
      metrics[f"{p}/{tag}oov_rate"] = oov
      results.setdefault("per_class", per_class)
    return metrics, results

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    if results:
      with open(os.path.join(out_dir, f"{self.prefix}_per_class.json"), "w",
                encoding="utf-8") as f:
        json.dump({"step": step, **results}, f, indent=2, sort_keys=True)


# --------------------------------------------------------------------------------------
# 3. Embedding pictures (Fig. 5).


def tsne(x: np.ndarray, perplexity: float = 30.0, iterations: int = 500,
         seed: int = 0) -> np.ndarray:
  """2-D t-SNE of [N, D] points with scikit-learn's ``TSNE`` (PCA init, seeded); the
  perplexity is capped at (N - 1) / 3 so a small picture still works."""
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  x = np.asarray(x, np.float64)
  perplexity = float(min(perplexity, max(1.0, (x.shape[0] - 1) / 3.0)))
  return TSNE(2, perplexity=perplexity, init="pca", random_state=seed,
              max_iter=max(iterations, 250)).fit_transform(x)


def plot_embeddings(points: np.ndarray, colour: list[str], kind: list[str], path: str,
                    title: str = "") -> None:
  """Scatter of 2-D points coloured by group (video or action class), marker by kind
  (clip: circle, sentence: triangle)."""
  groups = sorted(set(colour))
  with retrieval.png_figure(path, title, figsize=(6, 5)) as (plt, ax):
    cmap = plt.get_cmap("tab20" if len(groups) <= 20 else "hsv")
    colour_of = {g: cmap(i / max(len(groups), 1) if len(groups) > 20 else i % 20)
                 for i, g in enumerate(groups)}
    for k, marker in (("clip", "o"), ("sentence", "^")):
      sel = [i for i, kk in enumerate(kind) if kk == k]
      if sel:
        ax.scatter(points[sel, 0], points[sel, 1], marker=marker, s=18,
                   c=[colour_of[colour[i]] for i in sel], label=k, alpha=0.8,
                   edgecolors="none")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best")


class EmbeddingPlotEvaluator:
  """t-SNE of the clip and sentence embeddings of the first ``max_videos`` videos of a split
  (HSE Fig. 5), coloured by ``colour_by``: "auto" = the video's action class when the
  record has a label, else the video; "label"; "video" (a video's clips all take its one
  label, though they may show other actions);
  writes ``embeddings_tsne.png`` (and the 2-D points, ``embeddings_tsne.json``). FSE has no
  clip/sentence level: its video and paragraph embeddings are drawn instead. Metric
  ``<prefix>/num_points``.
  """

  def __init__(self, setup: Any, split: str, *, pred: str = "embed",
               prefix: str = "embeddings", max_videos: int = 40, perplexity: float = 30.0,
               iterations: int = 500, colour_by: str = "auto", log_steps: int = 0):
    _check_family(setup, "embeddings")
    if pred != "embed":
      raise ValueError(f"embeddings evaluator: pred={pred!r}; valid: ('embed',)")
    if colour_by not in ("auto", "label", "video"):
      raise ValueError(f"embeddings evaluator: colour_by={colour_by!r}; valid: 'auto' "
                       "(label when the record has one, else video), 'label', 'video'")
    self.colour_by = colour_by
    self.setup, self.split, self.prefix, self.log_steps = setup, split, prefix, log_steps
    self.max_videos, self.perplexity, self.iterations = max_videos, perplexity, iterations

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    params, graphdef = corpus.host_params(state), self.setup.graphdef
    points, colour, kind, videos = [], [], [], 0
    for out, host in corpus.stream(self.setup, self.split, _levels_fn(graphdef), params,
                                   view=_view(None, with_label=True), strings=("label",)):
      for b in range(len(host["video_index"])):
        if videos >= self.max_videos:
          break
        group = f"video {int(host['video_index'][b])}"
        if self.colour_by != "video":
          group = host["label"][b] or ("(no label)" if self.colour_by == "label" else group)
        for k, emb, mask in (("clip", "clips", "clip_mask"),
                             ("sentence", "sentences", "sentence_mask")):
          rows = out[emb][b][out[mask][b]]
          points.extend(rows)
          colour.extend([group] * len(rows))
          kind.extend([k] * len(rows))
        videos += 1
      if videos >= self.max_videos:
        break
    xy = tsne(np.asarray(points), self.perplexity, self.iterations) if points else None
    return ({f"{self.prefix}/num_points": float(len(points))},
            {"xy": xy, "colour": colour, "kind": kind})

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    if results["xy"] is None:
      return
    with open(os.path.join(out_dir, f"{self.prefix}_tsne.json"), "w", encoding="utf-8") as f:
      json.dump({"step": step, "xy": results["xy"].tolist(), "group": results["colour"],
                 "kind": results["kind"]}, f)
    plot_embeddings(results["xy"], results["colour"], results["kind"],
                    os.path.join(out_dir, f"{self.prefix}_tsne.png"),
                    title=f"{self.setup.config.model.name} {self.split} (step {step})")


EVALUATORS = {"incomplete": IncompleteRetrievalEvaluator, "zeroshot": ZeroShotEvaluator,
              "embeddings": EmbeddingPlotEvaluator}
