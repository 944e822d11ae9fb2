r"""``jaxreg.paths.lasso_path`` (working sets, gap-safe screening, coordinate descent)
against scikit-learn's ``lasso_path`` / ``enet_path`` and ``Ridge``.

Every expected value comes from scikit-learn or numpy: a path to 1e-5 with the same
zeros at ``tol=1e-10``; at the default ``tol`` an error no larger than scikit-learn's
own at that ``tol`` (both measured from scikit-learn at ``tol=1e-12``); ridge
(``l1_ratio=0``) against ``Ridge``. The solver's own devices (warm starts, screening,
the first working set's size) must not change the answer, nor jit or vmap. Float64
tests run under ``jax.enable_x64`` (the ``x64`` fixture), as in ``tests/test_cv.py``.

The data are small, so that the file runs in seconds: ``TALL`` (more rows than
features) takes the solver's Gram form, ``WIDE`` (more features than rows) its data
form.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets, linear_model

from jaxreg import _working_set
from jaxreg.paths import lasso_path

TIGHT = dict(tol=1e-10, max_iter=100_000)
EXACT = dict(tol=1e-12, max_iter=1_000_000)  # scikit-learn's reference solutions
GRID = 50
RIDGE_ALPHAS = np.array([10.0, 1.0, 0.1, 0.01, 0.001])


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def correlated(rows, features, seed, rho=0.8, support=4, noise=0.5):
  """Rows ~ N(0, Σ), Σ_ij = rho^|i−j|; y from ``support`` non-zero weights plus noise."""
  rng = np.random.default_rng(seed)
  index = np.arange(features)
  root = np.linalg.cholesky(rho ** np.abs(index[:, None] - index[None, :]))
  X = rng.normal(size=(rows, features)) @ root.T
  w = np.zeros(features)
  w[rng.choice(features, support, replace=False)] = 2 * rng.normal(size=support)
  return X, X @ w + noise * rng.normal(size=rows)


TALL = correlated(60, 12, seed=0)
WIDE = correlated(40, 80, seed=1)
DATA = {"tall": TALL, "wide": WIDE}


def diabetes():
  X, y = datasets.load_diabetes(return_X_y=True)
  return X, y - y.mean()


def sklearn_path(X, y, l1_ratio=1.0, **kwargs):
  """``(alphas, coefs)`` of ``enet_path`` (``lasso_path`` is it at ``l1_ratio=1``)."""
  alphas, coefs, _ = linear_model.enet_path(X, y, l1_ratio=l1_ratio, **kwargs)
  return alphas, coefs


def duality_gap(X, y, w, alpha, l1_ratio=1.0, positive=False):
  """scikit-learn's duality gap (``cd_fast``, the objective times n), in float64."""
  X, y, w = (np.asarray(a, np.float64) for a in (X, y, w))
  n = len(y)
  l1, l2 = n * alpha * l1_ratio, n * alpha * (1 - l1_ratio)
  r = y - X @ w
  c = X.T @ r - l2 * w
  norm = c.max() if positive else np.abs(c).max()
  scale = l1 / norm if norm > l1 else 1.0
  return (0.5 * (r @ r + l2 * w @ w) * (1 + scale ** 2) + l1 * np.abs(w).sum()
          - scale * r @ y)


# 1. The path at a tight tol: scikit-learn's, zeros included.

@pytest.mark.parametrize("l1_ratio, positive", [
    (1.0, False), (0.5, False), (0.1, False), (1.0, True), (0.5, True)])
@pytest.mark.parametrize("which", ["tall", "wide"])
def test_path_matches_sklearn_with_the_same_zeros(which, l1_ratio, positive, x64):
  X, y = DATA[which]
  assert _working_set.uses_gram(*X.shape) == (which == "tall")
  expected_alphas, expected = sklearn_path(X, y, l1_ratio, alphas=GRID, positive=positive,
                                           **TIGHT)
  alphas, coefs = lasso_path(X, y, l1_ratio=l1_ratio, alphas=GRID, positive=positive,
                             **TIGHT)
  assert alphas.dtype == coefs.dtype == jnp.float64
  alphas, coefs = np.asarray(alphas), np.asarray(coefs)
  assert coefs.shape == expected.shape == (X.shape[1], GRID)
  np.testing.assert_allclose(alphas, expected_alphas, rtol=1e-12)
  np.testing.assert_allclose(coefs, expected, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(coefs == 0, expected == 0)
  assert np.count_nonzero(expected) > GRID  # a path, not a column of zeros
  if positive:
    assert coefs.min() >= 0


def test_positive_grid_is_sklearns(x64):
  """With ``positive=True`` scikit-learn's grid starts at ``max(Xᵀy)/(nρ)``, the least
  alpha at which every non-negative coefficient is 0, not at ``max|Xᵀy|/(nρ)``: on data
  whose largest correlation with y is negative the two grids differ."""
  X, y = WIDE[0], -WIDE[1]
  assert 0 < (X.T @ y).max() < 0.7 * np.abs(X.T @ y).max()
  expected_alphas, expected = sklearn_path(X, y, alphas=GRID, positive=True, **TIGHT)
  alphas, coefs = lasso_path(X, y, alphas=GRID, positive=True, **TIGHT)
  np.testing.assert_allclose(np.asarray(alphas), expected_alphas, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(coefs), expected, rtol=0, atol=1e-5)


# 2. At the default tol: no further from the solution than scikit-learn at its default.

@pytest.mark.parametrize("which, l1_ratio", [
    ("correlated", 1.0), ("correlated", 0.5), ("diabetes", 1.0)])
def test_default_tol_error_is_at_most_sklearns(which, l1_ratio, x64):
  X, y = correlated(120, 24, seed=2) if which == "correlated" else diabetes()
  _, exact = sklearn_path(X, y, l1_ratio, **EXACT)
  _, theirs = sklearn_path(X, y, l1_ratio)
  _, ours = lasso_path(X, y, l1_ratio=l1_ratio)
  theirs_error = np.abs(theirs - exact).max()
  ours_error = np.abs(np.asarray(ours) - exact).max()
  assert theirs_error > 0  # the default tol does stop early here
  assert ours_error <= theirs_error, (ours_error, theirs_error)


# 3. l1_ratio = 0 is ridge.

@pytest.mark.parametrize("which", ["tall", "wide"])
def test_ridge_matches_sklearn_ridge(which, x64):
  X, y = DATA[which]
  n = len(y)
  grid = RIDGE_ALPHAS
  _, coefs = lasso_path(X, y, l1_ratio=0.0, alphas=jnp.asarray(grid), tol=1e-12,
                        max_iter=100_000)
  # sklearn's objective (1/2n)‖y − Xw‖² + α/2‖w‖² is Ridge's at alpha = α·n.
  expected = np.stack([
      linear_model.Ridge(alpha=alpha * n, fit_intercept=False, solver="cholesky")
      .fit(X, y).coef_ for alpha in grid], axis=1)
  np.testing.assert_allclose(np.asarray(coefs), expected, rtol=0, atol=1e-6)


def test_alpha_zero_is_least_squares(x64):
  """The path down to alpha = 0 ends at the least-squares fit, with or without L1."""
  X, y = TALL
  expected = np.linalg.lstsq(X, y, rcond=None)[0]
  grid = np.array([1.0, 0.1, 0.01, 0.001, 0.0])  # as long as RIDGE_ALPHAS: one program
  for l1_ratio in (0.0, 1.0):
    _, coefs = lasso_path(X, y, l1_ratio=l1_ratio, alphas=jnp.asarray(grid), tol=1e-12,
                          max_iter=100_000)
    np.testing.assert_allclose(np.asarray(coefs)[:, -1], expected, rtol=0, atol=1e-6)


# 4. Warm starts, screening and working sets leave the answer alone.

@pytest.mark.parametrize("which", ["tall", "wide"])
def test_warm_started_path_equals_one_alpha_at_a_time(which, x64):
  X, y = DATA[which]
  alphas, path = lasso_path(X, y, alphas=GRID, l1_ratio=0.5, tol=1e-12, max_iter=100_000)
  path = np.asarray(path)
  for i, alpha in enumerate(np.asarray(alphas)):
    _, single = lasso_path(X, y, alphas=jnp.array([alpha]), l1_ratio=0.5, tol=1e-12,
                           max_iter=100_000)
    np.testing.assert_allclose(np.asarray(single)[:, 0], path[:, i], rtol=0, atol=1e-6,
                               err_msg=f"alpha #{i} = {alpha}")


@pytest.mark.parametrize("which", ["tall", "wide"])
def test_first_working_set_size_leaves_the_path_alone(which, x64):
  """From one feature up to all of them (a NumPy int too): the same path."""
  X, y = DATA[which]
  features = X.shape[1]
  sizes = (1, features) if which == "wide" else (1, features, 5, np.int64(features))
  _, expected = sklearn_path(X, y, alphas=GRID, **TIGHT)
  paths = [np.asarray(lasso_path(X, y, alphas=GRID, working_set=size, **TIGHT)[1])
           for size in sizes]
  for path in paths[1:]:
    np.testing.assert_allclose(path, paths[0], rtol=0, atol=1e-6)
  np.testing.assert_allclose(paths[0], expected, rtol=0, atol=1e-5)


# 5. float32.

@pytest.mark.parametrize("which, l1_ratio", [("tall", 1.0), ("wide", 0.5)])
def test_float32_path_is_close_to_float64(which, l1_ratio):
  """float32 data give a float32 path, at ``tol=1e-6`` (about float32's resolution of
  the gap) within 1e-3 of the largest coefficient of the exact float64 path."""
  X, y = DATA[which]
  expected_alphas, expected = sklearn_path(X, y, l1_ratio, alphas=GRID, **EXACT)
  alphas, coefs = lasso_path(X.astype(np.float32), y.astype(np.float32),
                             l1_ratio=l1_ratio, alphas=GRID, tol=1e-6, max_iter=10_000)
  assert alphas.dtype == coefs.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(alphas), expected_alphas, rtol=1e-5)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(np.asarray(coefs, np.float64), expected, rtol=0,
                             atol=1e-3 * scale)


@pytest.mark.parametrize("tol", [1e-6, 1e-7])
def test_float32_points_that_do_not_warn_have_converged(tol):
  """A float32 point that does not warn has a gap (recomputed in float64) within
  ``tol·‖y‖²``, or within float32's resolution of it, about ``1e-6·‖y‖²`` (the
  docstring's), when ``tol`` is below that: twice the larger is allowed."""
  X, y = TALL
  alphas, _ = sklearn_path(X, y, alphas=GRID)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _, coefs = lasso_path(X.astype(np.float32), y.astype(np.float32), alphas=GRID,
                          tol=tol, max_iter=10_000)
  warned = any(issubclass(w.category, RuntimeWarning) for w in caught)
  gaps = np.array([duality_gap(X, y, np.asarray(coefs)[:, i], alpha)
                   for i, alpha in enumerate(alphas)]) / (y @ y)
  assert warned or gaps.max() <= 2 * max(tol, 1e-6), (
      f"no warning, but gap/‖y‖² = {gaps.max():.2e} at alpha #{gaps.argmax()}")


# 6. Bad input.

@pytest.mark.parametrize("change, error, match", [
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), y),
     ValueError, "X contains NaN or infinity"),
    (lambda X, y: (X, np.where(np.arange(len(y)) == 3, np.inf, y)),
     ValueError, "y contains NaN or infinity"),
    (lambda X, y: (X, y[:, None]), ValueError, r"y must have shape \(60,\) to match X"),
    (lambda X, y: (X[:0], y[:0]), ValueError, "X has no rows"),
])
def test_bad_data_raises(change, error, match):
  X, y = change(*TALL)
  with pytest.raises(error, match=match):
    lasso_path(X, y)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(l1_ratio=-0.1), ValueError, r"l1_ratio must be in \[0, 1\], got -0.1"),
    (dict(l1_ratio=float("nan")), ValueError, r"l1_ratio must be in \[0, 1\]"),
    (dict(working_set=13), ValueError,
     "working_set=13 exceeds the problem's 12 features"),
    (dict(working_set=0), ValueError, "working_set must be a positive int, got 0"),
    (dict(working_set=2.5), TypeError,
     "working_set must be a positive int, got float: 2.5"),
    (dict(working_set=True), TypeError, "working_set must be a positive int"),
    (dict(positive="yes"), TypeError, "positive must be True or False, got 'yes'"),
    (dict(positive=1), TypeError, "positive must be True or False, got 1"),
    (dict(max_iter=0), ValueError, "max_iter must be a positive int, got 0"),
    (dict(max_iter=10.0), TypeError, "max_iter must be a positive int"),
    (dict(tol=-1e-4), ValueError, "tol must be finite and >= 0"),
    (dict(weights=np.ones(59)), ValueError, r"weights must have shape \(60,\)"),
])
def test_bad_settings_raise(kwargs, error, match):
  with pytest.raises(error, match=match):
    lasso_path(*TALL, **kwargs)


# 7. Non-convergence.

def test_non_convergence_warns_and_returns_finite_coefs(x64):
  X, y = TALL  # rows correlated 0.8 from one feature to the next
  with pytest.warns(RuntimeWarning, match="did not converge in max_iter=1 epochs"):
    _, coefs = lasso_path(X, y, alphas=GRID, tol=1e-12, max_iter=1)
  coefs = np.asarray(coefs)
  assert np.all(np.isfinite(coefs)) and np.any(coefs != 0)


# 8. jit and vmap.

def test_jit_over_alphas_equals_eager(x64):
  """Traced alphas (and data): the eager path. Traced data cannot be checked for NaN:
  NaN comes out then, never a path of zeros."""
  X, y = WIDE
  grid = np.geomspace(0.5, 0.005, len(RIDGE_ALPHAS))  # the ridge test's program
  _, expected = sklearn_path(X, y, 0.5, alphas=grid, **TIGHT)

  def path(X, alphas):
    return lasso_path(X, y, alphas=alphas, l1_ratio=0.5, tol=1e-10, max_iter=100_000)[1]

  eager = np.asarray(path(X, jnp.asarray(grid)))
  jitted = jax.jit(path)
  np.testing.assert_allclose(np.asarray(jitted(X, jnp.asarray(grid))), eager, rtol=0,
                             atol=1e-10)
  np.testing.assert_allclose(eager, expected, rtol=0, atol=1e-5)
  bad = X.copy()
  bad[4, 2] = np.nan
  assert np.all(np.isnan(np.asarray(jitted(bad, jnp.asarray(grid)))))


def test_vmap_over_single_alphas_equals_separate_calls(x64):
  X, y = WIDE
  grid = np.geomspace(0.5, 0.005, 6)
  _, expected = sklearn_path(X, y, 0.5, alphas=grid, **TIGHT)

  def point(alpha):
    return lasso_path(X, y, alphas=alpha[None], l1_ratio=0.5, tol=1e-10,
                      max_iter=100_000)[1][:, 0]

  batched = np.asarray(jax.vmap(point)(jnp.asarray(grid))).T
  separate = np.stack([np.asarray(point(jnp.asarray(a))) for a in grid], axis=1)
  np.testing.assert_allclose(batched, separate, rtol=0, atol=1e-6)
  np.testing.assert_allclose(separate, expected, rtol=0, atol=1e-5)


# 9. Degenerate columns.

@pytest.mark.parametrize("which", ["tall", "wide"])
def test_zero_column_stays_zero(which, x64):
  X, y = DATA[which]
  X = X.copy()
  X[:, 3] = 0
  for l1_ratio in (1.0, 0.5):
    expected_alphas, expected = sklearn_path(X, y, l1_ratio, alphas=GRID, **TIGHT)
    alphas, coefs = lasso_path(X, y, l1_ratio=l1_ratio, alphas=GRID, **TIGHT)
    coefs = np.asarray(coefs)
    assert np.all(coefs[3] == 0)
    np.testing.assert_allclose(np.asarray(alphas), expected_alphas, rtol=1e-12)
    np.testing.assert_allclose(coefs, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(coefs == 0, expected == 0)


@pytest.mark.parametrize("which", ["tall", "wide"])
def test_duplicated_column(which, x64):
  """The last column replaced by a copy of the one most correlated with y. The elastic
  net's solution splits the weight equally, scikit-learn's too. The Lasso's is not
  unique (any split of the same sum): only the sum and the other columns are compared,
  since cyclic descent from different warm starts may split it differently."""
  X, y = DATA[which]
  X = X.copy()
  first = int(np.abs(X.T @ y).argmax())
  X[:, -1] = X[:, first]
  _, expected = sklearn_path(X, y, 0.5, alphas=GRID, **TIGHT)
  _, coefs = lasso_path(X, y, l1_ratio=0.5, alphas=GRID, **TIGHT)
  coefs = np.asarray(coefs)
  np.testing.assert_allclose(coefs, expected, rtol=0, atol=1e-5)
  np.testing.assert_allclose(coefs[first], coefs[-1], rtol=0, atol=1e-5)
  assert np.abs(coefs[first]).max() > 0.1

  _, expected = sklearn_path(X, y, alphas=GRID, **TIGHT)
  _, coefs = lasso_path(X, y, alphas=GRID, **TIGHT)
  coefs = np.asarray(coefs)
  np.testing.assert_allclose(coefs[first] + coefs[-1], expected[first] + expected[-1],
                             rtol=0, atol=1e-5)
  others = np.arange(X.shape[1] - 1) != first
  np.testing.assert_allclose(coefs[:-1][others], expected[:-1][others], rtol=0, atol=1e-5)
