"""The model contract every family implements.

A model is a Flax NNX module registered by name in ``hvt_jax.models.MODELS``. The trainer,
the init chain and the evaluators only use what :class:`Model` declares:

* ``Model.create(config, meta, *, rngs)`` builds it from the run config and the dataset
  metadata (feature dims, vocabulary); it reads no weight files: pretrained weights arrive
  after init through ``config.init_from`` entries (``hvt_jax.init_from``), and a model
  names the ones its config implies in ``pretrained_entries``.
* ``model(batch, *, train, rngs)`` -> dict of outputs. ``rngs`` is a ``jax.random.key``
  folded from (seed, step) by the trainer (None when ``train=False``); modules hold no RNG
  state, so a resumed run draws the same dropout and masks and evaluation is
  deterministic.
* ``model.loss(outputs, batch, loss_config)`` -> (scalar, {term: scalar}).
* Prediction functions that evaluators ask for by name (``config.evals.<name>.pred``), as
  far as the family predicts anything (``Ranker``, ``Localizer``):
  ``encode_query(batch)`` / ``encode_candidate(batch)`` hold everything that depends on one
  side only (run once per query / per candidate and cached by the evaluator);
  ``score(query_block, candidate_block) -> [Bq, Bc] float32`` is the pairwise part (two-tower
  models: a dot product, ``TwoTower``); a model that predicts moments adds
  ``localize(query_enc, candidate_enc, top_k) -> [Q, K, 3]`` (start s, end s, score).

Only ``nnx.Param`` variables are differentiated and seen by optax; any other variable type
(e.g. batch statistics) is carried in the train state untouched by gradients.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]
Encoding = dict[str, jax.Array]


@runtime_checkable
class Model(Protocol):
  """Structural type of a registered model (see the module docstring)."""

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: Any) -> "Model": ...

  @classmethod
  def pretrained_entries(cls, config: Any, data_dir: str) -> list[dict[str, Any]]: ...

  def __call__(self, batch: Batch, *, train: bool,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]: ...

  def loss(self, outputs: dict[str, jax.Array], batch: Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]: ...


@runtime_checkable
class Ranker(Protocol):
  """The prediction functions a retrieval evaluator (``pred="score"``) uses."""

  def encode_query(self, batch: Batch) -> Encoding: ...

  def encode_candidate(self, batch: Batch) -> Encoding: ...

  def score(self, query: Encoding, candidate: Encoding) -> jax.Array: ...


@runtime_checkable
class Localizer(Protocol):
  """Moment prediction (HAMMER/FLAT): (start s, end s, score) of the top-K moments."""

  def localize(self, query: Encoding, candidate: Encoding, top_k: int) -> jax.Array: ...


class TwoTower:
  """Mixin: the pairwise part of a two-tower model is a dot product of unit embeddings.

  ``encode_query``/``encode_candidate`` return ``{"embedding": [B, D]}``; the embeddings are
  L2-normalised there (``hvt_jax.losses.unit``: a zero vector stays zero), so the dot product
  is the cosine.
  """

  def score(self, query: Encoding, candidate: Encoding) -> jax.Array:
    """[Bq, D] x [Bc, D] -> [Bq, Bc] float32 cosine similarities (HIGHEST precision, so a
    pair's score does not depend on the backend's default matmul precision)."""
    return jnp.matmul(query["embedding"].astype(jnp.float32),
                      candidate["embedding"].astype(jnp.float32).T,
                      precision=jax.lax.Precision.HIGHEST)
