"""MCHA's views of a canonical record: per-video expert features with masks, and captions.

Training (``train_view``, registered for ``mcha``): one example per video with one caption
drawn from the record's seed (``pipeline``: a function of (seed, epoch, record), so a resumed
run draws the same captions and feature subsets). Evaluation (the retrieval evaluator with
``video_view="video"`` and ``query_view="caption"`` or ``"paragraph"``): videos
(``video_view``) and captions (``caption_view``: every caption, one designated caption per
video with the evaluator's ``caption_index_file``; or ``paragraph_view``: the captions
concatenated, ActivityNet) are separate streams.

Per expert e of ``cfg.experts`` (MMT's conventions, ``base/base_dataset.py``):
* the expert is missing (``expert_mask`` False) when the record stores no rows for it (the
  converters store an absent, empty or all-NaN expert as [0, D]); its slots are zeros that
  the model masks everywhere;
* ``<e>_pool`` [D]: max over *all* its rows, before subsampling (MMT's aggregate token);
* at most ``cfg.max_feature_tokens`` (F) rows are kept, in time order: a random subset when
  training (stateless, from the record's seed); at evaluation ``cfg.eval_rows``
  ``"fixed_random"`` (default: MMT's ``choose_or_pad_to_len``, base/base_dataset.py:103-105
  at gabeur/mmt@8f53717: ``np.random.RandomState(0).choice(T, F, replace=False)``, sorted,
  the same rows for every video with T rows) or ``"even"`` (rows floor(i * T / F), i < F);
* ``<e>_time`` temporal ids: floor(row mid-time in seconds) + 2 (MMT: 0 is the aggregate
  token, added by the model; 1 is padding and experts listed in ``cfg.untimed_experts``,
  whose rows carry no real time); the model clamps them at its ``max_temporal_id``. The row
  times of the experts in ``cfg.fixed_width_experts`` are MMT's fixed widths, row r covering
  [r w, (r + 1) w] (``MMT_ROW_SECONDS``: rgb 0.2 s, scene 1 s; MMT utils/expert_timings.py,
  applied in base/base_dataset.py:483-492 to every expert but s3d and vggish), not the
  record's timestamps; the others use the record's (s3d and vggish: MMT's ``features_t``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

from hvt_jax.input import ops, text_ops


# MMT's seconds per feature row (utils/expert_timings.py at gabeur/mmt@8f53717).
MMT_ROW_SECONDS = {"rgb": 0.2, "scene": 1.0, "s3d": 1.0, "vggish": 1.0}
EVAL_ROWS = ("fixed_random", "even")


def mmt_eval_rows(num_rows: int, limit: int) -> np.ndarray:
  """MMT's evaluation subset: sorted ``RandomState(0).choice(T, min(T, F), replace=False)``.

  Returns:
    [min(T, F)] int32 row indices in increasing order.
  """
  keep = min(int(num_rows), int(limit))
  pick = np.random.RandomState(0).choice(int(num_rows), size=keep, replace=False)
  return np.sort(pick).astype(np.int32)


def _rows(num_rows: tf.Tensor, limit: int, seed: tf.Tensor | None, j: int,
          eval_rows: str) -> tf.Tensor:
  """Indices of min(T, limit) rows, in time order: random (seed) or, at evaluation (None),
  ``eval_rows`` ("fixed_random": MMT's, ``mmt_eval_rows``; "even": evenly spaced)."""
  k = tf.minimum(num_rows, limit)
  if seed is None and eval_rows == "even":
    return (tf.range(k) * num_rows) // tf.maximum(k, 1)
  if seed is None:
    idx = tf.numpy_function(lambda t: mmt_eval_rows(t, limit), [num_rows], tf.int32,
                            stateful=False)
    return tf.ensure_shape(idx, [None])
  keys = tf.random.stateless_uniform(tf.reshape(num_rows, [1]),
                                     seed=tf.stack([tf.cast(seed, tf.int64), j]))
  return tf.sort(tf.math.top_k(keys, k).indices)


def expert_inputs(example: dict[str, Any], cfg: Any,
                  seed: tf.Tensor | None) -> dict[str, tf.Tensor]:
  """The expert part of every MCHA example.

  Args:
    example: a decoded canonical record (``features/<e>`` [T, D], ``timestamps/<e>`` [T, 2]).
    cfg: ``config.input`` with ``experts``, ``max_feature_tokens`` (F), ``untimed_experts``,
      ``fixed_width_experts`` and ``eval_rows`` (module docstring).
    seed: int64 scalar for the random subset (training); None = evaluation's rows.

  Returns:
    per expert ``<e>_features`` [F, D] float32, ``<e>_mask`` [F] bool, ``<e>_time`` [F]
    int32, ``<e>_pool`` [D] float32; ``expert_mask`` [n] bool; ``feature_truncated`` []
    bool (some expert had more than F rows: counted, not an error).
  """
  out, avail, cut = {}, [], []
  limit = int(cfg.max_feature_tokens)
  untimed = set(cfg.get("untimed_experts", ()))
  fixed = set(cfg.get("fixed_width_experts", ()))
  eval_rows = cfg.get("eval_rows", "fixed_random")
  if eval_rows not in EVAL_ROWS:
    raise ValueError(f"config.input.eval_rows={eval_rows!r}; valid: {EVAL_ROWS}")
  if unknown := sorted(fixed - set(MMT_ROW_SECONDS)):
    raise ValueError(f"config.input.fixed_width_experts: {unknown} have no MMT row width; "
                     f"known: {sorted(MMT_ROW_SECONDS)}")
  for j, e in enumerate(cfg.experts):
    feats = tf.cast(example[f"features/{e}"], tf.float32)
    stamps = tf.cast(example[f"timestamps/{e}"], tf.float32)
    t = tf.shape(feats)[0]
    present = t > 0
    idx = _rows(t, limit, seed, j, eval_rows)
    mask = ops.pad_to(tf.ones_like(idx, tf.bool), [limit], False)
    if e in untimed:
      tid = tf.ones_like(idx)
    else:
      if e in fixed:   # row r covers [r w, (r + 1) w]
        mid = (tf.cast(idx, tf.float32) + 0.5) * MMT_ROW_SECONDS[e]
      else:
        mid = tf.gather(stamps[:, 0] + stamps[:, 1], idx) / 2.0
      tid = tf.cast(tf.math.floor(tf.maximum(mid, 0.0)), tf.int32) + 2
    out[f"{e}_features"] = ops.pad_to(tf.gather(feats, idx), [limit, None])
    out[f"{e}_mask"] = mask
    out[f"{e}_time"] = ops.pad_to(tid, [limit], 1)
    out[f"{e}_pool"] = tf.where(present, tf.reduce_max(
        tf.concat([feats, tf.fill([1, tf.shape(feats)[1]], feats.dtype.min)], 0), axis=0),
                                0.0)
    avail.append(present)
    cut.append(t > limit)
  out["expert_mask"] = tf.stack(avail)
  out["feature_truncated"] = tf.reduce_any(tf.stack(cut))
  return out


def _caption(example: dict[str, Any], cfg: Any, seed: tf.Tensor | None):
  """One caption's WordPiece input: drawn by ``seed`` (0 at evaluation), or the paragraph."""
  tokens = example["tokens"]
  if cfg.get("paragraph", False):
    chosen = tokens.flat_values
  else:
    n = tf.cast(tokens.nrows(), tf.int32)
    c = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), -1]),
                                    minval=0, maxval=tf.maximum(n, 1), dtype=tf.int32)
    chosen = tokens[c]
  ids = cfg.special_ids
  return text_ops.wordpiece_input(chosen, cfg.max_words, ids.cls, ids.sep, ids.pad)


def train_view(example: dict[str, Any], cfg: Any, seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """One training example per video: experts (random subsets) + one random caption.

  Returns:
    ``expert_inputs``' keys, ``tokens`` [L] int32, ``token_mask`` [L] bool,
    ``example_mask`` [] bool, and the statistic ``truncated`` [] bool (caption or features cut).
  """
  out = expert_inputs(example, cfg, seed)
  out["tokens"], out["token_mask"], cut = _caption(example, cfg, seed)
  out["example_mask"] = tf.constant(True)
  out["truncated"] = cut | out.pop("feature_truncated")
  return out


def video_view(example: dict[str, Any], cfg: Any,
               seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Evaluation: the video only (evenly spaced feature rows; deterministic), plus
  ``empty_video`` [] bool: no expert has a row (nothing to encode; the evaluator leaves
  the video and its captions out of the ranking, ``evaluation.corpus``)."""
  del seed
  out = expert_inputs(example, cfg, None)
  out["example_mask"] = tf.constant(True)
  out["empty_video"] = ~tf.reduce_any(out["expert_mask"])
  out["truncated"] = out.pop("feature_truncated")
  return out


def caption_view(example: dict[str, Any], cfg: Any,
                 seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Evaluation: every caption of the record (``caption_index`` = its position in the
  record, ``caption_count`` the record's captions), one example each."""
  out = text_ops.sentence_view(example, cfg, seed)
  n = tf.shape(out["tokens"])[0]
  out["caption_index"] = tf.range(n, dtype=tf.int32)
  out["caption_count"] = tf.fill([n], n)
  return out


def paragraph_view(example: dict[str, Any], cfg: Any,
                   seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Evaluation (ActivityNet): one query per video, its captions concatenated."""
  del seed
  tokens, mask, cut = _caption(example, cfg, None)
  return {"tokens": tokens, "token_mask": mask, "example_mask": tf.constant(True),
          "caption_index": tf.constant(0, tf.int32), "truncated": cut}
