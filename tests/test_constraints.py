"""Constraints as regularizers, their sums with L1/L2, and the Orthogonal penalty.

The comparisons with Keras itself are in tests/test_keras_parity.py; here the
references are scipy's non-negative least squares, scikit-learn's
``Lasso(positive=True)``, and the formulas written in numpy.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import jaxreg as jr

KEY = jax.random.key(0)


def normal(seed, shape, scale=1.0):
  return jax.random.normal(jax.random.key(seed), shape) * scale


def column_norms(w):
  return np.sqrt((np.asarray(w, np.float64) ** 2).sum(axis=0))


def fit(tx, loss, w, steps):
  @jax.jit
  def run(w):
    def body(_, carry):
      w, state = carry
      updates, state = tx.update(jax.grad(loss)(w), state, w)
      return optax.apply_updates(w, updates), state
    return jax.lax.fori_loop(0, steps, body, (w, tx.init(w)))
  return run(w)


# Objects ------------------------------------------------------------------------------


CONSTRAINTS = {
    "max_norm": jr.MaxNorm(1.0),
    "min_max_norm": jr.MinMaxNorm(0.5, 1.0, rate=0.7),
    "unit_norm": jr.UnitNorm(),
    "non_neg": jr.NonNeg(),
}


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_value_is_zero_and_prox_ignores_the_step(name):
  c = CONSTRAINTS[name]
  params = {"w": normal(1, (4, 3), 3.0)}
  assert float(c(params)) == 0.0
  assert isinstance(c, jr.Constraint) and isinstance(c, jr.Regularizer)
  chex.assert_trees_all_equal(c.prox(params, 0.01), c.prox(params, 10.0))
  chex.assert_trees_all_close(jax.jit(c.prox)(params, 0.5), c.prox(params, 0.5), rtol=1e-6)


def test_where_leaves_the_rest_untouched():
  params = {"dense": {"kernel": normal(2, (4, 3), 3.0), "bias": normal(3, (3,), 3.0)}}
  out = jr.MaxNorm(1.0, where=jr.select.kernels()).prox(params, 1.0)
  chex.assert_trees_all_equal(out["dense"]["bias"], params["dense"]["bias"])
  assert (column_norms(out["dense"]["kernel"]) <= 1.0 + 1e-6).all()


def test_axis_follows_keras_dense_and_conv_conventions():
  dense = normal(4, (5, 3), 3.0)  # (in, out): axis=0 bounds each output unit
  out = jr.MaxNorm(1.0).prox({"k": dense}, 1.0)["k"]
  assert (column_norms(out) <= 1.0 + 1e-6).all()
  conv = normal(5, (3, 3, 2, 4), 3.0)  # (h, w, in, out): axis=(0, 1, 2) per filter
  out = jr.UnitNorm(axis=[0, 1, 2]).prox({"k": conv}, 1.0)["k"]
  np.testing.assert_allclose(np.sqrt((np.asarray(out) ** 2).sum(axis=(0, 1, 2))), 1.0,
                             rtol=1e-5)


def test_bounds_may_be_traced_and_vmapped():
  w = {"w": normal(6, (4, 2), 3.0)}
  out = jax.vmap(lambda c: jr.MaxNorm(c).prox(w, 1.0)["w"])(jnp.array([0.5, 1.0, 2.0]))
  for c, o in zip([0.5, 1.0, 2.0], out):
    np.testing.assert_allclose(column_norms(o), np.minimum(column_norms(w["w"]), c),
                               rtol=1e-5)


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_a_positive_multiple_of_a_constraint_is_the_constraint(name):
  c = CONSTRAINTS[name]
  for scaled in (2 * c, c * 0.5, c / 3, np.float32(4) * c, jnp.array(0.1) * c):
    assert scaled is c


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_zero_times_a_constraint_is_the_zero_penalty(name):
  c = CONSTRAINTS[name]
  params = {"w": normal(1, (4, 3), 3.0)}
  zero = 0 * c
  assert repr(zero) == f"0 * {c!r}"
  assert float(zero(params)) == 0.0
  chex.assert_trees_all_equal(zero.prox(params, 1.0), params)
  assert (2 * zero).scale == 0 and (2 * zero).regularizer is c
  with pytest.raises(TypeError, match="constraint"):
    jr.transforms.add_gradient(zero)


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_a_traced_multiple_projects_where_it_is_positive(name):
  c = CONSTRAINTS[name]
  params = {"w": normal(1, (4, 3), 3.0)}
  out = jax.jit(jax.vmap(lambda s: (s * c).prox(params, 1.0)["w"]))(jnp.array([0.0, 2.0]))
  np.testing.assert_array_equal(out[0], params["w"])
  np.testing.assert_allclose(out[1], c.prox(params, 1.0)["w"], rtol=1e-6)
  with pytest.raises(ValueError, match="scaled by a negative c is not convex"):
    -1 * c


# Training with proximal transforms -------------------------------------------------


@pytest.mark.parametrize("accelerated", [False, True])
def test_prox_sgd_with_max_norm_solves_the_constrained_problem(accelerated):
  # argmin ||W - T||² over max-norm columns is the projection of T.
  target = normal(7, (4, 3), 2.0)
  loss = lambda w: 0.5 * jnp.sum((w - target) ** 2)
  tx = jr.transforms.prox_sgd(0.3, jr.MaxNorm(1.0, epsilon=0.0), accelerated=accelerated)
  w, state = fit(tx, loss, jnp.zeros((4, 3)), 200)
  solution = state.iterate if accelerated else w
  chex.assert_trees_all_close(solution, jr.prox.max_norm(target, 1.0, epsilon=0.0),
                              atol=1e-5)


def test_proximal_after_adam_keeps_the_constraint_at_every_step():
  target = normal(8, (4, 3), 5.0)
  loss = lambda w: 0.5 * jnp.sum((w - target) ** 2)
  c = jr.UnitNorm()
  tx = optax.chain(optax.adam(0.1), jr.transforms.proximal(0.1, c))
  w, state = jnp.ones((4, 3)), None
  state = tx.init(w)
  for _ in range(5):
    updates, state = tx.update(jax.grad(loss)(w), state, w)
    w = optax.apply_updates(w, updates)
    np.testing.assert_allclose(column_norms(w), 1.0, rtol=1e-5)


def test_nonnegative_least_squares_by_fista_equals_scipy_nnls():
  a = np.asarray(normal(9, (30, 6)), np.float64)
  b = np.asarray(normal(10, (30,)), np.float64)
  expected, _ = scipy.optimize.nnls(a, b)
  assert (expected == 0).any() and (expected > 0).any()
  lipschitz = float(np.linalg.eigvalsh(a.T @ a).max())
  aj, bj = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  loss = lambda w: 0.5 * jnp.sum((aj @ w - bj) ** 2)
  _, state = fit(jr.transforms.prox_sgd(1 / lipschitz, jr.NonNeg(), accelerated=True),
                 loss, jnp.zeros(6), 3000)
  np.testing.assert_allclose(state.iterate, expected, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(state.iterate) == 0, expected == 0)


def test_nonnegative_lasso_by_prox_sgd_equals_sklearn_positive_lasso():
  datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is a test extra")
  from sklearn.linear_model import Lasso  # pylint: disable=g-import-not-at-top
  x, y = datasets.load_diabetes(return_X_y=True)
  x = (x - x.mean(0)) / x.std(0)
  y = (y - y.mean()) / y.std()
  alpha = 0.05
  expected = Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-12,
                   max_iter=100_000).fit(x, y).coef_
  assert (expected == 0).sum() >= 3 and (expected > 0).sum() >= 3
  # scikit-learn's objective: 1/(2n)·||y - Xw||² + alpha·||w||₁ with w >= 0.
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  loss = lambda w: 0.5 * jnp.mean((xj @ w - yj) ** 2)
  lipschitz = float(np.linalg.eigvalsh(x.T @ x / len(y)).max())
  w, _ = fit(jr.transforms.prox_sgd(1 / lipschitz, jr.L1(alpha) + jr.NonNeg()),
             loss, jnp.zeros(x.shape[1]), 3000)
  np.testing.assert_allclose(w, expected, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(w) == 0, expected == 0)


def test_nonneg_works_with_per_coordinate_steps_and_norm_constraints_refuse_them():
  loss = lambda w: 0.5 * jnp.sum((w - jnp.array([1.0, -1.0, 0.01])) ** 2)
  w, _ = fit(jr.transforms.prox_adam(0.05, jr.NonNeg() + jr.L1(0.05)), loss,
             jnp.zeros(3), 300)
  assert float(w[1]) == 0.0 and float(w[2]) == 0.0 and float(w[0]) > 0.5
  with pytest.raises(ValueError, match="one step per coordinate"):
    jr.transforms.prox_adam(0.1, jr.MaxNorm(1.0))
  with pytest.raises(ValueError, match="scalar step"):
    jr.MaxNorm(1.0).prox({"w": jnp.ones((2, 2))}, {"w": jnp.ones((2, 2))})


def test_add_gradient_refuses_a_constraint():
  for reg in [jr.NonNeg(), jr.L2(0.1) + jr.MaxNorm(1.0)]:
    with pytest.raises(TypeError, match="constraint"):
      jr.transforms.add_gradient(reg)


# Sums ------------------------------------------------------------------------------


@pytest.mark.parametrize("penalty, expected", [
    (jr.L1(0.5), lambda v, t: np.maximum(v - 0.5 * t, 0)),
    (jr.L2(0.5), lambda v, t: np.maximum(v, 0) / (1 + 2 * 0.5 * t)),
    (jr.ElasticNet(0.5, 0.25), lambda v, t: np.maximum(v - 0.5 * t, 0) / (1 + 0.5 * t)),
])
def test_sum_with_nonneg_has_the_clamped_closed_form(penalty, expected):
  v = np.asarray(normal(11, (40,), 2.0))
  for t in [0.3, 1.0]:
    for reg in [penalty + jr.NonNeg(), jr.NonNeg() + penalty]:
      out = reg.prox({"w": jnp.asarray(v)}, t)["w"]
      np.testing.assert_allclose(out, expected(v, t), rtol=1e-6, atol=1e-7)


def test_other_overlaps_raise_and_disjoint_terms_do_not():
  params = {"kernel": normal(12, (3, 2)), "bias": normal(13, (2,))}
  for reg in [jr.MaxNorm(1.0) + jr.L1(0.1), jr.NonNeg() + jr.MaxNorm(1.0),
              jr.UnitNorm() + jr.GroupLasso(0.1, axis=0)]:
    with pytest.raises(NotImplementedError, match="no closed-form"):
      reg.prox(params, 0.1)
  reg = jr.MaxNorm(1.0, where=jr.select.kernels()) + jr.L1(0.1, where=jr.select.exclude(
      jr.select.kernels()))
  out = reg.prox(params, 1.0)
  chex.assert_trees_all_close(out["bias"], jr.prox.soft_threshold(params["bias"], 0.1))


# Bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: jr.MaxNorm(-1.0), "max_value"),
    (lambda: jr.MinMaxNorm(-0.5, 1.0), "min_value"),
    (lambda: jr.MinMaxNorm(2.0, 1.0), "min_value must be <= max_value"),
    (lambda: jr.MinMaxNorm(0.0, 1.0, rate=1.5), "rate"),
    (lambda: jr.MinMaxNorm(0.0, 1.0, rate=-0.1), "rate"),
    (lambda: jr.MaxNorm(1.0, axis="0"), "axis"),
    (lambda: jr.UnitNorm(axis=()), "axis"),
    (lambda: jr.MaxNorm(1.0, epsilon=-1e-7), "epsilon"),
    (lambda: jr.Orthogonal(0.1, mode="diagonal"), "mode"),
    (lambda: jr.Orthogonal(-0.1), "factor"),
], ids=["max_value", "min_value", "min_gt_max", "rate_high", "rate_low", "axis_type",
        "axis_empty", "epsilon", "orthogonal_mode", "orthogonal_factor"])
def test_bad_arguments_raise(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_axis_out_of_range_for_a_selected_leaf_raises():
  params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
  c = jr.MaxNorm(1.0, axis=1)
  for use in [c, lambda p: c.prox(p, 1.0)]:
    with pytest.raises(ValueError, match=r"axis=1 is out of range.*shape \(2,\)"):
      use(params)
  jr.MaxNorm(1.0, axis=1, where=jr.select.kernels()).prox(params, 1.0)  # fine


# Orthogonal ------------------------------------------------------------------------


def orthogonal_by_hand(w, factor, mode):
  w = np.asarray(w, np.float64)
  if mode == "columns":
    w = w.T
  unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-7)
  cosines = np.abs(unit @ unit.T)
  m = len(w)
  return factor * (cosines.sum() - np.trace(cosines)) / (m * (m - 1))


@pytest.mark.parametrize("mode", ["rows", "columns"])
def test_orthogonal_value_is_the_mean_absolute_cosine(mode):
  w = normal(14, (5, 3))
  value, orthogonal, parallel = jax.jit(lambda w: (
      jr.Orthogonal(0.3, mode=mode)({"w": w}), jr.Orthogonal(1.0)({"w": jnp.eye(4)}),
      jr.Orthogonal(1.0)({"w": jnp.ones((3, 2))})))(w)
  np.testing.assert_allclose(value, orthogonal_by_hand(w, 0.3, mode), rtol=1e-5)
  assert float(orthogonal) == 0.0
  np.testing.assert_allclose(parallel, 1.0, rtol=1e-6)


def test_orthogonal_trains_through_add_gradient_and_has_no_prox():
  reg = jr.Orthogonal(1.0, where=jr.select.kernels())
  params = {"kernel": normal(15, (4, 3)), "bias": jnp.ones(3)}
  tx = optax.chain(jr.transforms.add_gradient(reg), optax.sgd(0.1))
  trained, _ = fit(tx, lambda p: 0.0 * jnp.sum(p["bias"]), params, 50)
  before, after, at_zero = jax.jit(lambda p, q: (
      reg(p), reg(q), jax.grad(reg)({"kernel": jnp.zeros((3, 3))})["kernel"]))(params, trained)
  assert float(after) < 0.5 * float(before)
  assert np.isfinite(np.asarray(at_zero)).all()
  with pytest.raises(NotImplementedError, match="add_gradient"):
    reg.prox(params, 0.1)
  with pytest.raises(ValueError, match="matrices"):
    jr.Orthogonal(1.0)({"b": jnp.ones(3)})
