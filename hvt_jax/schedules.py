"""Learning-rate schedules of the three model families, all built from optax.

``make_schedule(config.schedule, steps_per_epoch, num_train_steps)`` returns an
``optax.Schedule``: step -> learning rate, where step k is the k-th update (0-based, as
optax's ``scale_by_learning_rate`` counts). ``config.schedule.name`` picks the rule; every
change applies from its boundary step on (``step >= boundary``):

* ``step_epochs`` (HSE): lr × decay_factor^(boundaries passed), a boundary every
  ``decay_epochs`` epochs.
* ``warmup_cuts`` (HAMMER): linear 0 -> lr over ``warmup_fraction`` of training, then lr,
  then ``factor × lr`` from each cut's fraction of training.
* ``exponential_steps`` (MCHA): lr × decay_rate^floor(step / transition_steps).
* ``constant``: lr.

Fields (``config.schedule.<field>``; every schedule needs ``name`` and ``learning_rate``,
the others default to ``DEFAULTS``, which are the papers' values):

* step_epochs: ``decay_factor`` (0.1), ``decay_epochs`` (10).
  HSE (supp. §1): "we use Adam [6] optimizer with initial learning rate as 0.001, and
  decay it by 10 for every 10 epochs during the training" (15 epochs). Boundaries are
  ``int(e * steps_per_epoch)`` for ``e in range(decay_epochs, num_epochs + 1,
  decay_epochs)`` with the same ``optax.piecewise_constant_schedule`` call as the former
  ``hvt_jax.train.make_optimizer``, so the values are bit-identical, where ``num_epochs``
  is ``make_schedule``'s keyword argument (pass ``config.num_epochs``) or, when omitted,
  ceil(num_train_steps / steps_per_epoch). The two agree whenever num_train_steps <=
  num_epochs × steps_per_epoch; beyond that make_optimizer stopped decaying after
  num_epochs, while the derived bound keeps the every-N-epochs rule to the end.
* warmup_cuts: ``warmup_fraction`` (0.1), ``cuts`` (((0.5, 0.1), (0.75, 0.01))).
  HAMMER (supp. §6.1.4): "The learning rate increases linearly from 0 to the max rate in
  the first 10% training epochs and then drops to 0.1× and 0.01× of the max rate at 50%
  and 75% of the training epochs, respectively." Each factor is relative to the *max*
  rate, NOT cumulative: from 75% the rate is 0.01 × lr (not 0.1 × 0.01 × lr). Fractions are
  of ``num_train_steps``: fraction f starts at the first step k >= f × num_train_steps. The
  warm-up is ``optax.linear_schedule(0, lr, warmup_steps)``: 0 at step 0 (the first update
  is a no-op, as in HF's linear warm-up), lr × k / warmup_steps at step k.
  HAMMER uses Adam with ``learning_rate`` (the max rate) 4e-5 on ActivityNet Captions
  (batch 64) and 2e-4 on TVR (batch 128, "the same learning rate schedule").
* exponential_steps: ``decay_rate`` (0.95), ``transition_steps`` (1000).
  MCHA (§4.2 "Implementation Details"): "The learning rate of all our experiments is
  initialized as 5e-5. We train our model on the HowTo100M for 2 million optimization steps
  and decay the learning rate by a multiplicative factor of 0.98 every ten thousand steps.
  For the MSR-VTT and LSMDC, we train our model for 100 thousand steps and decay the
  learning rate by 0.95 every one thousand steps. And for the ActivityNet, we train our
  model for 100 thousand steps and decay the learning rate by 0.90 every 1,000 steps."
  So the default (0.95 / 1000) is MSR-VTT's and LSMDC's; ActivityNet needs decay_rate=0.90
  and HowTo100M pre-training decay_rate=0.98, transition_steps=10000; learning_rate=5e-5
  everywhere. "Every N steps" is read as a staircase
  (``optax.exponential_decay(..., staircase=True)``); the paper does not say whether the
  decay is smooth or stepwise, and names no warm-up.
* constant: no extra field.

Unknown schedule names and fields unknown to every schedule raise ValueError naming the
field; fields of another schedule are allowed (so one config can switch schedules with
``--config.schedule.name=...``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Callable

import optax

# Per-schedule fields and their defaults (the papers' values; see the module docstring).
DEFAULTS: dict[str, dict[str, Any]] = {
    "step_epochs": dict(decay_factor=0.1, decay_epochs=10),
    "warmup_cuts": dict(warmup_fraction=0.1, cuts=((0.5, 0.1), (0.75, 0.01))),
    "exponential_steps": dict(decay_rate=0.95, transition_steps=1000),
    "constant": {},
}
COMMON_FIELDS = ("name", "learning_rate")


def _prefix(field: str) -> str:
  return f"config.schedule.{field}"


def _fields(cfg: Any) -> dict[str, Any]:
  """The schedule config as a plain dict (ConfigDict, dict, or any attribute object)."""
  if hasattr(cfg, "to_dict"):                        # ml_collections.ConfigDict
    return dict(cfg.to_dict())
  if isinstance(cfg, Mapping):
    return dict(cfg)
  return {k: v for k, v in vars(cfg).items() if not k.startswith("_")}


def _number(fields: dict[str, Any], name: str, *, kind: type = float) -> Any:
  value = fields[name]
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{_prefix(name)} must be a number, got {value!r}")
  if kind is int and int(value) != value:
    raise ValueError(f"{_prefix(name)} must be an integer, got {value!r}")
  if not math.isfinite(value):
    raise ValueError(f"{_prefix(name)} must be finite, got {value!r}")
  return kind(value)


def _fraction_step(fraction: float, num_train_steps: int) -> int:
  """The first step k with k >= fraction × num_train_steps."""
  # The tolerance absorbs round-off: 0.1 * 30 is 3.0000000000000004 in floating point.
  return max(0, math.ceil(fraction * num_train_steps - 1e-6))


def check_config(cfg: Any) -> dict[str, Any]:
  """Validates a schedule config and fills in the defaults.

  Args:
    cfg: ``config.schedule`` (ConfigDict, dict or attribute object) with ``name``,
      ``learning_rate`` and the named schedule's fields (see ``DEFAULTS``).

  Returns:
    A dict with ``name``, ``learning_rate`` (float) and every field of that schedule
    (``cuts`` as a tuple of (fraction, factor) float pairs).

  Raises:
    ValueError: unknown name (lists the valid ones), a field unknown to every schedule, a
      missing learning_rate, or a value out of range; each message names the field.
  """
  fields = _fields(cfg)
  name = fields.get("name")
  if name not in DEFAULTS:
    raise ValueError(f"{_prefix('name')}={name!r} unknown; valid: {sorted(DEFAULTS)}")
  known = set(COMMON_FIELDS).union(*DEFAULTS.values())
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"{', '.join(_prefix(u) for u in unknown)} unknown; valid fields: "
                     f"{sorted(known)}")
  if "learning_rate" not in fields:
    raise ValueError(f"{_prefix('learning_rate')} is required")
  out = {"name": name, "learning_rate": _number(fields, "learning_rate")}
  if out["learning_rate"] <= 0:
    raise ValueError(f"{_prefix('learning_rate')} must be > 0, got {out['learning_rate']}")
  merged = {**DEFAULTS[name], **{k: v for k, v in fields.items() if k in DEFAULTS[name]}}

  if name == "step_epochs":
    out["decay_factor"] = _number(merged, "decay_factor")
    out["decay_epochs"] = _number(merged, "decay_epochs", kind=int)
    if not 0 < out["decay_factor"]:
      raise ValueError(f"{_prefix('decay_factor')} must be > 0, got {out['decay_factor']}")
    if out["decay_epochs"] < 1:
      raise ValueError(f"{_prefix('decay_epochs')} must be >= 1 (use name='constant' for no "
                       f"decay), got {out['decay_epochs']}")
  elif name == "warmup_cuts":
    warmup = _number(merged, "warmup_fraction")
    if not 0 <= warmup < 1:
      raise ValueError(f"{_prefix('warmup_fraction')} must be in [0, 1), got {warmup}")
    out["warmup_fraction"] = warmup
    out["cuts"] = _check_cuts(merged["cuts"], warmup)
  elif name == "exponential_steps":
    out["decay_rate"] = _number(merged, "decay_rate")
    out["transition_steps"] = _number(merged, "transition_steps", kind=int)
    if not 0 < out["decay_rate"]:
      raise ValueError(f"{_prefix('decay_rate')} must be > 0, got {out['decay_rate']}")
    if out["transition_steps"] < 1:
      raise ValueError(f"{_prefix('transition_steps')} must be >= 1, got "
                       f"{out['transition_steps']}")
  return out


def _check_cuts(cuts: Any, warmup_fraction: float) -> tuple[tuple[float, float], ...]:
  """(fraction, factor) pairs: fractions in (0, 1], strictly increasing, >= the warm-up."""
  field = _prefix("cuts")
  try:
    pairs = tuple((float(f), float(s)) for f, s in cuts)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{field} must be a sequence of (fraction, factor) pairs, got "
                     f"{cuts!r}") from e
  for i, (fraction, factor) in enumerate(pairs):
    if not (0 < fraction <= 1 and math.isfinite(fraction)):
      raise ValueError(f"{field}[{i}] fraction must be in (0, 1], got {fraction}")
    if not (factor >= 0 and math.isfinite(factor)):
      raise ValueError(f"{field}[{i}] factor must be >= 0, got {factor}")
    if fraction < warmup_fraction:
      raise ValueError(f"{field}[{i}] fraction {fraction} falls inside the warm-up "
                       f"({_prefix('warmup_fraction')}={warmup_fraction})")
    if i and fraction <= pairs[i - 1][0]:
      raise ValueError(f"{field} fractions must be strictly increasing, got "
                       f"{[f for f, _ in pairs]}")
  return pairs


def _step_epochs(c: dict[str, Any], steps_per_epoch: int, num_train_steps: int,
                 num_epochs: int | None) -> optax.Schedule:
  if num_epochs is None:
    num_epochs = -(-num_train_steps // steps_per_epoch)
  # The dict comprehension and the call are the former train.make_optimizer's, verbatim
  # in effect, so the values stay bit-identical (tests compare both).
  boundaries = {int(e * steps_per_epoch): c["decay_factor"]
                for e in range(c["decay_epochs"], num_epochs + 1, c["decay_epochs"])}
  return optax.piecewise_constant_schedule(c["learning_rate"], boundaries)


def _warmup_cuts(c: dict[str, Any], steps_per_epoch: int, num_train_steps: int,
                 num_epochs: int | None) -> optax.Schedule:
  del steps_per_epoch, num_epochs
  lr = c["learning_rate"]
  warmup_steps = _fraction_step(c["warmup_fraction"], num_train_steps)
  # Absolute factors of the max rate (HAMMER), so each piece is its own constant rather
  # than a cumulative piecewise_constant_schedule product.
  schedules = [optax.constant_schedule(lr)]
  boundaries = []
  if warmup_steps > 0:
    schedules.insert(0, optax.linear_schedule(0.0, lr, warmup_steps))
    boundaries.append(warmup_steps)
  for fraction, factor in c["cuts"]:
    schedules.append(optax.constant_schedule(lr * factor))
    boundaries.append(max(_fraction_step(fraction, num_train_steps), warmup_steps))
  return optax.join_schedules(schedules, boundaries) if boundaries else schedules[0]


def _exponential_steps(c: dict[str, Any], steps_per_epoch: int, num_train_steps: int,
                       num_epochs: int | None) -> optax.Schedule:
  del steps_per_epoch, num_train_steps, num_epochs
  return optax.exponential_decay(c["learning_rate"], transition_steps=c["transition_steps"],
                                 decay_rate=c["decay_rate"], staircase=True)


def _constant(c: dict[str, Any], steps_per_epoch: int, num_train_steps: int,
              num_epochs: int | None) -> optax.Schedule:
  del steps_per_epoch, num_train_steps, num_epochs
  return optax.constant_schedule(c["learning_rate"])


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "step_epochs": _step_epochs,
    "warmup_cuts": _warmup_cuts,
    "exponential_steps": _exponential_steps,
    "constant": _constant,
}


def make_schedule(cfg: Any, steps_per_epoch: int, num_train_steps: int, *,
                  num_epochs: int | None = None) -> optax.Schedule:
  """Builds ``config.schedule``'s learning-rate schedule.

  Args:
    cfg: ``config.schedule``: ``name`` (one of ``SCHEDULES``), ``learning_rate`` (the base
      / max rate) and that schedule's fields (module docstring, ``DEFAULTS``).
    steps_per_epoch: optimizer steps per epoch (>= 1); used by "step_epochs".
    num_train_steps: total optimizer steps (>= 1); "warmup_cuts" fractions are of it.
    num_epochs: "step_epochs" only: the last epoch that may carry a boundary, as
      ``config.num_epochs`` in the former ``train.make_optimizer``; None derives
      ceil(num_train_steps / steps_per_epoch).

  Returns:
    An ``optax.Schedule``: step (int or int array) -> float32 learning rate.

  Raises:
    ValueError: an invalid config (see ``check_config``) or non-positive step counts.
  """
  c = check_config(cfg)
  for name, value in (("steps_per_epoch", steps_per_epoch), ("num_train_steps", num_train_steps)):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or int(value) != value or value < 1):
      raise ValueError(f"make_schedule: {name} must be an integer >= 1, got {value!r}")
  if num_epochs is not None and (int(num_epochs) != num_epochs or num_epochs < 0):
    raise ValueError(f"make_schedule: num_epochs must be an integer >= 0, got {num_epochs!r}")
  return SCHEDULES[c["name"]](c, int(steps_per_epoch), int(num_train_steps),
                              None if num_epochs is None else int(num_epochs))
