r"""Cross-validation and regularization paths against scikit-learn and numpy references.

The comparisons with scikit-learn run in float64 (``jax.enable_x64``) with both solvers
at ``tol=1e-14``, so the 1e-4 agreement asked of the coefficients measures the solver,
not a stopping rule; one float32 test checks the default precision at ``tol=1e-6``
by the objective, the quantity a float32 solve can pin down.
"""

from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import interpolate
from sklearn import datasets, linear_model, model_selection

import jaxreg as jr
from jaxreg import cv

TIGHT = dict(tol=1e-14, max_iter=100_000)


@pytest.fixture(scope="module")
def diabetes():
  return datasets.load_diabetes(return_X_y=True)


def wide_data():
  """More features than rows: the Gram matrix of the rows sets the step there."""
  rng = np.random.default_rng(0)
  X = rng.normal(size=(30, 60))
  return X, X[:, :3] @ np.array([2.0, -1.0, 0.5]) + 0.1 * rng.normal(size=30)


def enet_objective(X, y, w, alpha, l1_ratio):
  """scikit-learn's objective, written out."""
  return (np.sum((y - X @ w) ** 2) / (2 * len(y)) + alpha * l1_ratio * np.abs(w).sum()
          + alpha * (1 - l1_ratio) / 2 * w @ w)


@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
@pytest.mark.parametrize("which", ["diabetes", "wide"])
def test_path_matches_sklearn_at_every_alpha(which, l1_ratio, diabetes):
  X, y = diabetes if which == "diabetes" else wide_data()
  expected_alphas, expected, _ = linear_model.enet_path(
      X, y, l1_ratio=l1_ratio, alphas=100, **TIGHT)
  with jax.enable_x64(True):
    alphas, coefs = cv.lasso_path(X, y, l1_ratio=l1_ratio, alphas=100, **TIGHT)
    alphas, coefs = np.asarray(alphas), np.asarray(coefs)
  assert coefs.shape == expected.shape == (X.shape[1], 100)
  np.testing.assert_allclose(alphas, expected_alphas, rtol=1e-12)
  np.testing.assert_allclose(coefs, expected, rtol=0, atol=1e-4)
  np.testing.assert_array_equal(coefs == 0, expected == 0)


def test_alpha_max_is_sklearn_first_alpha(diabetes):
  X, y = diabetes
  with jax.enable_x64(True):
    for l1_ratio in (1.0, 0.3):
      sk_alphas, _, _ = linear_model.enet_path(X, y, l1_ratio=l1_ratio, alphas=3)
      assert float(cv.alpha_max(X, y, l1_ratio=l1_ratio)) == pytest.approx(
          sk_alphas[0], rel=1e-12)
    # LassoCV fits an intercept: its grid starts at alpha_max of the centered data.
    lasso_cv = linear_model.LassoCV(alphas=3, cv=2).fit(X, y)
    centered = cv.alpha_max(X - X.mean(0), y - y.mean())
    assert float(centered) == pytest.approx(lasso_cv.alphas_[0], rel=1e-12)


def test_zero_weights_drop_rows(diabetes):
  X, y = diabetes
  keep = np.arange(len(y)) % 3 != 0
  expected_alphas, expected, _ = linear_model.lasso_path(X[keep], y[keep], alphas=20, **TIGHT)
  with jax.enable_x64(True):
    alphas, coefs = cv.lasso_path(X, y, alphas=20, weights=keep.astype(float), **TIGHT)
  np.testing.assert_allclose(np.asarray(alphas), expected_alphas, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(coefs), expected, rtol=0, atol=1e-4)


def test_float32_path_reaches_sklearn_objective(diabetes):
  X, y = diabetes
  sk_alphas, expected, _ = linear_model.lasso_path(X, y, alphas=30, **TIGHT)
  alphas, coefs = cv.lasso_path(X.astype(np.float32), y.astype(np.float32), alphas=30,
                                tol=1e-6)
  assert coefs.dtype == jnp.float32
  coefs = np.asarray(coefs, np.float64)
  for i, alpha in enumerate(sk_alphas):
    ours = enet_objective(X, y, coefs[:, i], alpha, 1.0)
    assert ours == pytest.approx(enet_objective(X, y, expected[:, i], alpha, 1.0), rel=1e-6)
  np.testing.assert_array_equal(coefs == 0, expected == 0)


def test_alphas_array_is_sorted_descending_traced_and_vmapped(diabetes):
  X, y = diabetes
  _, expected, _ = linear_model.lasso_path(X, y, alphas=np.array([1.0, 0.5, 0.1]), **TIGHT)
  with jax.enable_x64(True):
    alphas, coefs = jax.jit(lambda a: cv.lasso_path(X, y, alphas=a, **TIGHT))(
        jnp.array([0.1, 1.0, 0.5]))
    batched = jax.vmap(lambda a: cv.lasso_path(X, y, alphas=a[None], **TIGHT)[1][:, 0])(
        alphas)
  np.testing.assert_array_equal(np.asarray(alphas), [1.0, 0.5, 0.1])
  np.testing.assert_allclose(np.asarray(coefs), expected, rtol=0, atol=1e-4)
  np.testing.assert_allclose(np.asarray(batched).T, expected, rtol=0, atol=1e-4)


def test_lasso_cv_matches_sklearn(diabetes):
  """The same grid, per-fold curves, choice and refit as LassoCV on the same folds."""
  X, y = diabetes
  lasso_cv = linear_model.LassoCV(alphas=20, cv=model_selection.KFold(5), tol=1e-12,
                                  max_iter=100_000).fit(X, y)
  with jax.enable_x64(True):
    result = cv.lasso_cv(X, y, alphas=20, tol=1e-12, max_iter=100_000)
    np.testing.assert_allclose(np.asarray(result.alphas), lasso_cv.alphas_, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(result.mse_path), lasso_cv.mse_path_, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(result.mean), lasso_cv.mse_path_.mean(1),
                               rtol=1e-4)
    np.testing.assert_allclose(np.asarray(result.coef), lasso_cv.coef_, atol=1e-6)
    assert float(result.intercept) == pytest.approx(lasso_cv.intercept_, abs=1e-6)
    # glmnet's rule on scikit-learn's curve: the largest alpha within one SE of the best.
    mse = lasso_cv.mse_path_
    se = mse.std(axis=1, ddof=1) / np.sqrt(5)
    best = mse.mean(1).argmin()
    within = mse.mean(1) <= mse.mean(1)[best] + se[best]
    np.testing.assert_allclose(np.asarray(result.stderr), se, rtol=1e-3)
  # Both grids are scikit-learn's formula, equal to the last bit or two.
  assert float(result.alpha) == pytest.approx(lasso_cv.alpha_, rel=1e-12)
  assert float(result.alpha_one_se) == pytest.approx(lasso_cv.alphas_[within].max(),
                                                     rel=1e-12)
  assert float(result.alpha_one_se) > float(result.alpha)


@pytest.mark.parametrize("l1_ratio, positive, fit_intercept",
                         [(0.5, False, True), (1.0, True, True), (1.0, False, False)])
def test_lasso_cv_matches_sklearn_variants(l1_ratio, positive, fit_intercept):
  """ElasticNetCV, positive and no intercept: the same alpha, the curves within 1e-4,
  with more features than rows and fold ids given as an array. (At the default tol the
  two solvers stop at different points: 5% apart on this design's smallest alphas.)"""
  rng = np.random.default_rng(3)
  X = rng.normal(size=(60, 90)) + 2.0
  y = X[:, :4] @ np.array([1.5, -1.0, 0.8, 0.5]) + 0.3 * rng.normal(size=60) + 4.0
  ids = np.arange(60) % 4
  splits = [(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in range(4)]
  model = (linear_model.ElasticNetCV if l1_ratio < 1 else linear_model.LassoCV)
  extra = dict(l1_ratio=l1_ratio) if l1_ratio < 1 else {}
  reference = model(alphas=30, cv=splits, positive=positive, fit_intercept=fit_intercept,
                    tol=1e-11, max_iter=100_000, **extra).fit(X, y)
  with jax.enable_x64(True):
    result = cv.lasso_cv(X, y, l1_ratio=l1_ratio, alphas=30, folds=jnp.asarray(ids),
                         positive=positive, fit_intercept=fit_intercept, tol=1e-11,
                         max_iter=100_000)
    np.testing.assert_allclose(np.asarray(result.alphas), reference.alphas_, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(result.mse_path), reference.mse_path_, rtol=1e-4)
    assert float(result.alpha) == pytest.approx(reference.alpha_, rel=1e-12)
    np.testing.assert_allclose(np.asarray(result.coef), reference.coef_, atol=1e-5)
    if positive:
      assert np.all(np.asarray(result.coef) >= 0)


def test_lasso_cv_passes_sklearn_test_lasso_cv():
  """scikit-learn's own ``test_lasso_cv`` (linear_model/tests/test_coordinate_descent.py)
  with ``lasso_cv`` in ``LassoCV``'s place: its data, folds (``cv=3``), ``max_iter=150``
  and assertions, LARS included."""
  # build_dataset(): an ill-posed problem, 50 rows, 200 features, 10 informative.
  random_state = np.random.RandomState(0)
  w = random_state.randn(200)
  w[10:] = 0.0
  X = random_state.randn(50, 200)
  y = X @ w
  X_test = random_state.randn(50, 200)
  y_test = X_test @ w
  with jax.enable_x64(True):  # (converged: scikit-learn's 150 epochs do not, here)
    clf = cv.lasso_cv(X, y, alphas=10, eps=1e-3, max_iter=150, folds=3)
  alphas, alpha = np.asarray(clf.alphas), float(clf.alpha)
  np.testing.assert_almost_equal(alpha, 0.056, 2)
  # LARS and coordinate descent select alphas at most one grid point apart ...
  lars = linear_model.LassoLarsCV(max_iter=30, cv=3).fit(X, y)
  assert abs(np.searchsorted(alphas[::-1], lars.alpha_)
             - np.searchsorted(alphas[::-1], alpha)) <= 1
  # ... with a similar MSE.
  mse_lars = interpolate.interp1d(lars.cv_alphas_, lars.mse_path_.T)
  np.testing.assert_allclose(mse_lars(alphas[5]).mean(), np.asarray(clf.mse_path)[5].mean(),
                             rtol=1e-2)
  # The test set: R² (LassoCV.score).
  prediction = X_test @ np.asarray(clf.coef) + float(clf.intercept)
  r2 = 1 - np.sum((y_test - prediction) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
  assert r2 > 0.99


def test_cross_validate_takes_a_whole_path():
  """``path=True``: one warm-started path per fold, a vector of losses, the same table as
  ``lasso_cv`` without an intercept (and as a scalar fit per point)."""
  rng = np.random.default_rng(0)
  X = rng.normal(size=(60, 8))
  y = X @ rng.normal(size=8) + rng.normal(size=60)
  grid = np.geomspace(1.0, 0.01, 12)
  tight = dict(tol=1e-12, max_iter=100_000)

  def fit_path(alphas, key, data, weights):
    return cv.lasso_path(*data, alphas=alphas, weights=weights, **tight)[1]

  def score_path(coefs, data, weights):
    X, y = data
    return weights @ (y[:, None] - X @ coefs) ** 2 / weights.sum()

  with jax.enable_x64(True):
    result = cv.cross_validate(fit_path, score_path, (X, y), jnp.asarray(grid), folds=5,
                               path=True, regularization=lambda alpha: alpha)
    reference = cv.lasso_cv(X, y, alphas=jnp.asarray(grid), folds=5, fit_intercept=False,
                            **tight)
    one_at_a_time = cv.cross_validate(
        lambda alpha, *a: fit_path(alpha[None], *a)[:, 0],
        lambda coef, data, weights: score_path(coef[:, None], data, weights)[0],
        (X, y), jnp.asarray(grid), folds=5)
    np.testing.assert_allclose(np.asarray(result.per_fold), np.asarray(reference.mse_path),
                               rtol=1e-8)
    np.testing.assert_allclose(np.asarray(result.per_fold),
                               np.asarray(one_at_a_time.per_fold), rtol=1e-8)
  assert float(result.best) == float(reference.alpha)
  assert float(result.one_se) == float(reference.alpha_one_se)
  with pytest.raises(ValueError, match=r"score must return a vector of 12 losses"):
    cv.cross_validate(fit_path, lambda *a: score_path(*a).sum(), (X, y),
                      jnp.asarray(grid), folds=5, path=True)
  with pytest.raises(TypeError, match="path must be True or False"):
    cv.cross_validate(fit_path, score_path, (X, y), jnp.asarray(grid), folds=5, path=1)


@given(st.integers(2, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n))))
def test_kfold_blocks_match_sklearn(n_and_folds):
  n, k = n_and_folds
  ids = np.asarray(cv.kfold(n, k))
  for fold, (_, test) in enumerate(model_selection.KFold(k).split(np.zeros(n))):
    np.testing.assert_array_equal(np.flatnonzero(ids == fold), test)


def test_kfold_shuffled_keeps_the_block_sizes():
  for n, k in [(10, 3), (442, 5)]:
    shuffled = np.asarray(cv.kfold(n, k, key=jax.random.key(1)))
    np.testing.assert_array_equal(np.bincount(shuffled), np.bincount(cv.kfold(n, k)))
    assert not np.array_equal(shuffled, np.asarray(cv.kfold(n, k)))


def test_kfold_stratified_balances_every_label():
  labels = np.repeat(np.arange(3), [13, 7, 30])
  labels = labels[np.random.default_rng(0).permutation(len(labels))]
  for key in (None, jax.random.key(0)):
    ids = np.asarray(cv.kfold(len(labels), 4, key=key, stratify=labels))
    sizes = np.bincount(ids, minlength=4)
    assert sizes.max() - sizes.min() <= 1
    for label in range(3):
      per_fold = np.bincount(ids[labels == label], minlength=4)
      assert per_fold.max() - per_fold.min() <= 1, (label, per_fold)


# A fit and a score whose per-fold losses are read from a table: fold f's held-out rows
# carry the value f, so the score recovers the fold from its weights.
TABLE = np.array([[3.0, 3.2, 2.8, 3.1], [1.0, 1.6, 0.7, 1.2], [1.2, 1.5, 0.9, 1.3],
                  [1.4, 1.9, 1.0, 1.3], [2.5, 2.0, 2.9, 2.2]])
ROWS = np.repeat(np.arange(4.0), 3)


def table_fit(point, key, data, weights):
  return point


def table_score(point, data, weights):
  fold = (weights @ data / weights.sum()).astype(jnp.int32)
  return jnp.asarray(TABLE)[point, fold]


@pytest.mark.parametrize("batch_size", [None, 1, 3, 7, 8])
def test_summary_and_one_se_rule_against_numpy(batch_size):
  points = jnp.arange(5)
  strength = np.array([0.1, 0.3, 1.0, 3.0, 10.0])
  result = cv.cross_validate(table_fit, table_score, ROWS, points, folds=4,
                             batch_size=batch_size,
                             regularization=lambda p: jnp.asarray(strength)[p])
  np.testing.assert_allclose(np.asarray(result.per_fold), TABLE, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(result.mean), TABLE.mean(1), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(result.stderr), TABLE.std(1, ddof=1) / 2, rtol=1e-5)
  assert int(result.best_index) == 1
  # Point 2 (mean 1.225) is within one SE of point 1 (1.125 + 0.189) and stronger.
  assert int(result.one_se_index) == 2
  mean, se = TABLE.mean(1), TABLE.std(1, ddof=1) / 2
  within = mean <= mean[1] + se[1]
  assert int(result.one_se_index) == np.flatnonzero(within)[strength[within].argmax()]
  # Told the other direction, it picks the weakest point within one SE instead.
  reverse = cv.cross_validate(table_fit, table_score, ROWS, points, folds=4,
                              regularization=-strength)
  assert int(reverse.one_se_index) == np.flatnonzero(within)[strength[within].argmin()] == 1


def test_failed_points_are_marked_and_never_chosen():
  def fit(point, key, data, weights):
    # The would-be best point fails. Its score stays finite (NaN cast to an int picks
    # some table entry), so only the check of the params can catch it.
    return jnp.where(point == 1, jnp.nan, 1.0) * point

  score = lambda params, data, weights: table_score(params.astype(jnp.int32), data, weights)
  result = cv.cross_validate(fit, score, ROWS, jnp.arange(5), folds=4,
                             regularization=-jnp.arange(5.0))
  np.testing.assert_array_equal(np.asarray(result.failed), [False, True, False, False, False])
  assert np.isnan(result.mean[1]) and np.isnan(result.stderr[1])
  assert int(result.best_index) == 2
  assert int(result.one_se_index) != 1
  with pytest.raises(ValueError, match="every grid point failed"):
    cv.cross_validate(lambda p, k, d, w: p * jnp.nan, lambda p, d, w: p, ROWS,
                      jnp.arange(3.0), folds=4)


@pytest.mark.parametrize("batch_size", [None, 2, 8])
def test_fold_keys_are_shared_across_the_grid_and_differ_across_folds(batch_size):
  def fit(point, key, data, weights):
    return jax.random.uniform(key)

  def score(draw, data, weights):
    return draw

  result = cv.cross_validate(fit, score, ROWS, jnp.arange(3.0), folds=4,
                             key=jax.random.key(0), batch_size=batch_size)
  per_fold = np.asarray(result.per_fold)
  fold_keys = jax.random.split(jax.random.key(0), 4)
  np.testing.assert_array_equal(per_fold[0], jax.vmap(jax.random.uniform)(fold_keys))
  np.testing.assert_array_equal(per_fold, np.broadcast_to(per_fold[0], (3, 4)))
  assert len(np.unique(per_fold[0])) == 4


def test_traced_strength_and_rate_under_one_vmap_match_separate_fits():
  """A grid of L2 strengths x dropout rates: the vmapped result is the looped one."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  labels = (x[:, 0] - x[:, 1] > 0).astype(np.float32)

  def fit(h, key, data, weights):
    x, labels = data

    def loss(w, key):
      logits = jr.dropout(key, x, h["rate"]) @ w
      data_loss = weights @ (jax.nn.softplus(logits) - labels * logits) / weights.sum()
      return data_loss + jr.L2(h["l2"])(w)

    def step(w, key):
      return w - 0.5 * jax.grad(loss)(w, key), None

    return jax.lax.scan(step, jnp.zeros(5), jax.random.split(key, 30))[0]

  def score(w, data, weights):
    x, labels = data
    logits = x @ w
    return weights @ (jax.nn.softplus(logits) - labels * logits) / weights.sum()

  grid = {"l2": jnp.array([0.0, 0.1, 0.0, 0.1]), "rate": jnp.array([0.0, 0.0, 0.5, 0.5])}
  key = jax.random.key(3)
  result = cv.cross_validate(fit, score, (x, labels), grid, folds=3, key=key)
  ids, fold_keys = cv.kfold(40, 3), jax.random.split(key, 3)
  fit, score = jax.jit(fit), jax.jit(score)
  for point in range(4):
    h = jax.tree.map(lambda leaf: leaf[point], grid)
    for fold in range(3):
      train = (ids != fold).astype(jnp.float32)
      w = fit(h, fold_keys[fold], (x, labels), train)
      expected = score(w, (x, labels), 1 - train)
      np.testing.assert_allclose(result.per_fold[point, fold], expected, rtol=1e-5)
  assert len(np.unique(np.asarray(result.mean).round(6))) == 4


def test_cross_validate_runs_under_jit():
  points = jnp.arange(5)
  eager = cv.cross_validate(table_fit, table_score, ROWS, points, folds=4)
  jitted = jax.jit(lambda g: cv.cross_validate(table_fit, table_score, ROWS, g, folds=4))
  result = jitted(points)
  np.testing.assert_allclose(np.asarray(result.mean), np.asarray(eager.mean))
  assert int(result.best_index) == int(eager.best_index)


def test_one_se_needs_a_direction():
  result = cv.cross_validate(table_fit, table_score, ROWS, jnp.arange(5), folds=4)
  assert result.one_se_index is None
  with pytest.raises(ValueError, match="regularization="):
    result.one_se


@pytest.mark.parametrize("kwargs, match", [
    (dict(folds=1), "folds must be >= 2, got 1"),
    (dict(folds=13), r"folds must be <= the number of rows \(12\), got 13"),
    (dict(folds=2.0), "folds must be an int"),
    (dict(folds=np.zeros(12, np.int32)), "folds must be >= 2, got 1"),
    (dict(folds=np.repeat([0, 2], 6)), "every fold present"),
    (dict(folds=np.zeros(5, np.int32)), r"shape \(12,\)"),
    (dict(folds=4, grid={}), "grid is empty"),
    (dict(folds=4, grid=jnp.zeros(0)), "grid is empty"),
    (dict(folds=4, grid={"a": jnp.zeros(3), "b": jnp.zeros(4)}), "different lengths"),
    (dict(folds=4, data=(ROWS, np.zeros(11))), "data arrays have different lengths"),
    (dict(folds=4, batch_size=0), "batch_size must be a positive int"),
    (dict(folds=4, regularization=np.zeros(2)), "one scalar per grid point"),
    (dict(folds=4, score=lambda p, d, w: jnp.zeros(2)), "score must return a scalar"),
])
def test_cross_validate_bad_input_raises(kwargs, match):
  args = dict(fit=table_fit, score=table_score, data=ROWS, grid=jnp.arange(5))
  args.update(kwargs)
  folds = args.pop("folds")
  with pytest.raises((ValueError, TypeError), match=match):
    cv.cross_validate(args.pop("fit"), args.pop("score"), args.pop("data"),
                      args.pop("grid"), folds=folds, **args)


@pytest.mark.parametrize("call, match", [
    (lambda X, y: cv.lasso_path(X, y, l1_ratio=0.0), "l1_ratio=0 has no alpha_max"),
    (lambda X, y: cv.alpha_max(X, y, l1_ratio=0.0), "l1_ratio=0 has no alpha_max"),
    (lambda X, y: cv.lasso_path(X, y, l1_ratio=1.5), r"l1_ratio must be in \[0, 1\], got 1.5"),
    (lambda X, y: cv.lasso_path(X[:, 0], y), "X must be 2-D"),
    (lambda X, y: cv.lasso_path(X, y[:-1]), "y must have shape"),
    (lambda X, y: cv.lasso_path(X, y, alphas=0), "alphas as a count must be >= 1"),
    (lambda X, y: cv.lasso_path(X, y, alphas=jnp.array([1.0, -1.0])), "alphas must be"),
    (lambda X, y: cv.lasso_path(X, y, alphas=jnp.zeros(0)), "non-empty"),
    (lambda X, y: cv.lasso_path(X, y, eps=0.0), "eps must be > 0"),
    (lambda X, y: cv.lasso_path(X, y, max_iter=0), "max_iter must be a positive int"),
    (lambda X, y: cv.lasso_path(X, y, weights=jnp.zeros(len(y))), "weights are all 0"),
    (lambda X, y: cv.alpha_max(X, y, weights=-jnp.ones(len(y))), "weights must be finite"),
    (lambda X, y: cv.kfold(5, 2, stratify=jnp.zeros(4)), r"stratify must have shape \(5,\)"),
    (lambda X, y: cv.lasso_cv(X, y, l1_ratio=0.0), "l1_ratio=0 has no alpha_max"),
    (lambda X, y: cv.lasso_cv(X, np.where(np.arange(30) == 3, np.nan, y)),
     "y contains NaN or infinity"),
    (lambda X, y: cv.lasso_cv(X, y, folds=31), r"folds must be <= the number of rows"),
    (lambda X, y: cv.lasso_cv(X, y, folds=jnp.arange(30) % 3, key=jax.random.key(0)),
     "key and stratify deal rows to folds"),
    (lambda X, y: cv.lasso_cv(X, y, folds=jnp.arange(30) % 3 + 1), "fold ids must be 0"),
])
def test_path_bad_input_raises(call, match):
  X, y = wide_data()
  with pytest.raises(ValueError, match=match):
    call(X, y)


@pytest.mark.parametrize("call, match", [
    (lambda X, y: cv.lasso_cv(X, y, fit_intercept="yes"),
     "fit_intercept must be True or False, got 'yes'"),
    (lambda X, y: cv.lasso_cv(X, y, positive=1), "positive must be True or False, got 1"),
    (lambda X, y: cv.lasso_cv(X, y, folds=2.0), "folds must be an int"),
    (lambda X, y: cv.lasso_cv(X, y, max_iter=1.5), "max_iter must be a positive int"),
])
def test_lasso_cv_wrong_types_raise(call, match):
  X, y = wide_data()
  with pytest.raises(TypeError, match=match):
    call(X, y)


def test_unconverged_path_warns(diabetes):
  X, y = diabetes
  with pytest.warns(RuntimeWarning, match="did not converge in max_iter=3"):
    cv.lasso_path(X, y, alphas=5, max_iter=3)
