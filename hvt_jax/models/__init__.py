"""Flax NNX models, registered by name in one explicit table.

Every model class has the same small contract:
  ``Model.create(config, meta, *, rngs)`` builds it from the run config and the dataset
  metadata; ``model(batch)`` returns a dict of outputs; ``model.loss(outputs, batch,
  config.loss)`` returns (scalar, dict of terms); ``model.embed(batch)`` returns the
  embeddings that the evaluators compare.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from hvt_jax.models import hse

MODELS: dict[str, type[nnx.Module]] = {
    "hse": hse.HSE,
    "fse": hse.FSE,
}


def get_model_class(name: str) -> type[nnx.Module]:
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
  return MODELS[name]


def create_model(config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs,
                 data_dir: str | None = None) -> nnx.Module:
  """Builds ``config.model.name`` for a dataset described by ``meta``."""
  return get_model_class(config.model.name).create(config, meta, rngs=rngs,
                                                   data_dir=data_dir)
