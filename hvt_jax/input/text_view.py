"""The sentence view: one example per sentence (caption, query) of a record, as a BERT-style
tower reads it (``text_mlm``; HAMMER's and MCHA's text side build on the same op).

Each sentence becomes ``[CLS] ids[:max_words - 2] [SEP]`` padded with [PAD]
(``text_ops.wordpiece_inputs``: truncation never cuts [SEP]); the special ids come from the
dataset's vocabulary (``view_config`` puts them in ``cfg.special_ids``).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvt_jax.input import text_ops


def sentence_view(example: dict[str, Any], cfg: Any,
                  seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Per-sentence WordPiece inputs of a decoded canonical record.

  Args:
    example: a decoded record (``tokens`` ragged [S, None] WordPiece ids, no specials).
    cfg: ``config.input`` with ``max_words`` (L, specials included) and ``special_ids``.
    seed: unused (the view is deterministic; masking happens in the model).

  Returns:
    ``tokens`` [S, L] int32, ``token_mask`` [S, L] bool, ``example_mask`` [S] bool (True),
    and the host-side statistic ``truncated`` [S] bool.
  """
  del seed
  ids = cfg.special_ids
  tokens, mask, cut = text_ops.wordpiece_inputs(example["tokens"], cfg.max_words, ids.cls,
                                                ids.sep, ids.pad)
  n = tf.shape(tokens)[0]
  return {"tokens": tokens, "token_mask": mask, "example_mask": tf.ones([n], tf.bool),
          "truncated": cut}
