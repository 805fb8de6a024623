"""Masked language modelling of the shared text tower on a dataset's sentences (``text_mlm``).

It adapts the text tower (``hvt_jax/models/text.py``: bert-base-uncased in the paper configs) to
a corpus's captions or queries, one example per sentence; its checkpoint then initialises
HAMMER's or MCHA's query tower (``init_from`` format "checkpoint", ``into=""``: its parameter
paths already start with ``text/``, as a tower at ``text`` in the target model expects). The
masking rule is BERT's (Devlin et al. 2019, §3.1), shared with HAMMER's MLM objective
(``hvt_jax/models/mlm.py``); the loss is the mean cross-entropy of the original ids at the
selected positions, over the global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hvt_jax.models import text
from hvt_jax.models.mlm import MaskingConfig, mask_tokens, special_ids


class TextMLM(nnx.Module):
  """The text tower with its MLM head, trained on one sentence per example.

  Batch (``hvt_jax.input.text_ops.sentence_view``): ``tokens`` [B, L] int32,
  ``token_mask`` [B, L] bool,
  ``example_mask`` [B] bool.
  """

  # The prediction functions evaluators may ask for (models.base.PredictFns).
  PREDICT_FNS = ()

  def __init__(self, tower: text.TextConfig, masking: MaskingConfig, *, rngs: nnx.Rngs):
    self.masking = masking
    self.text = text.TextEncoder(dataclasses.replace(tower, mlm_head=True), rngs=rngs)

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> "TextMLM":
    """The tower from ``config.model.text`` (``TextConfig.from_model_config``) computing in
    ``config.model.dtype`` (bfloat16 matmul inputs; parameters, logits and the loss stay
    float32); the special ids from the dataset's vocabulary (``meta["special_ids"]``, set by
    the pipeline)."""
    tower = text.TextConfig.from_model_config(config.model.text, int(meta["vocab_size"]),
                                              dtype=config.model.get("dtype", "float32"))
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
