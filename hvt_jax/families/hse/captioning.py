"""Video captioning metrics and evaluator (HSE ECCV 2018 §4.3, Table 5).

``caption_metrics`` calls ``pycocoevalcap``'s scorers directly — BLEU@1–4, METEOR, ROUGE-L,
CIDEr(-D) on captions tokenised by its PTB tokenizer — not ``COCOEvalCap.evaluate``, whose
SPICE downloads Stanford CoreNLP at run time. The PTB tokenizer and METEOR run Java: without
a ``java`` on the PATH the evaluator stops at construction with one line saying so
(``tools/bootstrap.sh`` installs Debian's ``default-jre-headless`` where it can).

``CaptioningEvaluator`` (``"caption"``) runs an ``hse_captioner`` over a split: one caption
per ground-truth segment (the paper's setting: "We use the ground-truth proposal throughout
training and evaluation"), beam search (``config.model.beam_size``, 5 as the paper), scored
against that segment's reference sentence. ``baseline="nearest"`` also scores the
nearest-neighbour caption baseline: each segment gets the training sentence whose clip has
the most similar conditioning vector (cosine of [clip; video] embeddings), a reference point
for what the decoder adds. ``reference_splits`` (e.g. ``("val_1", "val_2")``): also score the
captions against every given reference set as the dense-captioning evaluation pairs them
(``dense_caption_metrics``; the paper: "we follow [17] and evaluate on the validation set
(val1 and val2)"), ``<prefix>/dense/...``. Metrics ``<prefix>/BLEU@1`` … ``<prefix>/CIDEr``
in percent (the scorers' values × 100, as Table 5 prints them), ``<prefix>/nearest/...`` for
the baseline;
predictions in the ActivityNet dense-captioning submission layout
(``{"version", "results": {video_id: [{"sentence", "timestamp": [start s, end s],
"scores": {metric: percent}}]}}``; ``scores`` are the caption's own sentence-level values,
for finding the worst captions; the dense-captioning evaluation reads only the first two).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
from absl import logging

from hvt_jax.input import reader
from hvt_jax.vocab import word_vocab
from hvt_jax.evaluation import corpus

METRICS = ("BLEU@1", "BLEU@2", "BLEU@3", "BLEU@4", "METEOR", "ROUGE-L", "CIDEr")


def check_java() -> None:
  """Raises RuntimeError (one line) when no Java runtime is on the PATH."""
  if shutil.which("java") is None:
    raise RuntimeError("captioning metrics need a Java runtime (pycocoevalcap's PTB tokenizer "
                       "and METEOR): install one, e.g. `apt-get install default-jre-headless`")


def caption_metrics(predictions: dict[str, str], references: dict[str, list[str]],
                    per_item: bool = False) -> Any:
  """BLEU@1–4, METEOR, ROUGE-L and CIDEr of one predicted caption per id.

  Args:
    predictions: {id: caption}.
    references: {id: [reference captions]}, the same ids, each with >= 1 reference.
    per_item: also return each id's own scores.

  Returns:
    {name: value in percent} for ``METRICS`` (corpus-level BLEU as pycocoevalcap computes
    it; CIDEr's document frequencies come from these references); with ``per_item``, the
    pair (that, {id: {name: percent}}) — the scorers' per-caption values (sentence-level
    BLEU, METEOR, ROUGE-L, CIDEr).

  Raises:
    ValueError: ids differ, a reference list is empty, or nothing to score.
    RuntimeError: no Java runtime.
  """
  scores, items = caption_metric_sets({"": predictions}, references)[""]
  return (scores, items) if per_item else scores


def caption_metric_sets(prediction_sets: dict[str, dict[str, str]],
                        references: dict[str, list[str]]
                        ) -> dict[str, tuple[dict[str, float], dict[str, dict[str, float]]]]:
  """``caption_metrics`` (with ``per_item``) of several prediction sets against the same
  references, each scored on its own, with one PTB tokenizer run and one METEOR
  process (each Java start costs seconds): {set name: (scores, per-id scores)}.

  Raises:
    ValueError: a set's ids differ from the references', a reference list is empty, or
      nothing to score.
    RuntimeError: no Java runtime.
  """
  for predictions in prediction_sets.values():
    if set(predictions) != set(references) or not predictions:
      raise ValueError(f"caption_metrics: {len(predictions)} predictions and "
                       f"{len(references)} references with different (or no) ids")
  if any(not refs for refs in references.values()):
    raise ValueError("caption_metrics: an id has no reference caption")
  check_java()
  # pylint: disable=g-import-not-at-top
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  from pycocoevalcap.meteor.meteor import Meteor
  from pycocoevalcap.rouge.rouge import Rouge
  from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
  names = list(prediction_sets)
  tokenized = PTBTokenizer().tokenize({   # one Java run: references, then every set
      **{(None, k): [{"caption": c} for c in v] for k, v in references.items()},
      **{(n, k): [{"caption": c}] for n in names for k, c in prediction_sets[n].items()}})
  gts = {k: tokenized[(None, k)] for k in references}
  meteor = Meteor()   # a java subprocess, ended when the object is collected
  results = {}
  for n in names:
    res = {k: tokenized[(n, k)] for k in gts}
    out, items = {}, {}
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    for i, (b, per) in enumerate(zip(bleu, bleu_items)):
      out[f"BLEU@{i + 1}"], items[f"BLEU@{i + 1}"] = b, per
    out["METEOR"], items["METEOR"] = meteor.compute_score(gts, res)
    out["ROUGE-L"], items["ROUGE-L"] = Rouge().compute_score(gts, res)
    out["CIDEr"], items["CIDEr"] = Cider().compute_score(gts, res)
    ids = list(gts)   # the scorers' order: the references' dict order
    results[n] = ({k: float(100.0 * out[k]) for k in METRICS},
                  {i: {k: float(100.0 * items[k][j]) for k in METRICS}
                   for j, i in enumerate(ids)})
  del meteor
  return results


def _tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
  inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
  union = max(a[1], b[1]) - min(a[0], b[0])
  return inter / union if union > 0 else float(a == b)


GARBAGE = "abc123!@#"   # the dense-captioning evaluation's reference for unmatched captions


def dense_caption_metrics(predictions: dict[str, list[tuple[tuple[float, float], str]]],
                          reference_sets: list[dict[str, list[tuple[tuple[float, float], str]]]],
                          tious: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
                          ) -> dict[str, float]:
  """Captions of timed segments scored against several reference sets, as ActivityNet's
  dense-captioning evaluation pairs them (Krishna et al. 2017, ``densevid_eval``'s
  ``evaluate_tiou``): for each tIoU threshold, every (prediction, reference) pair of the same
  video whose segments overlap with tIoU >= threshold, over every reference set, is one
  scored pair; a prediction that overlaps no reference of any set is paired with a garbage
  caption once; videos no reference set has are left out; the metrics are averaged over the
  thresholds. Difference: ``caption_metrics`` scores all pairs at corpus level, where the
  revision of densevid_eval we read averages each metric per video first.

  Args:
    predictions: {video_id: [((start s, end s), caption)]}.
    reference_sets: e.g. ActivityNet's val_1 and val_2, each {video_id: [((start, end),
      sentence)]}.
    tious: the thresholds (the evaluation's default 0.3, 0.5, 0.7, 0.9).

  Returns:
    {name: percent} for ``METRICS``, averaged over ``tious``.
  """
  per_tiou = []
  for tiou in tious:
    preds, refs = {}, {}
    for vid, items in predictions.items():
      if not any(vid in ref_set for ref_set in reference_sets):
        continue
      for i, (seg, caption) in enumerate(items):
        matched = [s for ref_set in reference_sets for ref_seg, s in ref_set.get(vid, ())
                   if _tiou(seg, ref_seg) >= tiou]
        for j, sentence in enumerate(matched or [GARBAGE]):
          preds[f"{vid}#{i}#{j}"], refs[f"{vid}#{i}#{j}"] = caption, [sentence]
    per_tiou.append(caption_metrics(preds, refs))
  return {k: float(np.mean([m[k] for m in per_tiou])) for k in METRICS}


def decode(tokens: np.ndarray, length: int, vocab: list[str]) -> str:
  """Word ids -> a caption string (the first ``length`` ids, <unk> kept as "<unk>")."""
  return " ".join(vocab[int(t)] for t in tokens[:length])


def reference_set(data_dir: str, split: str) -> dict[str, list[tuple[tuple[float, float], str]]]:
  """{video_id: [((start s, end s), sentence)]} of a converted split (every segment)."""
  out = {}
  for ex in reader.load_split(data_dir, split).as_numpy_iterator():
    out[ex["video_id"].decode()] = [((float(a), float(b)), s.decode())
                                    for (a, b), s in zip(ex["segments"], ex["sentences"])]
  return out


@functools.cache
def _generate_fn(generate_fn: Any, conditioning: Any, generate: bool = True):
  """(tokens, lengths) of the beam search when ``generate`` (else None), the paired-segment
  mask, the segments and the conditioning vectors of a batch."""
  def fn(params, batch):
    tokens, lengths, _ = generate_fn(params, batch) if generate else (None, None, None)
    paired = batch["clip_mask"] & batch["sentence_mask"]
    return tokens, lengths, paired, batch["caption_segments"], conditioning(params, batch)
  return jax.jit(fn)


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_captions(query: np.ndarray, train: np.ndarray, train_captions: list[str],
                     block: int = 1024) -> list[str]:
  """For each query vector [Q, D], the caption of the most cosine-similar train vector
  [N, D] (first on ties)."""
  train_u, out = _unit(train.astype(np.float32)), []
  for i in range(0, len(query), block):
    sims = _unit(query[i:i + block].astype(np.float32)) @ train_u.T
    out.extend(train_captions[j] for j in np.argmax(sims, axis=1))
  return out


class CaptioningEvaluator:
  """Captions for every ground-truth segment of a split, and their metrics (see module)."""

  def __init__(self, ctx: Any, split: str, *, pred: str = "generate",
               prefix: str = "caption", log_steps: int = 0, baseline: str = "none",
               train_split: str = "train", reference_splits: tuple[str, ...] = ()):
    if pred != "generate":
      raise ValueError(f"caption evaluator: pred={pred!r}; valid: ('generate',)")
    self.preds = (ctx.pred("generate", "caption"), ctx.pred("conditioning", "caption"))
    if baseline not in ("none", "nearest"):
      raise ValueError(f"caption evaluator: baseline={baseline!r}; valid: 'none', 'nearest'")
    check_java()
    self.ctx, self.split, self.prefix, self.log_steps = ctx, split, prefix, log_steps
    self.baseline, self.train_split = baseline, train_split
    self.reference_splits = tuple(reference_splits)
    for ref in self.reference_splits:
      if ref not in ctx.meta.get("splits", {}):
        raise ValueError(f"caption evaluator: reference split {ref!r} not in the dataset "
                         f"(splits: {sorted(ctx.meta.get('splits', {}))})")
    self.vocab = reader.load_vocab(ctx.data_dir)
    if self.vocab[word_vocab.PAD_ID] != word_vocab.PAD:
      raise ValueError(f"caption evaluator: dataset {ctx.data_dir} has no word vocabulary "
                       f"(id 0 is {self.vocab[0]!r}, not {word_vocab.PAD!r})")

  def _captions(self, split: str, params: Any, generate: bool = True):
    """Per real segment: (id, video id, [start, end] s, generated caption ("" without
    ``generate``: the nearest-neighbour baseline's train side needs no beam search),
    reference, conditioning vector)."""
    rows = []
    for (tokens, lengths, paired, segs, cond), host in corpus.stream(
        self.ctx, split, _generate_fn(*self.preds, generate), params,
        strings=("video_id", "references")):
      for b, vid in enumerate(host["video_id"]):
        refs = host["references"][b].split("\n")
        for c in np.flatnonzero(paired[b]):
          caption = decode(tokens[b, c], int(lengths[b, c]), self.vocab) if generate else ""
          rows.append((f"{vid}#{c}", vid, segs[b, c].tolist(), caption, refs[c], cond[b, c]))
    return rows

  def run(self, state: dict[str, Any], step: int) -> tuple[dict[str, float], dict[str, Any]]:
    params = state["params"]
    rows = self._captions(self.split, params)
    p = self.prefix
    metrics = {f"{p}/num_segments": float(len(rows))}
    if not rows:
      return metrics, {}
    empty = sum(not r[3] for r in rows)
    metrics[f"{p}/empty_captions"] = float(empty)
    if empty:
      logging.warning("caption evaluator: %d of %d generated captions are empty (<eos> first:"
                      " an undertrained decoder?)", empty, len(rows))
    refs = {r[0]: [r[4]] for r in rows}
    sets = {"": {r[0]: r[3] for r in rows}}
    if self.baseline == "nearest":
      train = self._captions(self.train_split, params, generate=False)
      nearest = nearest_captions(np.stack([r[5] for r in rows]),
                                 np.stack([r[5] for r in train]), [r[4] for r in train])
      sets["nearest/"] = {r[0]: c for r, c in zip(rows, nearest)}
    scored = caption_metric_sets(sets, refs)   # one pass of the Java scorers for both
    per_caption = scored[""][1]
    for tag, (scores, _) in scored.items():
      metrics.update({f"{p}/{tag}{k}": v for k, v in scores.items()})
    if self.reference_splits:
      preds: dict[str, list] = {}
      for r in rows:
        preds.setdefault(r[1], []).append((tuple(r[2]), r[3]))
      metrics.update({f"{p}/dense/{k}": v for k, v in dense_caption_metrics(
          preds, [reference_set(self.ctx.data_dir, s) for s in self.reference_splits]
      ).items()})
    return metrics, {"rows": [(*r[:5], per_caption[r[0]]) for r in rows]}

  def write(self, out_dir: str, step: int, results: dict[str, Any]) -> None:
    if not results:
      return
    out: dict[str, list[dict[str, Any]]] = {}
    for _, vid, seg, caption, _, scores in results["rows"]:
      out.setdefault(vid, []).append({"sentence": caption, "timestamp": seg, "scores": scores})
    with open(os.path.join(out_dir, f"{self.prefix}_predictions.json"), "w",
              encoding="utf-8") as f:
      json.dump({"version": "VERSION 1.0", "results": out,
                 "external_data": {"used": False, "details": f"hvt_jax step {step}"}}, f)
