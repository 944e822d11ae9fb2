"""Proximal Adagrad and FTRL against their published update rules (written here in
numpy) and against Optax's Adagrad; Keras's own Ftrl is in tests/test_keras_parity.py."""

import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg as jr

X = np.asarray(jax.random.normal(jax.random.key(0), (24, 6)), np.float32)
Y = (X @ np.array([1.0, -0.5, 0.0, 0.0, 0.02, 2.0], np.float32)).astype(np.float32)


def gradient(w):
  return (X.T @ (X @ w - Y) / len(Y)).astype(np.float32)


def run(tx, steps, w0=None):
  w = jnp.zeros(6) if w0 is None else w0
  state = tx.init(w)
  update = jax.jit(tx.update)
  for _ in range(steps):
    updates, state = update(jnp.asarray(gradient(np.asarray(w))), state, w)
    w = optax.apply_updates(w, updates)
  return np.asarray(w), state


def tf_proximal_adagrad(lr, l1, l2, initial_accumulator_value, steps):
  """TensorFlow's ApplyProximalAdagrad, per coordinate, in float64."""
  w = np.zeros(6)
  accum = np.full(6, initial_accumulator_value)
  for _ in range(steps):
    g = gradient(w.astype(np.float32)).astype(np.float64)
    accum += g * g
    lr_t = lr / np.sqrt(accum)
    v = w - lr_t * g
    w = np.sign(v) / (1 + lr_t * l2) * np.maximum(np.abs(v) - lr_t * l1, 0)
  return w


def test_prox_adagrad_equals_tensorflow_proximal_adagrad():
  l1, l2 = 0.05, 0.1
  expected = tf_proximal_adagrad(0.5, l1, l2, 0.1, 40)
  # TF's l2 divides by 1 + lr·l2: the prox of (l2/2)·Σw², jaxreg's L2(l2/2).
  w, _ = run(jr.transforms.prox_adagrad(0.5, jr.ElasticNet(l1, l2 / 2), eps=0.0), 40)
  np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(w == 0, expected == 0)
  assert (w == 0).sum() >= 1 and (w != 0).sum() >= 3


def test_prox_adagrad_without_penalty_is_optax_adagrad():
  ours, _ = run(jr.transforms.prox_adagrad(0.3, jr.L1(0.0)), 20)
  theirs, _ = run(optax.adagrad(0.3), 20)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_prox_adagrad_schedules_checks_and_structured_penalties():
  schedule = optax.linear_schedule(0.5, 0.1, 10)
  ours, state = run(jr.transforms.prox_adagrad(schedule, jr.NonNeg() + jr.L1(0.01)), 10)
  assert (ours >= 0).all() and int(state.count) == 10
  for reg in [jr.GroupLasso(0.1, axis=0), jr.MaxNorm(1.0)]:
    with pytest.raises(ValueError, match="one step per coordinate"):
      jr.transforms.prox_adagrad(0.1, reg)
  with pytest.raises(TypeError, match="regularizer"):
    jr.transforms.prox_adagrad(0.1, lambda p: 0.0)
  tx = jr.transforms.prox_adagrad(0.1, jr.L1(0.1))
  with pytest.raises(ValueError, match="params"):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def mcmahan_ftrl(alpha, beta, l1, l2, n0, steps, w0):
  r"""Algorithm 1 of McMahan et al. (KDD 2013), per coordinate, in float64, with
  accumulators starting at ``n0`` and the L2 term 2·l2 (Keras's l2 is on Σw², the
  paper's λ2 on ½Σw²). ``alpha`` is a number or a function of the step: then
  :math:`σ_t = 1/η_t - 1/η_{t-1}` with :math:`1/η_t = (β + \sqrt{n_t})/α_t`, and
  :math:`α_{-1} = α_0`."""
  rate = alpha if callable(alpha) else (lambda t: alpha)
  z, n, w = np.zeros(6), np.full(6, n0), np.asarray(w0, np.float64)
  previous = rate(0)
  for t in range(steps):
    g = gradient(w.astype(np.float32)).astype(np.float64)
    a = rate(t)
    sigma = (beta + np.sqrt(n + g * g)) / a - (beta + np.sqrt(n)) / previous
    z += g - sigma * w
    n += g * g
    w = np.where(np.abs(z) <= l1, 0.0,
                 -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / a + 2 * l2))
    previous = a
  return w


def test_ftrl_equals_mcmahan_algorithm():
  w0 = np.full(6, 0.1, np.float32)
  expected = mcmahan_ftrl(0.5, 0.2, 0.5, 0.01, 0.1, 40, w0)
  w, _ = run(jr.transforms.ftrl(0.5, beta=0.2, l1=0.5, l2=0.01), 40, jnp.asarray(w0))
  np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(w == 0, expected == 0)
  assert (w == 0).sum() >= 1 and (w != 0).sum() >= 3


def test_ftrl_with_a_schedule_is_mcmahan_s_algorithm_with_those_rates():
  w0 = np.full(6, 0.1, np.float32)
  rates = lambda t: 0.5 * 0.9**t
  expected = mcmahan_ftrl(rates, 0.2, 0.1, 0.01, 0.1, 40, w0)
  w, _ = run(jr.transforms.ftrl(optax.exponential_decay(0.5, 1, 0.9), beta=0.2, l1=0.1,
                                l2=0.01), 40, jnp.asarray(w0))
  np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-6)
  # The rate has fallen to 0.007: the weights have slowed down, not gone to 0.
  assert float(jnp.abs(w).max()) > 0.1


def test_ftrl_on_pytrees_under_jit_and_without_curvature():
  params = {"a": jnp.ones((2, 3)), "b": jnp.zeros(4, jnp.bfloat16)}
  tx = jr.transforms.ftrl(0.1, initial_accumulator_value=0.0, l1=0.1)
  grads = {"a": jnp.full((2, 3), 0.5), "b": jnp.zeros(4, jnp.bfloat16)}
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert new["b"].dtype == jnp.bfloat16
  # No gradient, no accumulator, no L2: Keras divides 0 by 0; this gives 0.
  chex.assert_trees_all_equal(new["b"], jnp.zeros(4, jnp.bfloat16))
  assert np.isfinite(np.asarray(new["a"])).all()
  chex.assert_trees_all_close(state.accumulator["a"], jnp.full((2, 3), 0.25))


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate_power=0.5), "learning_rate_power"),
    (dict(l1=-0.1), "l1"), (dict(l2=-1.0), "l2"), (dict(l2_shrinkage=-1.0), "l2_shrinkage"),
    (dict(beta=-1.0), "beta"), (dict(initial_accumulator_value=-0.1),
                                "initial_accumulator_value"),
])
def test_ftrl_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jr.transforms.ftrl(0.1, **kwargs)


def test_the_former_module_path_warns_and_hands_each_name_on():
  adaptive = importlib.import_module("jaxreg.adaptive")
  for name in ("prox_adagrad", "ftrl", "ProxAdagradState", "FtrlState"):
    with pytest.warns(DeprecationWarning,
                      match=f"jaxreg.adaptive is deprecated: import {name} from jaxreg.transforms"):
      assert getattr(adaptive, name) is getattr(jr.transforms, name)
  with pytest.warns(DeprecationWarning, match="import ftrl from jaxreg.transforms"):
    from jaxreg.adaptive import ftrl  # pylint: disable=import-outside-toplevel
  assert ftrl is jr.transforms.ftrl
