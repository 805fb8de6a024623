"""Masked language modelling of the shared text tower on a dataset's sentences.

Shared by the ``text_mlm`` family, which adapts the text tower (``models/text.py``, e.g. the offline
MiniLM checkpoint) to a corpus's captions or queries, one example per sentence; its
checkpoint then initialises HAMMER's or MCHA's query tower (``init_from`` format
"checkpoint", ``into=""``: its parameter paths already start with ``text/``, as a tower at
``text`` in the target model expects). The masking rule is BERT's (Devlin et al. 2019, §3.1 "Task
#1: Masked LM"), which HAMMER's MLM objective uses too:

* each real token other than [CLS]/[SEP]/[PAD] is selected with probability ``mask_rate``
  (0.15); of the selected, 80 % become [MASK], 10 % a random vocabulary id, 10 % stay
  (``mask_scheme="bert"``; ``"mask_all"``: every selected token becomes [MASK]);
* the loss is the mean cross-entropy of the original ids at the selected positions, over
  the global batch.

Randomness follows the model contract (``models/base.py``): the selection and replacement
draws come from the trainer's per-step key, so a resumed run masks exactly as the
uninterrupted one; ``train=False`` masks with a fixed key (comparable evaluations) and
applies no dropout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


SCHEMES = ("bert", "mask_all")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """Which tokens the MLM objective hides, and how (BERT §3.1)."""
  mask_id: int
  special_ids: tuple[int, ...]
  vocab_size: int
  mask_rate: float = 0.15
  scheme: str = "bert"

  def __post_init__(self):
    if not 0.0 < self.mask_rate < 1.0:
      raise ValueError(f"config.model.mask_rate={self.mask_rate}: must be in (0, 1)")
    if self.scheme not in SCHEMES:
      raise ValueError(f"config.model.mask_scheme={self.scheme!r}; valid: {SCHEMES}")


def mask_tokens(tokens: jax.Array, valid: jax.Array, key: jax.Array,
                c: MaskingConfig) -> tuple[jax.Array, jax.Array]:
  """BERT's masking of a batch of WordPiece inputs.

  Args:
    tokens: [B, L] int32 ids ([CLS] ... [SEP], padded).
    valid: [B, L] bool, real tokens.
    key: a jax.random key.
    c: the masking config.

  Returns:
    (inputs [B, L] int32 with the selected tokens replaced, selected [B, L] bool).
  """
  eligible = valid & ~jnp.isin(tokens, jnp.asarray(c.special_ids, tokens.dtype))
  k_select, k_kind, k_random = jax.random.split(key, 3)
  selected = eligible & jax.random.bernoulli(k_select, c.mask_rate, tokens.shape)
  if c.scheme == "mask_all":
    return jnp.where(selected, c.mask_id, tokens), selected
  kind = jax.random.uniform(k_kind, tokens.shape)
  random_ids = jax.random.randint(k_random, tokens.shape, 0, c.vocab_size, tokens.dtype)
  replaced = jnp.where(kind < 0.8, c.mask_id, jnp.where(kind < 0.9, random_ids, tokens))
  return jnp.where(selected, replaced, tokens), selected


def special_ids(meta: dict[str, Any]) -> dict[str, int]:
  """[PAD]/[CLS]/[SEP]/[MASK] ids of the dataset's WordPiece vocabulary.

  Raises:
    ValueError: the dataset is not WordPiece-tokenized or its vocabulary lacks [MASK].
  """
  ids = meta.get("special_ids")
  if meta.get("tokenizer") != "wordpiece" or not ids or "mask" not in ids:
    raise ValueError(f"text_mlm needs a WordPiece dataset whose vocabulary has [MASK] "
                     f"(tokenizer {meta.get('tokenizer')!r}, special ids {ids}): convert "
                     "with --tokenizer wordpiece")
  return ids
