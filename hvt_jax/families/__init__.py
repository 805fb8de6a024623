"""The model families, in one explicit table.

A family is one package, ``hvt_jax/families/<name>/``, holding everything that is only that
family's: its models, its input views, any evaluator only it uses, its README. The package
defines ``FAMILY = Family(...)``; shared code (trainer, pipeline, evaluators, command lines)
finds a model's family here and never names a family. Adding a family is one line in
``FAMILIES`` (see docs/adding_a_family.md)::

    FAMILIES["toy"] = "my_project.toy"     # a module defining FAMILY = Family(...)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

# Family name -> the module that defines ``FAMILY``. Imported on first use.
FAMILIES: dict[str, str] = {
    "hse": "hvt_jax.families.hse",
    "hammer": "hvt_jax.families.hammer",
    "mcha": "hvt_jax.families.mcha",
    "text_mlm": "hvt_jax.families.text_mlm",
}


@dataclasses.dataclass(frozen=True)
class Demo:
  """How ``hvt-demo`` runs a family.

  Attributes:
    models: the models it trains side by side (each ``config`` with ``model=<name>``).
    config: the demo config file, relative to the repository (``configs/<family>/demo.py``).
    dataset: the synthetic dataset it trains on, a ``--variant`` of ``hvt-prepare demo``:
      ``"hse"`` (clips and sentences), ``"moments"`` (many-event moments) or ``"experts"``
      (MMT-style experts).
    report: (results {ROW: [metrics of each seed]}) -> the printed tables; a row is a model
      (``MODEL``) or one of its ablations (``MODEL <label>``).
    ablations: (label, config arg) pairs: each model also runs with each arg, as the row
      ``MODEL <label>`` (MCHA: ``("w/o LAM", "lam=false")``, Table 4).
  """
  models: tuple[str, ...]
  config: str
  dataset: str
  report: Callable[[dict[str, list[dict[str, float]]]], str]
  ablations: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Family:
  """What a family declares; the shared machinery reads nothing else of it.

  Attributes:
    name: the key in ``FAMILIES``.
    models: model name (``config.model.name``) -> class implementing
      ``hvt_jax.models.base.Model``; its ``PREDICT_FNS`` name its prediction functions.
    views: input views (``hvt_jax.input.pipeline.View``) by name: one per model name (the
      view it trains and evaluates on) plus any other an evaluator asks for by name (e.g.
      HAMMER's ``"video"`` and ``"query"`` for the moments evaluator, MCHA's ``"video"`` and
      ``"caption"`` for the retrieval evaluator), or a factory of views (HSE's
      ``"observe_first"``: (n, ``config.input``) -> View).
    evaluators: evaluator types only this family uses (``config.evals.<name>.type``), in
      addition to the shared ones (``hvt_jax.evaluation.evaluators``).
    demo: how ``hvt-demo`` runs it (None: not in the demo).
  """
  name: str
  models: Mapping[str, type]
  views: Mapping[str, Any]
  evaluators: Mapping[str, type] = dataclasses.field(default_factory=dict)
  demo: Demo | None = None

  def __post_init__(self):
    missing = sorted(set(self.models) - set(self.views))
    if missing:
      raise ValueError(f"family {self.name!r}: models {missing} have no view")


@functools.cache
def _load(module: str) -> Family:
  family = importlib.import_module(module).FAMILY
  if not isinstance(family, Family):
    raise TypeError(f"{module}.FAMILY is a {type(family).__name__}, not a Family")
  return family


def get(name: str) -> Family:
  """The family ``name``.

  Raises:
    ValueError: no such family (the message lists the valid names).
  """
  if name not in FAMILIES:
    raise ValueError(f"unknown family {name!r}; valid: {sorted(FAMILIES)}")
  return _load(FAMILIES[name])


def all_families() -> list[Family]:
  """Every family of ``FAMILIES``, in table order."""
  return [get(name) for name in FAMILIES]


def of_model(model: str) -> Family:
  """The family that declares the model ``model`` (``config.model.name``).

  Raises:
    ValueError: no family declares it (the message lists every model name).
  """
  families = all_families()
  for family in families:
    if model in family.models:
      return family
  raise ValueError(f"unknown model {model!r}; valid: {model_names()}")


def model_class(model: str) -> type:
  """The class of the model ``model`` (``of_model(model).models[model]``)."""
  return of_model(model).models[model]


def model_names() -> list[str]:
  """Every model name every family declares, sorted."""
  return sorted(m for f in all_families() for m in f.models)


def create_model(config: Any, meta: dict[str, Any], *, rngs: Any) -> Any:
  """Builds ``config.model.name`` for a dataset described by ``meta`` (its ``data_dir`` key,
  when present, locates files the config refers to, such as word vectors)."""
  return model_class(config.model.name).create(config, meta, rngs=rngs)
