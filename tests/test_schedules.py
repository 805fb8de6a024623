"""Learning-rate schedules: values at and around every boundary, bit-compatibility of
"step_epochs" with train.make_optimizer's schedule, and config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from hvt_jax import schedules


def _values(schedule, steps):
  """The schedule at each step, as float32 numpy (one vectorised call)."""
  return np.asarray(schedule(jnp.asarray(steps, jnp.int32)), np.float32)


def _at(schedule, step):
  return float(schedule(step))


def _check(schedule, expect, **tol):
  """Asserts schedule(step) == value for every {step: value}, in one vectorised call."""
  steps = sorted(expect)
  np.testing.assert_allclose(_values(schedule, steps), [expect[k] for k in steps],
                             err_msg=f"steps {steps}", **tol)


# ----------------------------------------------------------------------------- step_epochs


def _make_optimizer_boundaries(lr, factor, decay_epochs, num_epochs, steps_per_epoch):
  """train.make_optimizer's schedule, transcribed (the reference for bit-compatibility)."""
  boundaries = {int(e * steps_per_epoch): factor
                for e in range(decay_epochs, num_epochs + 1, decay_epochs)
                if decay_epochs > 0}
  return optax.piecewise_constant_schedule(lr, boundaries)


def test_step_epochs_values_around_boundaries():
  cfg = dict(name="step_epochs", learning_rate=1e-3, decay_factor=0.1, decay_epochs=10)
  spe = 7
  sched = schedules.make_schedule(cfg, spe, 25 * spe, num_epochs=25)
  lr = np.float32(1e-3)
  expect = {0: lr, 69: lr, 70: lr * np.float32(0.1), 71: lr * np.float32(0.1),
            139: lr * np.float32(0.1), 140: lr * np.float32(0.1) * np.float32(0.1),
            174: lr * np.float32(0.1) * np.float32(0.1)}
  _check(sched, expect, rtol=1e-6)


@pytest.mark.parametrize("lr,factor,decay_epochs,num_epochs,spe,num_steps", [
    (1e-3, 0.1, 10, 15, 156, 0),       # HSE ActivityNet: 15 epochs, one decay at epoch 10
    (1e-3, 0.1, 10, 15, 7, 4),         # runlocal: num_train_steps=4 < one epoch
    (3e-4, 0.5, 2, 9, 13, 0),          # several boundaries, the last epoch not a multiple
    (1e-3, 0.1, 10, 20, 1, 0),         # a boundary exactly at the end of training
    (2e-3, 0.3, 3, 6, 5, 50),          # num_train_steps beyond num_epochs: no more decay
])
def test_step_epochs_bit_identical_to_make_optimizer(lr, factor, decay_epochs, num_epochs,
                                                     spe, num_steps):
  num_train_steps = num_steps or num_epochs * spe
  cfg = ml_collections.ConfigDict(dict(name="step_epochs", learning_rate=lr,
                                       decay_factor=factor, decay_epochs=decay_epochs))
  sched = schedules.make_schedule(cfg, spe, num_train_steps, num_epochs=num_epochs)
  steps = np.arange(num_train_steps + 3 * spe)
  ref = _make_optimizer_boundaries(lr, factor, decay_epochs, num_epochs, spe)
  np.testing.assert_array_equal(_values(sched, steps), _values(ref, steps))

  # And through train.make_optimizer itself: Adam updates at chosen optimizer counts are
  # bit-identical to Adam driven by make_schedule (the lr is the only difference possible).
  # Imported here: hvt_jax.train pulls in TensorFlow (seconds), which no other test needs.
  from hvt_jax import train  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(
      num_epochs=num_epochs, num_train_steps=num_steps,
      optax=dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0), schedule=cfg.to_dict()))
  old_tx = train.make_optimizer(config, spe, num_train_steps)
  new_tx = optax.chain(optax.adam(sched, b1=0.9, b2=0.999, eps=1e-8))
  params = {"w": jnp.ones((3,))}
  grads = {"w": jnp.asarray([1.0, -2.0, 0.5])}
  for count in sorted({0, spe * decay_epochs - 1, spe * decay_epochs, num_train_steps - 1}):
    got = []
    for tx in (old_tx, new_tx):
      state = optax.tree_utils.tree_set(tx.init(params), count=jnp.asarray(count, jnp.int32))
      got.append(np.asarray(tx.update(grads, state, params)[0]["w"]))
    np.testing.assert_array_equal(got[0], got[1], err_msg=f"count {count}")


def test_step_epochs_num_epochs_defaults_to_training_length():
  cfg = dict(name="step_epochs", learning_rate=1e-3)      # HSE defaults: ×0.1 / 10 epochs
  steps = np.arange(0, 200)
  derived = schedules.make_schedule(cfg, 10, 150)         # ceil(150 / 10) = 15 epochs
  explicit = schedules.make_schedule(cfg, 10, 150, num_epochs=15)
  np.testing.assert_array_equal(_values(derived, steps), _values(explicit, steps))
  assert _at(derived, 99) == pytest.approx(1e-3) and _at(derived, 100) == pytest.approx(1e-4)
  # Training past config.num_epochs: make_optimizer's bound (num_epochs=15) stops decaying,
  # the derived bound (ceil(250 / 10) = 25 epochs) decays again at epoch 20.
  longer = schedules.make_schedule(cfg, 10, 250)
  assert _at(longer, 200) == pytest.approx(1e-5)
  assert _at(schedules.make_schedule(cfg, 10, 250, num_epochs=15), 200) == pytest.approx(1e-4)


# ----------------------------------------------------------------------------- warmup_cuts


def test_warmup_cuts_hammer_values_and_factors_are_not_cumulative():
  lr = 4e-5                                     # HAMMER ActivityNet max rate
  sched = schedules.make_schedule(dict(name="warmup_cuts", learning_rate=lr), 123, 1000)
  expect = {0: 0.0, 1: lr / 100, 50: lr / 2, 99: lr * 0.99, 100: lr, 101: lr, 499: lr,
            500: lr * 0.1, 501: lr * 0.1, 749: lr * 0.1,
            750: lr * 0.01, 751: lr * 0.01, 999: lr * 0.01, 5000: lr * 0.01}
  _check(sched, expect, rtol=1e-6, atol=1e-12)
  # "0.1× and 0.01× of the max rate": from 75% it is 0.01·lr, not 0.1·0.01·lr.
  assert _at(sched, 800) == pytest.approx(lr * 0.01, rel=1e-6)
  # Monotone: rises during warm-up, never rises afterwards.
  v = _values(sched, np.arange(1000))
  assert np.all(np.diff(v[:101]) > 0) and np.all(np.diff(v[100:]) <= 0)


def test_warmup_cuts_custom_and_rounding_and_no_warmup():
  cfg = dict(name="warmup_cuts", learning_rate=1.0, warmup_fraction=0.1,
             cuts=[[0.29, 0.5], [0.7, 0.2], [1.0, 0.0]])
  sched = schedules.make_schedule(cfg, 1, 100)
  # 0.29 * 100 is 28.999999999999996: the cut still starts at step 29, not 28.
  np.testing.assert_allclose(_values(sched, [9, 10, 28, 29, 69, 70, 99, 100]),
                             [0.9, 1.0, 1.0, 0.5, 0.5, 0.2, 0.2, 0.0], rtol=1e-6)
  # A fraction that does not land on a step starts at the next step (first k >= f·N).
  odd = schedules.make_schedule(dict(name="warmup_cuts", learning_rate=1.0,
                                     warmup_fraction=0.1, cuts=((0.5, 0.1),)), 1, 7)
  np.testing.assert_allclose(_values(odd, range(7)), [0, 1, 1, 1, 0.1, 0.1, 0.1],
                             rtol=1e-6)
  flat = schedules.make_schedule(dict(name="warmup_cuts", learning_rate=2.0,
                                      warmup_fraction=0.0, cuts=()), 1, 10)
  np.testing.assert_allclose(_values(flat, [0, 5, 9]), [2.0, 2.0, 2.0])


# ----------------------------------------------------------------------- exponential_steps


@pytest.mark.parametrize("rate,every", [(0.95, 1000), (0.90, 1000), (0.98, 10000)])
def test_exponential_steps_staircase(rate, every):
  lr = 5e-5                                     # MCHA: every experiment
  cfg = dict(name="exponential_steps", learning_rate=lr, decay_rate=rate,
             transition_steps=every)
  sched = schedules.make_schedule(cfg, 50, 100_000)
  powers = {0: 0, 1: 0, every - 1: 0, every: 1, every + 1: 1, 2 * every - 1: 1,
            2 * every: 2, 50 * every + 7: 50}
  _check(sched, {step: lr * rate ** k for step, k in powers.items()}, rtol=2e-6)


def test_exponential_steps_defaults_are_msrvtt():
  sched = schedules.make_schedule(dict(name="exponential_steps", learning_rate=1.0), 1, 10)
  assert _at(sched, 999) == 1.0 and _at(sched, 1000) == pytest.approx(0.95)


def test_constant_and_schedules_jit():
  sched = schedules.make_schedule(ml_collections.ConfigDict(
      dict(name="constant", learning_rate=3e-4)), 10, 100)
  np.testing.assert_allclose(_values(sched, [0, 50, 10**6]), [3e-4] * 3, rtol=1e-7)
  for name in schedules.SCHEDULES:
    s = schedules.make_schedule(dict(name=name, learning_rate=1e-3), 10, 100)
    np.testing.assert_allclose(jax.jit(s)(jnp.int32(60)), s(60), rtol=1e-7)


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cfg,field", [
    (dict(name="cosine", learning_rate=1e-3), "config.schedule.name"),
    (dict(learning_rate=1e-3), "config.schedule.name"),
    (dict(name="constant"), "config.schedule.learning_rate"),
    (dict(name="constant", learning_rate=0.0), "config.schedule.learning_rate"),
    (dict(name="constant", learning_rate="1e-3"), "config.schedule.learning_rate"),
    (dict(name="constant", learning_rate=1e-3, decay_epoch=3), "config.schedule.decay_epoch"),
    (dict(name="step_epochs", learning_rate=1e-3, decay_epochs=0),
     "config.schedule.decay_epochs"),
    (dict(name="step_epochs", learning_rate=1e-3, decay_epochs=2.5),
     "config.schedule.decay_epochs"),
    (dict(name="step_epochs", learning_rate=1e-3, decay_factor=-0.1),
     "config.schedule.decay_factor"),
    (dict(name="warmup_cuts", learning_rate=1e-3, warmup_fraction=1.0),
     "config.schedule.warmup_fraction"),
    (dict(name="warmup_cuts", learning_rate=1e-3, warmup_fraction=-0.1),
     "config.schedule.warmup_fraction"),
    (dict(name="warmup_cuts", learning_rate=1e-3, cuts=((0.75, 0.01), (0.5, 0.1))),
     "config.schedule.cuts"),
    (dict(name="warmup_cuts", learning_rate=1e-3, cuts=((1.5, 0.1),)), "config.schedule.cuts"),
    (dict(name="warmup_cuts", learning_rate=1e-3, cuts=((0.0, 0.1),)), "config.schedule.cuts"),
    (dict(name="warmup_cuts", learning_rate=1e-3, cuts=((0.05, 0.1),)),
     "config.schedule.cuts"),
    (dict(name="warmup_cuts", learning_rate=1e-3, cuts=((0.5, -1.0),)),
     "config.schedule.cuts"),
    (dict(name="warmup_cuts", learning_rate=1e-3, cuts=(0.5, 0.1)), "config.schedule.cuts"),
    (dict(name="exponential_steps", learning_rate=1e-3, transition_steps=0),
     "config.schedule.transition_steps"),
    (dict(name="exponential_steps", learning_rate=1e-3, decay_rate=0.0),
     "config.schedule.decay_rate"),
])
def test_config_errors_name_the_field(cfg, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    schedules.make_schedule(cfg, 10, 100)


def test_unknown_name_lists_valid_ones_and_other_schedules_fields_are_allowed():
  with pytest.raises(ValueError) as e:
    schedules.make_schedule(dict(name="cosine", learning_rate=1e-3), 10, 100)
  for name in schedules.SCHEDULES:
    assert repr(name) in str(e.value)
  # One config carrying every schedule's fields switches with name= alone.
  everything = dict(learning_rate=1e-3, **{k: v for d in schedules.DEFAULTS.values()
                                           for k, v in d.items()})
  for name in schedules.SCHEDULES:
    schedules.make_schedule(dict(everything, name=name), 10, 100)


@pytest.mark.parametrize("spe,steps,kwargs", [(0, 100, {}), (10, 0, {}), (10, 2.5, {}),
                                              (True, 100, {}), (10, 100, {"num_epochs": -1})])
def test_step_count_errors(spe, steps, kwargs):
  with pytest.raises(ValueError, match="make_schedule"):
    schedules.make_schedule(dict(name="constant", learning_rate=1e-3), spe, steps, **kwargs)
