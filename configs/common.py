"""Pieces every family's config shares: argument parsing, sharding rules, trainer defaults.

Each family has one readable base (``configs/hse/base.py``, ...); each file
``configs/<family>/<dataset>.py`` is ``get_config(arg)`` over it. ``arg`` accepts flags and
``key=value`` pairs after a colon, e.g. ``--config configs/hse/activitynet_c3d.py:runlocal,
tau=0,low=weak`` (big_vision's ``parse_arg``).
"""

from __future__ import annotations

from typing import Any

import ml_collections


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses "flag,key=value,..." into a ConfigDict.

  ``spec`` gives each key's default, typed by its value; a *type* instead of a value makes
  the key optional: None unless given (``tau=float``: "tau=0" -> 0.0, absent -> None).
  A bare ``key`` sets True.

  Raises:
    ValueError: an unknown key (lists the valid ones) or a value of the wrong type.
  """
  types = {k: v if isinstance(v, type) else type(v) for k, v in spec.items()}
  out = ml_collections.ConfigDict(
      {k: None if isinstance(v, type) else v for k, v in spec.items()}, type_safe=False)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in spec:
      raise ValueError(f"config arg {key!r} unknown; valid: {sorted(spec)}")
    kind = types[key]
    if not value:
      out[key] = True
    elif kind is bool:
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        raise ValueError(f"config arg {key}={value!r} is not a {kind.__name__}") from None
  return out


# Logical parameter axes -> mesh axes (hvt_jax/sharding.py; a name without a rule is an
# error). Data-parallel: parameters replicated over "data", batch on "data"; tensor
# parallelism over "model" (size 1 by default) for GRU hidden units, attention heads and MLP
# units. FSDP: GRU hidden units and transformer embedding dims are sharded over "data" too.
# GRUs: hidden_in, hidden; embeddings: vocab, embed; transformers: embed, heads, kv, mlp.
DATA_PARALLEL_RULES = (("vocab", None), ("embed", None), ("hidden_in", None),
                       ("hidden", "model"), ("heads", "model"), ("kv", None), ("mlp", "model"))
FSDP_RULES = (("vocab", None), ("embed", "data"), ("hidden_in", None),
              ("hidden", ("data", "model")), ("heads", "model"), ("kv", None),
              ("mlp", "model"))


def trainer_defaults(c: ml_collections.ConfigDict, *, fsdp: bool = False) -> None:
  """The trainer's fields (hvt_jax/train.py), the same for every family."""
  c.seed = 0
  c.num_train_steps = 0            # 0: num_epochs × steps per epoch
  c.mesh = (("data", -1), ("model", 1))
  c.mesh_devices = 0               # 0: all devices; k: the first k (debugging, tests)
  c.sharding_rules = FSDP_RULES if fsdp else DATA_PARALLEL_RULES
  # Pretrained weights loaded after init (hvt_jax/pretrained.py): entries
  # {source, format, into, layers, strict, ignore}; trainable: regex of the parameter
  # paths optax updates ("" = all; the rest stays bit-identical).
  c.init_from = ()
  c.trainable = ""
  c.checkpoint = dict(every_steps=500, max_to_keep=3, asynchronous=True)
  c.log_every_steps = 50
  c.max_steps_in_flight = 8
  c.progress_bar = True


def runlocal_trainer(c: ml_collections.ConfigDict) -> None:
  """The trainer part of every family's ``runlocal``: 4 steps of batch 8, logs and
  checkpoints every 2 steps, no progress bar (tests use these)."""
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.checkpoint.every_steps = 2
  c.progress_bar = False
