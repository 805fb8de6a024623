"""Masked language modelling of the shared text tower on a dataset's sentences.

Registered as ``text_mlm``: it adapts the text tower (``models/text.py``, e.g. the offline
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
import optax
from flax import nnx

from hvt_jax.models import text

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


class TextMLM(nnx.Module):
  """The text tower with its MLM head, trained on one sentence per example.

  Batch (``input/text_view.py``): ``tokens`` [B, L] int32, ``token_mask`` [B, L] bool,
  ``example_mask`` [B] bool.
  """

  def __init__(self, tower: text.TextConfig, masking: MaskingConfig, *, rngs: nnx.Rngs):
    self.masking = masking
    self.text = text.TextEncoder(dataclasses.replace(tower, mlm_head=True), rngs=rngs)

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> "TextMLM":
    """The tower from ``config.model.text`` (``TextConfig.from_model_config``); the special
    ids from the dataset's vocabulary (``meta["special_ids"]``, set by the pipeline)."""
    tower = text.TextConfig.from_model_config(config.model.text, int(meta["vocab_size"]))
    ids = special_ids(meta)
    masking = MaskingConfig(
        mask_id=ids["mask"], special_ids=tuple(ids[k] for k in ("cls", "sep", "pad")),
        vocab_size=tower.vocab_size, mask_rate=float(config.model.mask_rate),
        scheme=config.model.mask_scheme)
    return cls(tower, masking, rngs=rngs)

  @classmethod
  def pretrained_entries(cls, config: Any, data_dir: str | None) -> list[dict[str, Any]]:
    """The checkpoint ``config.model.text.checkpoint`` names, loaded into ``text``."""
    del data_dir
    return text.tower_entries(config)

  def __call__(self, batch: dict[str, jax.Array], *, train: bool,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    """Masks (per-step key when training, a fixed key otherwise), encodes, predicts.

    Returns:
      ``logits`` [B, L, V] float32, ``selected`` [B, L] bool, ``targets`` [B, L] int32.
    """
    tokens, valid = batch["tokens"], batch["token_mask"] & batch["example_mask"][:, None]
    key = rngs if (train and rngs is not None) else jax.random.key(0)
    k_mask, k_drop = jax.random.split(key)
    inputs, selected = mask_tokens(tokens, valid, k_mask, self.masking)
    out = self.text(inputs, batch["token_mask"], train=train,
                    rngs=k_drop if train else None)
    return dict(logits=self.text.mlm_logits(out.hidden), selected=selected, targets=tokens)

  def loss(self, out: dict[str, jax.Array], batch: dict[str, jax.Array],
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy of the original ids at the selected positions (global batch)."""
    del batch, cfg
    ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], out["targets"])
    sel = out["selected"].astype(jnp.float32)
    mlm = jnp.sum(ce * sel) / jnp.maximum(jnp.sum(sel), 1.0)
    return mlm, {"mlm": mlm}


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
