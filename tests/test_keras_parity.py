"""jaxreg against Keras 3 itself (JAX backend): constraints, OrthogonalRegularizer,
``l1_l2`` defaults, activity penalties and Ftrl. Skipped when Keras is absent (it is
in the ``test`` extra)."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import chex  # pylint: disable=g-import-not-at-top
import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg as jr
from jaxreg.activity import activity_penalty
import jaxreg.linen as jl
import jaxreg.nnx as jn

keras = pytest.importorskip("keras", minversion="3.0", reason="Keras 3 is a test extra")
if keras.backend.backend() != "jax":
  pytest.skip(f"Keras runs on the {keras.backend.backend()} backend, not jax",
              allow_module_level=True)


def normal(seed, shape, scale=1.0):
  return np.asarray(jax.random.normal(jax.random.key(seed), shape) * scale, np.float32)


KERNELS = {"dense": (normal(0, (6, 4), 0.6), 0), "dense_axis1": (normal(1, (6, 4), 0.6), 1),
           "conv": (normal(2, (3, 3, 2, 4), 0.4), [0, 1, 2])}
CONSTRAINTS = {
    "max_norm": (lambda axis: jr.MaxNorm(1.0, axis=axis),
                 lambda axis: keras.constraints.MaxNorm(1.0, axis=axis)),
    "min_max_norm": (lambda axis: jr.MinMaxNorm(0.8, 1.2, axis=axis),
                     lambda axis: keras.constraints.MinMaxNorm(0.8, 1.2, axis=axis)),
    "min_max_norm_rate": (lambda axis: jr.MinMaxNorm(0.8, 1.2, rate=0.3, axis=axis),
                          lambda axis: keras.constraints.MinMaxNorm(0.8, 1.2, 0.3, axis)),
    "unit_norm": (lambda axis: jr.UnitNorm(axis=axis),
                  lambda axis: keras.constraints.UnitNorm(axis=axis)),
    "non_neg": (lambda axis: jr.NonNeg(), lambda axis: keras.constraints.NonNeg()),
}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", CONSTRAINTS)
def test_constraint_equals_keras(name, kernel):
  w, axis = KERNELS[kernel]
  ours, theirs = CONSTRAINTS[name]
  expected = np.asarray(theirs(axis)(w))
  out = ours(axis).prox({"kernel": jnp.asarray(w)}, 0.1)["kernel"]
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
  # The kernels straddle the bounds: some groups are changed, some are not.
  assert not np.allclose(expected, w)


@pytest.mark.parametrize("mode", ["rows", "columns"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
def test_orthogonal_equals_keras(mode, shape):
  w = normal(3, shape).copy()
  w[0] = 0.0  # a zero row: Keras's epsilon decides
  # A backend tensor: Keras's numpy path of normalize reads axis=0 as -1.
  expected = float(keras.regularizers.OrthogonalRegularizer(0.2, mode=mode)(jnp.asarray(w)))
  np.testing.assert_allclose(jr.Orthogonal(0.2, mode=mode)({"w": jnp.asarray(w)}),
                             expected, rtol=1e-5)


def test_l1_l2_defaults_and_values_equal_keras():
  w = normal(4, (5, 3))
  assert keras.regularizers.l1_l2().get_config() == {"l1": 0.0, "l2": 0.0}
  default = jr.l1_l2()
  assert (float(default.l1), float(default.l2)) == (0.0, 0.0)
  for ours, theirs in [(jr.l1_l2(l1=0.03), keras.regularizers.l1_l2(l1=0.03)),
                       (jr.l1_l2(l2=0.02), keras.regularizers.l1_l2(l2=0.02)),
                       (jr.l1(), keras.regularizers.l1()), (jr.l2(), keras.regularizers.l2())]:
    np.testing.assert_allclose(ours({"w": jnp.asarray(w)}), float(theirs(w)), rtol=1e-6)


# Activity penalties: Keras >= 3.14 divides by the batch size (keras-team/keras#22021).


def keras_activity_penalty(x, l1, l2):
  layer = keras.layers.ActivityRegularization(l1=l1, l2=l2)
  layer(x)
  (loss,) = layer.losses
  return float(loss)


class LinenModel(nn.Module):
  reduction: str = "batch_mean"

  @nn.compact
  def __call__(self, x):
    return jl.ActivityRegularization(l1=0.1, l2=0.02, reduction=self.reduction)(x)


def test_activity_penalty_is_divided_by_the_batch_size_as_in_keras():
  x = normal(5, (6, 3), 2.0)
  expected = keras_activity_penalty(x, 0.1, 0.02)
  summed = 0.1 * np.abs(x).sum() + 0.02 * (x ** 2).sum()
  if keras.version() >= "3.14":
    np.testing.assert_allclose(expected, summed / 6, rtol=1e-6)
  _, mutated = LinenModel().apply({}, x, mutable=jl.LOSSES)
  nnx_layer = jn.ActivityRegularization(l1=0.1, l2=0.02)
  nnx_layer(x)
  for ours in [jl.activity_loss(mutated), jn.activity_loss(nnx_layer),
               activity_penalty(x, jr.ElasticNet(0.1, 0.02))]:
    np.testing.assert_allclose(ours, summed / 6, rtol=1e-6)
  # The sum (Keras before 3.14) is kept as an option.
  _, mutated = LinenModel(reduction="sum").apply({}, x, mutable=jl.LOSSES)
  np.testing.assert_allclose(jl.activity_loss(mutated), summed, rtol=1e-6)
  with pytest.raises(ValueError, match="reduction"):
    jn.ActivityRegularization(l1=0.1, reduction="mean")


# Ftrl ------------------------------------------------------------------------------

FTRL_SETTINGS = {
    "l1": dict(learning_rate=0.5, l1=0.5),
    "all": dict(learning_rate=0.3, learning_rate_power=-0.3, initial_accumulator_value=0.2,
                beta=0.5, l1=0.5, l2=0.01, l2_shrinkage=0.02),
}


@pytest.mark.parametrize("setting", FTRL_SETTINGS)
def test_ftrl_equals_keras_for_50_steps_with_the_same_zeros(setting):
  kwargs = FTRL_SETTINGS[setting]
  x = normal(6, (32, 10))
  true_w = np.where(np.arange(10) < 4, normal(7, (10,)), 0).astype(np.float32)
  y = x @ true_w + 0.1 * normal(8, (32,))

  def gradient(w):  # of the mean squared error / 2, in float32
    return (x.T @ (x @ w - y) / len(y)).astype(np.float32)

  init = normal(9, (10,), 0.1)
  variable = keras.Variable(init)
  optimizer = keras.optimizers.Ftrl(
      learning_rate=kwargs["learning_rate"],
      learning_rate_power=kwargs.get("learning_rate_power", -0.5),
      initial_accumulator_value=kwargs.get("initial_accumulator_value", 0.1),
      beta=kwargs.get("beta", 0.0),
      l1_regularization_strength=kwargs.get("l1", 0.0),
      l2_regularization_strength=kwargs.get("l2", 0.0),
      l2_shrinkage_regularization_strength=kwargs.get("l2_shrinkage", 0.0))
  optimizer.build([variable])
  # Keras's own update (Ftrl.update_step), run functionally and jitted for speed.
  keras_step = jax.jit(optimizer.stateless_apply)
  keras_state, (keras_w,) = [v.value for v in optimizer.variables], [variable.value]
  tx = jr.transforms.ftrl(**kwargs)
  w = jnp.asarray(init)
  state = tx.init(w)
  update = jax.jit(tx.update)
  for _ in range(50):
    (keras_w,), keras_state = keras_step(keras_state, [gradient(np.asarray(keras_w))],
                                         [keras_w])
    updates, state = update(jnp.asarray(gradient(np.asarray(w))), state, w)
    w = optax.apply_updates(w, updates)
  expected = np.asarray(keras_w)
  np.testing.assert_allclose(w, expected, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(w) == 0, expected == 0)
  assert (expected == 0).sum() >= 2 and (expected != 0).sum() >= 2


def test_ftrl_with_a_schedule_departs_from_keras_as_documented():
  """Keras divides by the current rate alone, so its weights shrink towards 0 as a
  schedule decays; jaxreg's σ follows the rate from step to step (McMahan's
  algorithm with those rates, tests/test_adaptive.py) and keeps them."""
  x = normal(10, (16, 4))
  y = x @ np.array([1.0, -1.0, 0.0, 0.5], np.float32)
  gradient = lambda w: (x.T @ (x @ w - y) / len(y)).astype(np.float32)
  keras_schedule = keras.optimizers.schedules.ExponentialDecay(0.5, 1, 0.9)
  variable = keras.Variable(np.zeros(4, np.float32))
  optimizer = keras.optimizers.Ftrl(learning_rate=keras_schedule,
                                    l1_regularization_strength=0.01)
  tx = jr.transforms.ftrl(optax.exponential_decay(0.5, 1, 0.9), l1=0.01)
  w = jnp.zeros(4)
  state = tx.init(w)
  for step in range(40):
    optimizer.apply([gradient(np.asarray(variable.value))], [variable])
    updates, state = tx.update(jnp.asarray(gradient(np.asarray(w))), state, w)
    w = optax.apply_updates(w, updates)
    if step == 0:  # One rate so far: the same step.
      chex.assert_trees_all_close(w, jnp.asarray(variable.value), atol=1e-6, rtol=1e-6)
  keras_w = np.asarray(variable.value)
  assert np.abs(keras_w).max() < 0.2 * np.abs(np.asarray(w)).max(), (keras_w, w)
  assert np.abs(np.asarray(w)).max() > 0.3
