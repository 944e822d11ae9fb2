"""Promises at the edges: x64, Python scalars, empty arrays, schedules that reach 0,
grouped-query heads, ridge paths, and the error a user meets for each bad input.

One test (or one group) per case that once gave a silently wrong answer, a crash or an
unclear error. Blockwise attention on an explicit-axis mesh and every public name on
both kinds of mesh are checked in ``tests/test_conformance.py``; the data-parallel
example's claims in ``tests/test_examples.py``.
"""

import re

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn import linear_model

import jaxreg as jr
from jaxreg import attention
from jaxreg import cv
from jaxreg import linen as jl
from jaxreg import masks

KEY = jax.random.key(0)


# linen.activity_loss reads the 'losses' collection only ------------------------------

class _NormThenPenalty(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=False)(x)
    return jl.ActivityRegularization(l1=0.1)(x)


def test_activity_loss_ignores_batch_stats_beside_it():
  model = _NormThenPenalty()
  x = jax.random.normal(KEY, (8, 4)) * 3 + 2
  variables = model.init(jax.random.key(1), x)
  _, stats_only = model.apply(variables, x, mutable=["batch_stats"])
  assert float(jl.activity_loss(stats_only)) == 0.0  # Nothing was recorded.
  y, both = model.apply(variables, x, mutable=["batch_stats", "losses"])
  expected = 0.1 * float(jnp.sum(jnp.abs(y))) / 8  # Keras's batch mean of l1·Σ|a|.
  assert float(jl.activity_loss(both)) == pytest.approx(expected, rel=1e-6)
  assert float(jl.activity_loss(both["losses"])) == pytest.approx(expected, rel=1e-6)
  with pytest.raises(ValueError, match="holds 'activity' entries beside others"):
    jl.activity_loss({"a": both["losses"]["ActivityRegularization_0"],
                      "b": {"mean": jnp.ones(2)}})


# Python-float leaves are parameters -----------------------------------------------------

def test_python_float_leaves_are_penalized_and_moved_by_the_prox():
  assert float(jr.L2(1.0)((jnp.array([1.0]), 3.0))) == 10.0
  assert float(jr.L1(0.5)({"a": 3.0, "b": -1.0})) == 2.0  # Python floats only.
  projected = jr.NonNeg().prox((jnp.array([-1.0]), -1.0), 1.0)
  assert float(projected[1]) == 0.0
  shrunk = (jr.L1(1.0) + jr.L2(0.5)).prox({"a": 3.0}, 1.0)
  assert float(shrunk["a"]) == 1.0
  assert jr.L1(0.1).selected({"w": jnp.ones((2, 2)), "s": 0.5}) == {"w": (2, 2), "s": ()}
  # Integers are not parameters: a tree of them alone still selects nothing.
  with pytest.raises(ValueError, match="selects no floating-point parameter"):
    jr.L1(0.1)({"count": 3})


@pytest.mark.parametrize("make", [
    lambda reg: jr.transforms.prox_sgd(0.1, reg),
    lambda reg: jr.transforms.prox_sgd(0.1, reg, accelerated=True),
    lambda reg: jr.transforms.prox_adam(0.1, reg),
    lambda reg: jr.transforms.prox_adagrad(0.1, reg),
    lambda reg: optax.chain(optax.sgd(0.1), jr.transforms.proximal(0.1, reg)),
    lambda reg: optax.chain(jr.transforms.add_gradient(reg), optax.sgd(0.1)),
], ids=["prox_sgd", "fista", "prox_adam", "prox_adagrad", "proximal", "add_gradient"])
def test_transforms_move_python_float_leaves_as_0d_arrays(make):
  tx = make(jr.L1(0.5))
  as_floats = {"w": jnp.array([1.0, -2.0]), "b": 0.3}
  as_arrays = {"w": jnp.array([1.0, -2.0]), "b": jnp.float32(0.3)}
  grads = {"w": jnp.array([0.1, 0.1]), "b": jnp.float32(-0.2)}
  results = []
  for params in (as_floats, as_arrays):
    state = tx.init(params)
    for _ in range(3):
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    results.append(params)
  assert float(results[0]["b"]) == float(results[1]["b"])
  assert float(results[0]["b"]) != 0.3  # The float leaf moved.
  np.testing.assert_array_equal(results[0]["w"], results[1]["w"])


# cross_validate refuses a grid point that would train as another ------------------------

def _ridge_fit(strength, key, data, weights):
  del key
  x, y = data
  reg = jr.L2(strength)  # The grid point reaches jaxreg's check here, traced.
  return jnp.sum(weights * x * y) / (jnp.sum(weights * x**2) + reg({"w": jnp.ones(())}))


def _squared_error(a, data, weights):
  x, y = data
  return jnp.sum(weights * (a * x - y) ** 2) / jnp.sum(weights)


_LINE = (jnp.linspace(-1, 1, 20), 2 * jnp.linspace(-1, 1, 20) + 0.1)


@pytest.mark.parametrize("grid, match", [
    ([1.0, float("nan"), -1.0, 10.0], r"grid is NaN at grid point\(s\) \[1\]"),
    ([1.0, -1.0, 10.0], r"grid is passed to jaxreg as 'strength', which must be finite "
                        r"and >= 0; grid point\(s\) \[1\] are \[-1.0\]"),
])
def test_cross_validate_raises_for_a_bad_known_grid_point(grid, match):
  with pytest.raises(ValueError, match=match):
    cv.cross_validate(_ridge_fit, _squared_error, _LINE, jnp.array(grid), folds=4)


def test_cross_validate_marks_bad_traced_grid_points_failed():
  @jax.jit
  def run(grid):
    result = cv.cross_validate(_ridge_fit, _squared_error, _LINE, grid, folds=4)
    return result.failed, result.best_index
  failed, best = run(jnp.array([1.0, -1.0, 10.0, jnp.nan, 0.5]))
  np.testing.assert_array_equal(failed, [False, True, False, True, False])
  assert int(best) in (0, 2, 4)


def test_cross_validate_checks_rates_and_named_grid_leaves():
  def fit(hparams, key, data, weights):
    x, y = data
    x = jr.dropout(key, x, hparams["rate"])
    return jnp.sum(weights * x * y) / (jnp.sum(weights * x**2) + hparams["l2"])
  grid = {"l2": jnp.array([0.1, 0.2]), "rate": jnp.array([0.1, 1.5])}
  with pytest.raises(ValueError, match=r"grid\['rate'\] is passed to jaxreg as 'rate', "
                                       r"which must be in \[0, 1\]; grid point\(s\) \[1\]"):
    cv.cross_validate(fit, _squared_error, _LINE, grid, folds=4, key=KEY)
  # A leaf that never reaches a check may be negative (a shift, a log-strength).
  grid = {"l2": jnp.array([-0.01, 0.2]), "rate": jnp.array([0.1, 0.2])}
  result = cv.cross_validate(fit, _squared_error, _LINE, grid, folds=4, key=KEY)
  assert not bool(result.failed.any())


# lasso_path: non-finite data, ridge with explicit alphas --------------------------------

def test_lasso_path_refuses_non_finite_data_and_marks_traced_nan():
  X = np.random.default_rng(0).normal(size=(6, 3))
  y = X @ np.array([1.0, 0.0, -1.0])
  for bad in ("X", "y"):
    data = {"X": X.copy(), "y": y.copy()}
    data[bad][1] = np.nan
    with pytest.raises(ValueError, match=f"{bad} contains NaN or infinity"):
      cv.lasso_path(data["X"], data["y"], alphas=3)
  X[0, 0] = np.nan
  _, coefs = jax.jit(lambda X: cv.lasso_path(X, y, alphas=jnp.array([1.0, 0.1])))(X)
  assert bool(jnp.isnan(coefs).all())


def test_ridge_path_with_explicit_alphas_equals_scikit_learn_and_the_normal_equations():
  with jax.enable_x64(True):
    X = np.random.default_rng(1).normal(size=(40, 5))
    y = X @ np.arange(5.0) + np.random.default_rng(2).normal(size=40)
    alphas = np.array([10.0, 1.0, 0.1])
    _, coefs = cv.lasso_path(X, y, l1_ratio=0.0, alphas=alphas, tol=1e-12,
                             max_iter=100_000)
    _, sk_coefs, _ = linear_model.enet_path(X, y, l1_ratio=0.0, alphas=alphas, tol=1e-12,
                                            max_iter=100_000)
    n = len(y)
    exact = np.stack([np.linalg.solve(X.T @ X / n + a * np.eye(5), X.T @ y / n)
                      for a in alphas], axis=1)
    # A gap of tol·‖y‖² = 8e-10 bounds the distance to the solution by about 3e-6 here.
    np.testing.assert_allclose(coefs, exact, atol=1e-5)
    np.testing.assert_allclose(sk_coefs, exact, atol=1e-5)


# Proximal maps: thresholds, bounds, gradients -------------------------------------------

V = jnp.array([3.0, -1.0, 0.5])


@pytest.mark.parametrize("call, name", [
    (lambda t: jr.prox.soft_threshold(V, t), "t"),
    (lambda t: jr.prox.hard_threshold(V, t), "t"),
    (lambda t: jr.prox.ridge(V, t), "t"),
    (lambda t: jr.prox.elastic_net(V, t, 0.1), "t1"),
    (lambda t: jr.prox.elastic_net(V, 0.1, t), "t2"),
    (lambda t: jr.prox.group_soft_threshold(V, t, 0), "t"),
    (lambda t: jr.prox.nonneg_soft_threshold(V, t), "t"),
    (lambda t: jr.prox.nonneg_ridge(V, t), "t"),
    (lambda t: jr.prox.max_norm(V, t), "max_value"),
    (lambda t: jr.prox.min_max_norm(V, t, 2.0), "min_value"),
    (lambda t: jr.prox.max_norm(V, 1.0, epsilon=t), "epsilon"),
])
@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_proximal_maps_refuse_a_negative_or_nan_threshold(call, name, bad):
  with pytest.raises(ValueError, match=f"{name} must be finite and >= 0, got {bad}"):
    call(bad)
  # Traced, it acts as 0: the prox of a zero penalty (or a zero bound's projection).
  assert bool(jnp.all(jnp.isfinite(jax.jit(call)(bad))))


def test_traced_negative_threshold_is_the_identity():
  np.testing.assert_array_equal(jax.jit(jr.prox.soft_threshold)(V, -1.0), V)
  np.testing.assert_array_equal(jax.jit(jr.prox.ridge)(V, -0.5), V)


def test_integer_input_is_computed_in_floats():
  np.testing.assert_array_equal(jr.prox.soft_threshold(jnp.array([3, -1]), 0.5),
                                [2.5, -0.5])


def test_max_norm_is_the_identity_around_zero_as_optax_s_projection():
  jacobian = jax.jacobian(lambda x: jr.prox.max_norm(x, 1.0, axis=None, epsilon=0.0))
  reference = jax.jacobian(lambda x: optax.projections.projection_l2_ball(x, 1.0))
  for x in (jnp.zeros(3), jnp.array([0.1, -0.2, 0.3]), jnp.array([3.0, 0.0, 4.0])):
    np.testing.assert_allclose(jacobian(x), reference(x), rtol=1e-6, atol=1e-7)
  assert float(jax.grad(lambda x: jr.prox.max_norm(x, 1.0, axis=None, epsilon=0.0))(0.0)) == 1.0
  # A ball of radius 0 is the point 0: its projection's derivative is 0 there.
  assert float(jax.grad(lambda x: jr.prox.max_norm(x, 0.0, axis=None, epsilon=0.0))(0.0)) == 0.0
  # MinMaxNorm with min_value 0 is the same ball.
  np.testing.assert_array_equal(
      jax.jacobian(lambda x: jr.prox.min_max_norm(x, 0.0, 1.0, axis=None, epsilon=0.0))(
          jnp.zeros(3)), np.eye(3))


# A learning rate of 0 leaves the weights where they are ---------------------------------

_OPTIMIZERS = {
    "proximal": lambda lr: optax.chain(optax.sgd(lr), jr.transforms.proximal(lr, jr.L1(0.1))),
    "prox_sgd": lambda lr: jr.transforms.prox_sgd(lr, jr.L1(0.1), momentum=0.9),
    "fista": lambda lr: jr.transforms.prox_sgd(lr, jr.L1(0.1), accelerated=True),
    "prox_adam": lambda lr: jr.transforms.prox_adam(lr, jr.L1(0.1)),
    "prox_adagrad": lambda lr: jr.transforms.prox_adagrad(lr, jr.L1(0.1)),
    "ftrl": lambda lr: jr.transforms.ftrl(lr, l1=0.01),
}


@pytest.mark.parametrize("name", list(_OPTIMIZERS))
def test_a_schedule_that_reaches_zero_stops_the_weights(name):
  steps = 4
  tx = _OPTIMIZERS[name](optax.cosine_decay_schedule(0.1, steps - 1))  # 0 at step 3
  target = jnp.array([1.0, -0.5, 0.02])
  loss = lambda w: 0.5 * jnp.sum((w - target) ** 2)
  w = jnp.array([0.3, 0.2, -0.4])
  state = tx.init(w)
  trajectory = []
  for _ in range(steps):
    updates, state = tx.update(jax.grad(loss)(w), state, w)
    w = optax.apply_updates(w, updates)
    trajectory.append(w)
  assert not np.array_equal(trajectory[-3], trajectory[-2]), "it moves before"
  np.testing.assert_array_equal(trajectory[-1], trajectory[-2])
  assert bool(jnp.any(trajectory[-1] != 0))


def test_fista_keeps_its_iterate_at_a_zero_learning_rate():
  tx = jr.transforms.prox_sgd(optax.piecewise_constant_schedule(0.5, {2: 0.0}),
                              jr.L1(0.1), accelerated=True)
  w = jnp.array([1.0, -0.05])
  state = tx.init(w)
  for step in range(3):
    before = state
    updates, state = tx.update(jnp.array([0.2, 0.1]), state, w)
    w = optax.apply_updates(w, updates)
  np.testing.assert_array_equal(state.iterate, before.iterate)
  assert float(state.t) == float(before.t) and step == 2


# exact=True is Flax's, under x64 too ----------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_exact_dropout_is_flax_s_bit_for_bit_under_x64(dtype):
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (64, 64), dtype)
    rngs = {"dropout": KEY}
    expected = nn.Dropout(0.1, deterministic=False).apply({}, x, rngs=rngs)
    ours = jl.Dropout(0.1, deterministic=False, exact=True).apply({}, x, rngs=rngs)
    assert ours.dtype == expected.dtype == x.dtype
    np.testing.assert_array_equal(ours, expected)
    expected = nnx.Dropout(0.1, rngs=nnx.Rngs(dropout=3))(x)
    ours = jr.nnx.Dropout(0.1, exact=True, rngs=nnx.Rngs(dropout=3))(x)
    np.testing.assert_array_equal(ours, expected)


def test_exact_attention_is_flax_s_bit_for_bit_under_x64():
  with jax.enable_x64(True):
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 8, 3, 4), jnp.float32)
               for i in range(3))

    @jax.jit
    def both(q, k, v):
      out = {}
      for broadcast in (True, False):
        kwargs = dict(dropout_rng=KEY, dropout_rate=0.3, broadcast_dropout=broadcast)
        out[broadcast] = (nn.dot_product_attention(q, k, v, **kwargs),
                          attention.dot_product_attention(q, k, v, exact=True, **kwargs))
      return out

    for broadcast, (expected, ours) in both(q, k, v).items():
      np.testing.assert_array_equal(ours, expected, err_msg=f"broadcast={broadcast}")


# Empty arrays, scalar zeros of every kind -----------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(exact=True), dict(residual="packed"), dict()],
                         ids=["exact", "packed", "recompute"])
def test_dropout_of_an_empty_array(kwargs):
  x = jnp.ones((0, 5))
  assert jr.dropout(KEY, x, 0.5, **kwargs).shape == (0, 5)
  grad = jax.grad(lambda x: jr.dropout(KEY, x, 0.5, **kwargs).sum())(x)
  assert grad.shape == (0, 5)
  assert masks.unpack(masks.pack(jnp.ones((3, 0), bool)), (3, 0)).shape == (3, 0)


@pytest.mark.parametrize("zero", [0.0, 0, np.float32(0.0), jnp.float32(0.0), jnp.zeros(())],
                         ids=["float", "int", "numpy", "jax", "0-d"])
def test_a_zero_stddev_or_rate_needs_no_key_whatever_its_type(zero):
  x = jnp.arange(3.0)
  np.testing.assert_array_equal(jr.gaussian_noise(None, x, zero), x)
  np.testing.assert_array_equal(jr.dropout(None, x, zero), x)
  np.testing.assert_array_equal(jr.gaussian_dropout(None, x, zero), x)
  assert jr.linen.GaussianNoise(zero).apply({}, x, deterministic=False) is not None
  np.testing.assert_array_equal(jr.nnx.GaussianNoise(zero)(x, deterministic=False), x)


# Grouped-query attention, as flax.nnx.dot_product_attention ------------------------------

def test_grouped_query_heads_equal_nnx():
  q = jax.random.normal(jax.random.key(1), (2, 6, 4, 8))
  k, v = (jax.random.normal(jax.random.key(i), (2, 6, 2, 8)) for i in (2, 3))
  dropout = dict(dropout_rng=KEY, dropout_rate=0.3, broadcast_dropout=False)

  @jax.jit
  def both(q, k, v):
    return {
        "nnx": nnx.dot_product_attention(q, k, v),
        "nnx, dropout": nnx.dot_product_attention(q, k, v, **dropout),
        **{name: attention.dot_product_attention(q, k, v, implementation=name, block_size=4)
           for name in attention.IMPLEMENTATIONS},
        "exact dropout": attention.dot_product_attention(q, k, v, exact=True, **dropout)}

  out = both(q, k, v)
  for name in attention.IMPLEMENTATIONS:
    np.testing.assert_allclose(out[name], out["nnx"], rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(out["exact dropout"], out["nnx, dropout"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="a multiple of it"):
    attention.dot_product_attention(q, k[..., :1, :].repeat(3, axis=-2), v)


# The error a user meets for each bad input ----------------------------------------------

X = jnp.ones((2, 3))


@pytest.mark.parametrize("call, error, message", [
    (lambda: jr.dropout(KEY, X, "0.5"), TypeError,
     "rate must be a real number (a float or a 0-d array), got str: '0.5'"),
    (lambda: jr.dropout(KEY, X, None), TypeError,
     "rate must be a real number (a float or a 0-d array), got NoneType: None"),
    (lambda: jr.dropout(KEY, X, 0.5, broadcast_dims=1), TypeError,
     "broadcast_dims must be a sequence of ints (dims that share one mask entry), got int: 1"),
    (lambda: jr.L1(0.1).prox({"w": X}, "x"), TypeError,
     "step must be a real number or an array of them, got str: 'x'"),
    (lambda: jr.gaussian_noise(KEY, X, "0.1"), TypeError,
     "stddev must be a real number or an array of them, got str: '0.1'"),
    (lambda: jr.dropout(jax.random.key_data(jax.random.key(0, impl="rbg")), X, 0.5),
     TypeError, "key of shape (4,) is not a raw key of the default PRNG implementation"),
])
def test_bad_input_names_the_argument(call, error, message):
  with pytest.raises(error, match=re.escape(message)):
    call()


def test_inject_hyperparams_names_static_args_and_works_with_it():
  params = jnp.array([1.0, -0.01])
  with pytest.raises(TypeError, match=re.escape("static_args=('reg',)")):
    optax.inject_hyperparams(jr.transforms.prox_adam)(
        learning_rate=0.1, reg=jr.L1(0.1)).init(params)
  tx = optax.inject_hyperparams(jr.transforms.prox_adam, static_args=("reg",))(
      learning_rate=0.1, reg=jr.L1(0.1))
  plain = jr.transforms.prox_adam(0.1, jr.L1(0.1))
  grads = jnp.array([0.3, 0.2])
  ours, _ = tx.update(grads, tx.init(params), params)
  expected, _ = plain.update(grads, plain.init(params), params)
  # inject_hyperparams holds b1, b2 and eps as float32 arrays: 1 - b2 differs by 1e-5.
  np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_classic_evaluation_rounds_once():
  x = jnp.array([1.0, 3.0, 7.0, 0.3], jnp.bfloat16)
  expected = (x.astype(jnp.float32) * 0.9).astype(jnp.bfloat16)  # One rounding.
  np.testing.assert_array_equal(
      jr.dropout(None, x, 0.1, deterministic=True, mode="classic"), expected)


def test_noise_of_a_float64_input_is_drawn_in_float64():
  with jax.enable_x64(True):
    x = jnp.ones(1000, jnp.float64)
    expected = x * (1 + jnp.sqrt(0.5 / 0.5) * jax.random.normal(KEY, x.shape, jnp.float64))
    np.testing.assert_array_equal(jr.gaussian_dropout(KEY, x, 0.5), expected)
    noisy = jr.gaussian_noise(KEY, x, 0.1)
    assert noisy.dtype == jnp.float64
    # float32 noise would leave every value on the float32 grid.
    assert bool(jnp.any(noisy.astype(jnp.float32).astype(jnp.float64) != noisy))
