"""Flax NNX models, registered by name in one explicit table.

Every model implements ``hvt_jax.models.base.Model``: ``create(config, meta, *, rngs)``,
``model(batch, *, train, rngs)``, ``loss(outputs, batch, config.loss)``, the
``pretrained_entries`` its config implies, and the prediction functions evaluators ask for
by name (``encode_query``, ``encode_candidate``, ``score``; ``localize`` for families that
predict moments).
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from hvt_jax.models import hammer, hse, hse_heads, mcha, mlm
from hvt_jax.models.base import Model

MODELS: dict[str, type[Model]] = {
    "hse": hse.HSE,
    "fse": hse.FSE,
    "text_mlm": mlm.TextMLM,
    "hse_classifier": hse_heads.HSEClassifier,
    "hse_captioner": hse_heads.HSECaptioner,
    "hammer": hammer.HAMMER,
    "flat": hammer.FLAT,
    "mcha": mcha.MCHA,
}


def get_model_class(name: str) -> type[Model]:
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
  return MODELS[name]


def create_model(config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> Model:
  """Builds ``config.model.name`` for a dataset described by ``meta`` (its ``data_dir`` key,
  when present, locates files the config refers to, such as word vectors)."""
  return get_model_class(config.model.name).create(config, meta, rngs=rngs)
