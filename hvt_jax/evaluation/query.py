"""Free-text queries against an evaluated corpus: ``hvt-eval ... --query TEXT``.

A query goes the way the split's own texts go through its evaluator, from text on:

1. Tokens: the run's tokenizer, read from its dataset (``metadata.json``'s ``tokenizer``
   and ``vocab.txt``): the word tokenizer (``word_vocab.encode_words``, out-of-vocabulary
   words -> ``<unk>``) or WordPiece (``wordpiece.WordPieceTokenizer`` over the stored
   vocabulary, cased or not as the metadata says). A query that tokenises to nothing, or
   to unknown tokens only, is an error.
2. Model inputs: the evaluator's query view applied to a record holding the query's
   sentences (``_record``): a view with one example per sentence (HAMMER/FLAT's
   ``query``, MCHA's ``caption``) takes the whole query as one sentence; a view with one
   example per record (HSE/FSE's paired view, MCHA's ``paragraph``) takes the query's
   sentences (split after ``.``, ``!``, ``?``) as a record's paragraph, every sentence with
   a one-row placeholder clip, so none is dropped (the paired view's video side is not
   used). Then the model's ``encode_query``.
3. Ranking, by the evaluator's own prediction functions and ranking: the retrieval
   evaluator's ``pred`` score on the device-side scorer (``scorer.rank_corpus``, its blocks
   and token trim); the moments evaluator's two stages (``moments.predict``: VR over every
   video, then ``localize`` in the top ``max(top_k_videos, --top-k)`` videos, its
   ``moment_ranking`` and ``max_moment_seconds``), so a query's moments are those the
   evaluator would list for the same text.

Every evaluator of the split that ranks videos for a text answers (retrieval without
``observe_first``; moments). Empty videos are left out as the evaluators leave them out;
a moments evaluator's ``max_queries``/``max_videos`` subsample does not apply (the query
ranks every video of the split).

The corpus side (the split's video encodings, from the evaluator's own stream:
``RetrievalEvaluator.videos``, ``MomentEvaluator.videos``) is cached per checkpoint step,
split and evaluator in ``<workdir>/eval/<split>/cache/step_<N>/<evaluator>.npz``
(``corpus.save_encodings``: written atomically by process 0; never under
``checkpoints/``), with a fingerprint of the checkpoint (its step and orbax commit time),
the model and input config and the evaluator; a cache with another fingerprint is encoded
again and replaced. Caches of steps that no longer have a complete checkpoint are removed.
So repeated queries against one checkpoint cost one text encoding and one ranking.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from hvt_jax import checkpoints
from hvt_jax.evaluation import corpus, evaluators, moments, scorer
from hvt_jax.input import pipeline, reader
from hvt_jax.vocab import word_vocab, wordpiece

CACHE = "cache"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclasses.dataclass
class Hit:
  """One retrieved video or moment: its video id, score and, for a moment, (start, end)
  seconds."""
  video_id: str
  score: float
  start: float | None = None
  end: float | None = None


@dataclasses.dataclass
class Answer:
  """The top videos (and, from a moments evaluator, top moments) of one query.

  Attributes:
    query: the text.
    split: the split ranked.
    evaluator: whose ranking: "retrieval-<prefix or group>", "moments[-<prefix>]".
    num_videos: the videos ranked (the split's, less empty ones).
    videos: the top-K videos, best first; from a moments evaluator each with its best
      moment (start, end).
    moments: the top-K moments of the corpus list (``moments.corpus_moments``), best first;
      [] for retrieval.
  """
  query: str
  split: str
  evaluator: str
  num_videos: int
  videos: list[Hit]
  moments: list[Hit] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------------------
# Text -> tokens -> model inputs -> encodings.


def tokenizer(data_dir: str, meta: dict[str, Any]) -> tuple[Callable[[str], list[int]], int]:
  """The run's own tokenizer: (text -> token ids without specials, the unknown token's id).

  Raises:
    ValueError: the dataset names no tokenizer this module knows.
  """
  vocab = reader.load_vocab(data_dir)
  kind = meta.get("tokenizer")
  if kind == "word":
    index = {t: i for i, t in enumerate(vocab)}
    return functools.partial(word_vocab.encode_words, vocab_index=index), index[word_vocab.UNK]
  if kind == "wordpiece":
    lowercase = meta.get("extra", {}).get("tokenizer", {}).get("lowercase", True)
    tok = wordpiece.WordPieceTokenizer(vocab, lowercase=lowercase)
    return tok.encode, tok.unk_id
  raise ValueError(f"{data_dir}/{reader.METADATA_FILE}: tokenizer={kind!r}; free-text "
                   "queries need 'word' or 'wordpiece'")


def tokenize(text: str, encode: Callable[[str], list[int]], unk_id: int, *,
             split_sentences: bool, vocab_file: str) -> list[list[int]]:
  """Token ids of each sentence of ``text`` ([S][L]; one sentence unless
  ``split_sentences``: split after ``.``, ``!`` or ``?``); sentences without tokens are
  dropped.

  Raises:
    ValueError: ``text`` tokenises to nothing, or every token is unknown (none of its words
      is in ``vocab_file``); some unknown tokens are a warning.
  """
  clean = word_vocab.normalize_sentence(text)
  parts = _SENTENCE_END.split(clean) if split_sentences else [clean]
  tokens = [ids for ids in (encode(p) for p in parts) if ids]
  if not tokens:
    raise ValueError(f"--query {text!r} tokenises to nothing (no word the run's tokenizer "
                     "keeps); give some words")
  unknown, total = sum(t == unk_id for ids in tokens for t in ids), sum(map(len, tokens))
  if unknown == total:
    raise ValueError(f"--query {text!r}: none of its tokens is in the run's vocabulary "
                     f"({vocab_file}); use words of the dataset's sentences")
  if unknown:
    logging.warning("query %r: %d of its %d tokens are not in the run's vocabulary (%s) and "
                    "read as unknown", text, unknown, total, vocab_file)
  return tokens


def _record(tokens: list[list[int]], modalities: dict[str, int]) -> dict[str, Any]:
  """A canonical record (``reader.load_split``'s keys and dtypes) holding ``tokens`` as its
  sentences: sentence i over [i, i + 1] s, each modality a zero row there (so every
  sentence keeps its placeholder clip); no video of the corpus."""
  n = len(tokens)
  rows = np.arange(n, dtype=np.float32)
  stamps = np.stack([rows, rows + 1], axis=1)
  record = {"video_id": tf.constant(""), "duration": tf.constant(float(n), tf.float64),
            "split": tf.constant(""), "label": tf.constant(""),
            "segments": tf.constant(stamps, tf.float64),
            "sentences": tf.constant([""] * n),
            "tokens": tf.ragged.constant(tokens, dtype=tf.int32, ragged_rank=1)}
  for m, dim in modalities.items():
    record[f"features/{m}"] = tf.zeros([n, dim], tf.float32)
    record[f"timestamps/{m}"] = tf.constant(stamps)
  return record


@functools.cache
def _encode_fn(encode_query: Callable[..., Any]):
  return jax.jit(encode_query)


def encode_queries(ctx: corpus.EvalContext, view: pipeline.View, params: Any,
                   queries: Sequence[list[list[int]]]) -> Any:
  """``encode_query`` of each query ([S][L] token ids) through ``view``: a pytree of
  [Q, ...] host arrays (step 2 of the module docstring). Every process encodes every query
  (``params``: ``corpus.host_params``), as the moments evaluator encodes a query-only
  split's queries."""
  cfg = pipeline.view_config(ctx.config, ctx.meta)
  modalities = ctx.meta["modalities"]
  seed = tf.constant(0, tf.int64)
  if view.per_row:   # one example per sentence: every query one sentence of one record
    flat = [[t for ids in q for t in ids] for q in queries]
    parts = [view.fn(_record(flat, modalities), cfg, seed)]
  else:
    parts = [jax.tree.map(lambda x: x[None], view.fn(_record(q, modalities), cfg, seed))
             for q in queries]
  examples = {k: np.concatenate([np.asarray(p[k]) for p in parts])
              for k in parts[0] if k not in view.host_only}
  n = len(queries)
  batch = pipeline.local_batch_size(ctx.config.eval_batch_size)
  pad = np.zeros((-n) % batch, np.int64)   # row 0 again; dropped below
  examples = {k: np.concatenate([v, v[pad]]) for k, v in examples.items()}
  fn = _encode_fn(ctx.pred("encode_query", "query"))
  outs = [jax.device_get(fn(params, {k: v[i:i + batch] for k, v in examples.items()}))
          for i in range(0, n + pad.size, batch)]
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *outs)


# --------------------------------------------------------------------------------------
# The corpus side, cached per checkpoint step, split and evaluator.


def answers_queries(ev: Any) -> bool:
  """Whether evaluator ``ev`` ranks videos for a text (module docstring)."""
  return (isinstance(ev, moments.MomentEvaluator)
          or isinstance(ev, evaluators.RetrievalEvaluator) and not ev.observe_first)


def _name(ev: Any) -> str:
  """The evaluator's name in answers and cache files: "moments[-<prefix>]",
  "retrieval-<group or prefix>" (unique per split: ``evaluators.from_config``)."""
  if isinstance(ev, moments.MomentEvaluator):
    return f"moments-{ev.prefix}" if ev.prefix else "moments"
  return f"retrieval-{ev.group or ev.prefix}"


def cache_path(workdir: str, split: str, step: int, ev: Any) -> str:
  """``<workdir>/eval/<split>/cache/step_<step>/<evaluator>.npz``."""
  return os.path.join(workdir, "eval", split, CACHE, f"step_{step}", f"{_name(ev)}.npz")


def _fingerprint(ev: Any, step: int, step_dir: str) -> dict[str, Any]:
  """What the cached encodings depend on: the checkpoint (step, commit time), the model
  and input config, the evaluator and its video view."""
  config = ev.ctx.config
  view = ev.video_view if ev.video_view is not None else ev.ctx.view
  return {"step": int(step), "split": ev.split, "evaluator": _name(ev),
          "committed": checkpoints.commit_time(step_dir),
          "video_view": getattr(view.fn, "__qualname__", str(view.fn)),
          "model": config.model.to_dict(), "input": config.input.to_dict()}


def corpus_videos(ev: Any, state: dict[str, Any], workdir: str, step: int,
                  step_dir: str) -> dict[str, Any]:
  """The split's videos as ``ev`` encodes them: {"enc": [V, ...] tree, "video_ids": [V],
  "empty": [V] bool, and for moments "durations" [V] float32 s, "video_index" [V]}, from
  the cache when it was written for this checkpoint and config, else encoded (the
  evaluator's own stream) and cached."""
  path = cache_path(workdir, ev.split, step, ev)
  fingerprint = _fingerprint(ev, step, step_dir)
  tree = corpus.load_encodings(path, fingerprint)
  if tree is not None:
    logging.info("query: the %s videos of %s step %d from %s", ev.split, _name(ev), step, path)
    return tree
  if isinstance(ev, moments.MomentEvaluator):   # as ``MomentEvaluator.run``: host params
    enc, durations, ids, index, empty = ev.videos(corpus.host_params(state))
    tree = {"enc": enc, "video_ids": ids, "empty": empty, "durations": durations,
            "video_index": index}
  else:
    enc, ids, empty = ev.videos(state["params"])
    tree = {"enc": enc, "video_ids": ids, "empty": empty}
  if jax.process_index() == 0:
    corpus.save_encodings(path, tree, fingerprint)
    _prune(workdir, ev.split, step)
  return tree


def _prune(workdir: str, split: str, step: int) -> None:
  """Removes the caches of steps other than ``step`` (which may be ``best/``'s or an
  export's) that have no complete checkpoint any more."""
  root = os.path.join(workdir, "eval", split, CACHE)
  keep = {f"step_{s}" for s in [step, *checkpoints.complete_steps(workdir)]}
  for name in os.listdir(root):
    if name.startswith("step_") and name not in keep:
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)


# --------------------------------------------------------------------------------------
# Ranking with the evaluator's own prediction functions.


def _rank(ev: Any, params: Any, queries: Any, videos: dict[str, Any], texts: Sequence[str],
          top_k: int) -> list[Answer]:
  """Answers of ``texts`` (encoded: ``queries``) against ``videos`` by ``ev``'s ranking."""
  ids = [str(v) for v in videos["video_ids"]]
  keep = corpus.non_empty(videos["empty"], ids, f"query {ev.split} (the video has nothing "
                                                "to encode)")
  num_q, num_v = len(texts), int(keep.size)
  mesh = corpus.ranking_mesh(ev.ctx.mesh)
  k = min(top_k, num_v)
  name = _name(ev)
  if isinstance(ev, moments.MomentEvaluator):
    data = moments.CorpusData(
        query_enc=queries, video_enc=videos["enc"], query_ids=[str(i) for i in range(num_q)],
        query_video=np.full(num_q, -1, np.int64), segments=np.zeros((num_q, 2), np.float32),
        video_ids=ids, video_index=np.asarray(videos["video_index"], np.int64),
        durations=np.asarray(videos["durations"], np.float32)).take(np.arange(num_q), keep)
    pred = moments.predict(data, ev.preds, params, mesh,
                           top_k_videos=max(ev.top_k_videos, top_k),
                           moment_ranking=ev.ranking, moments_per_video=ev.moments_per_video,
                           svmr_moments=ev.svmr_moments,
                           max_moment_seconds=ev.max_moment_seconds, blocks=ev.blocks)
    out = []
    for q, text in enumerate(texts):
      vids = [Hit(data.video_ids[int(v)], float(s), float(b[0]), float(b[1]))
              for v, s, b in zip(pred["top_videos"][q][:k], pred["top_scores"][q][:k],
                                 pred["best"][q][:k])]
      moms = [Hit(data.video_ids[int(r[0])], float(r[3]), float(r[1]), float(r[2]))
              for r in pred["vcmr"][q][:k]]
      out.append(Answer(text, ev.split, name, num_v, vids, moms))
    return out
  cands = corpus.take(videos["enc"], keep)
  with jax.set_mesh(mesh):
    ranked = scorer.rank_corpus(queries, cands, np.zeros(num_q, np.int64),
                                corpus.score_fn(ev.score, False), mesh=mesh, params=params,
                                top_k=k, query_block=ev.blocks[0], cand_block=ev.blocks[1],
                                trim=ev.trim)
  return [Answer(text, ev.split, name, num_v,
                 [Hit(ids[keep[int(j)]], float(s)) for j, s in zip(ranked.top_indices[q],
                                                                   ranked.top_scores[q])])
          for q, text in enumerate(texts)]


@dataclasses.dataclass
class Prepared:
  """One evaluator that answers, with the queries as its query view reads them."""
  ev: Any
  view: pipeline.View
  tokens: list[list[list[int]]]   # per query: [S][L] token ids


def _check_options(texts: Sequence[str], top_k: int) -> None:
  if not texts:
    raise ValueError("no query given (--query TEXT or --queries FILE)")
  if top_k < 1:
    raise ValueError(f"--top-k={top_k}: need >= 1")


def check_queries(config: Any, texts: Sequence[str], top_k: int) -> None:
  """``prepare``'s checks of the texts that need only the dataset (its tokenizer), not the
  model: a bad query fails before the model is built.

  Raises:
    ValueError: as ``prepare``'s first three reasons.
  """
  _check_options(texts, top_k)
  data_dir, meta = pipeline.dataset_info(config)
  encode, unk = tokenizer(data_dir, meta)
  for text in texts:
    tokenize(text, encode, unk, split_sentences=True,
             vocab_file=os.path.join(data_dir, reader.VOCAB_FILE))


def prepare(evals: Sequence[Any], texts: Sequence[str], top_k: int) -> list[Prepared]:
  """Checks the queries and the splits before anything heavy runs: every evaluator of
  ``evals`` that ranks videos for a text, with the tokens of ``texts`` for its view.

  Raises:
    ValueError: no query, ``top_k`` < 1, a query that tokenises to nothing (or to unknown
      tokens only), a split none of whose evaluators ranks videos for a text.
  """
  _check_options(texts, top_k)
  usable = [ev for ev in evals if answers_queries(ev)]
  for split in dict.fromkeys(ev.split for ev in evals):
    if not any(ev.split == split for ev in usable):
      raise ValueError(f"split {split!r}: none of its evaluators (config.evals) ranks videos "
                       "for a text (free-text queries need a retrieval evaluator without "
                       "observe_first, or a moments evaluator)")
  out = []
  for ev in usable:
    ctx = ev.ctx
    encode, unk = tokenizer(ctx.data_dir, ctx.meta)
    view = (ev.query_view if isinstance(ev, moments.MomentEvaluator)
            else ev.text_view or ctx.view)
    vocab_file = os.path.join(ctx.data_dir, reader.VOCAB_FILE)
    out.append(Prepared(ev, view, [tokenize(t, encode, unk, split_sentences=not view.per_row,
                                            vocab_file=vocab_file) for t in texts]))
  return out


def answer(prepared: Sequence[Prepared], state: dict[str, Any], step: int, step_dir: str,
           workdir: str, texts: Sequence[str], top_k: int = 5) -> list[Answer]:
  """The answers of ``texts`` (``prepare``) against checkpoint ``step`` (``state``,
  restored from ``step_dir``): per evaluator, per query.

  Raises:
    ValueError: every video of a split is empty (nothing to rank).
  """
  params = corpus.host_params(state)
  out = []
  for p in prepared:
    videos = corpus_videos(p.ev, state, workdir, step, step_dir)
    queries = encode_queries(p.ev.ctx, p.view, params, p.tokens)
    out.extend(_rank(p.ev, params, queries, videos, texts, top_k))
  return out


def format_answers(answers: Sequence[Answer], step: int) -> str:
  """The printed answers: per query and evaluator, the top videos (rank, id, score; a
  moments evaluator's with each video's best moment) and the top moments."""
  lines = []
  for a in answers:
    lines.append(f"query {a.query!r}: split {a.split}, step {step}, {a.evaluator} "
                 f"({a.num_videos} videos)")
    width = max((len(h.video_id) for h in a.videos + a.moments), default=0)
    for title, hits in (("videos", a.videos), ("moments", a.moments)):
      if not hits:
        continue
      lines.append(f"  top {len(hits)} {title}" + (" (score, best moment)" if title == "videos"
                                                    and hits[0].start is not None else ""))
      for i, h in enumerate(hits, 1):
        where = f"  {h.start:7.2f}-{h.end:.2f} s" if h.start is not None else ""
        lines.append(f"  {i:3d}. {h.video_id:<{width}}  {h.score:10.4f}{where}")
  return "\n".join(lines)


def read_queries(texts: Sequence[str] | None, path: str | None) -> list[str]:
  """The ``--query`` texts, then the non-blank lines of ``--queries`` FILE.

  Raises:
    ValueError: FILE does not exist or holds no query.
  """
  out = list(texts or [])
  if path:
    if not os.path.isfile(path):
      raise ValueError(f"--queries {path}: no such file (one query per line)")
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f if line.strip()]
    if not lines:
      raise ValueError(f"--queries {path}: no query in it (one query per line)")
    out += lines
  return out


def run(config: Any, workdir: str, texts: Sequence[str], *, step: int | str | None = None,
        splits: Sequence[str] | None = None, top_k: int = 5) -> tuple[int, list[Answer]]:
  """``hvt-eval --query``: restores checkpoint ``step`` (latest complete by default,
  ``"best"``, or an export's: ``train.locate``; read-only, as ``train.evaluate_checkpoint``) and answers ``texts`` on ``splits``
  (default: the splits of ``config.evals``).

  Returns:
    (the step, the answers: per evaluator that ranks videos for a text, per query).

  Raises:
    FileNotFoundError: no complete checkpoint, or no such step.
    ValueError: a bad query, split or option (``answer``), or a checkpoint that does not
      fit the config.
  """
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  check_queries(config, texts, top_k)
  s = train.setup(config)
  prepared = prepare(train.build_evaluators(s, splits=list(splits) if splits else None),
                     texts, top_k)
  train.check_export_vocab(workdir, config)
  step_dir, step = train.locate(workdir, step)
  state = train.restore(s, step_dir, changed=train.config_changes(workdir, config))
  with jax.set_mesh(s.mesh):
    return step, answer(prepared, state, step, step_dir, workdir, texts, top_k)
