"""The model contract every family implements.

A model is a Flax NNX module that its family declares (``hvt_jax.families``). The trainer,
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
* Prediction functions, named in the class attribute ``PREDICT_FNS``: the trainer hands
  them to the evaluators (``PredictFns``), which ask for them by name
  (``config.evals.<name>.pred``, ``Ranker``, ``Localizer``):
  ``encode_query(batch)`` / ``encode_candidate(batch)`` hold everything that depends on one
  side only (run once per query / per candidate and cached by the evaluator);
  ``score(query_block, candidate_block) -> [Bq, Bc] float32`` is the pairwise part (two-tower
  models: a dot product, ``TwoTower``); a model that predicts moments adds
  ``localize(query_enc, candidate_enc, top_k) -> [Q, K, 3]`` (start s, end s, score).

Only ``nnx.Param`` variables are differentiated and seen by optax; any other variable type
(e.g. batch statistics) is carried in the train state untouched by gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx

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


class PredictFns(Mapping[str, Callable[..., Any]]):
  """A model's prediction functions by name, as the trainer hands them to evaluators
  (big_vision's ``predict_fns``): ``fns[name](params, *args, **kwargs)`` runs
  ``model.<name>(*args, **kwargs)`` on the model rebuilt from ``params`` (an
  ``nnx.State``). The names are the model class's ``PREDICT_FNS``; each function is one
  stable Python object per (graph, name), so ``jax.jit`` caches of functions built on it
  are reused across splits and evaluations.
  """

  def __init__(self, graphdef: Any, names: tuple[str, ...]):
    self._graphdef, self._names = graphdef, tuple(names)

  def __getitem__(self, name: str) -> Callable[..., Any]:
    if name not in self._names:
      raise KeyError(f"the model has no prediction function {name!r}; it has "
                     f"{list(self._names)}")
    return _predict_fn(self._graphdef, name)

  def __iter__(self) -> Iterator[str]:
    return iter(self._names)

  def __len__(self) -> int:
    return len(self._names)


@functools.cache
def _predict_fn(graphdef: Any, name: str) -> Callable[..., Any]:
  def fn(params, *args, **kwargs):
    return getattr(nnx.merge(graphdef, params), name)(*args, **kwargs)
  fn.__name__ = fn.__qualname__ = name
  return fn


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


def frames_to_seconds(start, end, frame_seconds, duration):
  """Inclusive frame range -> seconds [start·Δ, (end+1)·Δ] clamped to [0, duration].

  Works on numpy arrays and on jax arrays inside jit (only ``*``, ``+`` and ``clip``); the
  model's ``localize`` uses it, evaluators may call it on the host. The inverse rule of the
  views is ``hvt_jax.input.ops.seconds_to_frames``.

  Args:
    start, end: [...] int frame indices (inclusive).
    frame_seconds: [...] float Δ (broadcastable).
    duration: [...] float seconds (broadcastable).

  Returns:
    [..., 2] float seconds (start, end), with the float type of ``frame_seconds``.
  """
  xp = _array_module(start, end, frame_seconds, duration)
  s = xp.clip(start * frame_seconds, 0.0, duration)
  e = xp.clip((end + 1) * frame_seconds, 0.0, duration)
  return xp.stack([s, e], axis=-1)


def _array_module(*values):
  """numpy, or jax.numpy when any value is a jax array (imported lazily: TF-only users)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if all(isinstance(v, (np.ndarray, np.generic, int, float)) for v in values):
    return np
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp
