"""WordPiece model inputs for the views: ``[CLS] ids [SEP]`` after truncation, padded, masked.

Converters store WordPiece ids *without* special tokens (``hvt_jax/vocab/wordpiece.py``). Every
view that feeds a BERT-style tower (HAMMER, MCHA) builds its inputs with these ops, which
truncate the content to ``max_len - 2`` ids *first* and then add ``[CLS]``/``[SEP]``: a long
sentence loses its tail, never its ``[SEP]`` (one public MMT loader cut the special tokens
away with the tail). The special ids come from the dataset's vocabulary, never constants::

    ids = wordpiece.special_token_ids(reader.load_vocab(dataset_dir))   # data_prep
    tokens, mask, cut = wordpiece_inputs(record["tokens"], max_len, ids["cls"], ids["sep"],
                                         ids["pad"])
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvt_jax.input import ops


def _check(max_len: int) -> None:
  if max_len < 2:
    raise ValueError(f"max_len={max_len}: a WordPiece input needs room for [CLS] and [SEP]")


def wordpiece_input(tokens: tf.Tensor, max_len: int, cls_id: int, sep_id: int,
                    pad_id: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """One sentence's model input: ``[CLS] tokens[:max_len - 2] [SEP]``, right-padded.

  Args:
    tokens: [N] int WordPiece ids without special tokens (N may be 0).
    max_len: static length L >= 2 of the output, special tokens included.
    cls_id, sep_id, pad_id: ids of [CLS], [SEP] and [PAD] in the dataset's vocabulary.

  Returns:
    (ids [L] int32, mask [L] bool (True at [CLS], the kept ids and [SEP]),
     truncated: scalar bool, True when ids were cut).
  """
  _check(max_len)
  tokens = tf.cast(tokens, tf.int32)
  body = tokens[:max_len - 2]
  ids = tf.concat([[cls_id], body, [sep_id]], axis=0)
  mask = tf.range(max_len) < tf.shape(ids)[0]
  return (ops.pad_to(ids, [max_len], pad_id), mask,
          tf.shape(tokens)[0] > max_len - 2)


def wordpiece_inputs(tokens: tf.RaggedTensor, max_len: int, cls_id: int, sep_id: int,
                     pad_id: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """``wordpiece_input`` for every sentence of a record (the stored ragged ``tokens``).

  Args:
    tokens: [S, None] int ragged WordPiece ids without special tokens (rows may be empty;
      S may be 0).
    max_len: static length L >= 2 of each output row, special tokens included.
    cls_id, sep_id, pad_id: ids of [CLS], [SEP] and [PAD] in the dataset's vocabulary.

  Returns:
    (ids [S, L] int32, mask [S, L] bool, truncated [S] bool).
  """
  _check(max_len)
  tokens = tf.cast(tokens, tf.int32)
  rows = tokens.nrows()
  body = tokens[:, :max_len - 2]
  ends = [tf.RaggedTensor.from_tensor(tf.fill([rows, 1], i)) for i in (cls_id, sep_id)]
  ids = tf.concat([ends[0], body, ends[1]], axis=1)
  mask = tf.sequence_mask(ids.row_lengths(), max_len)
  dense = ids.to_tensor(default_value=pad_id, shape=[None, max_len])
  return dense, mask, tokens.row_lengths() > max_len - 2


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
  tokens, mask, cut = wordpiece_inputs(example["tokens"], cfg.max_words, ids.cls,
                                                ids.sep, ids.pad)
  n = tf.shape(tokens)[0]
  return {"tokens": tokens, "token_mask": mask, "example_mask": tf.ones([n], tf.bool),
          "truncated": cut}
