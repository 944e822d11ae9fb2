r"""Cross-validated Lasso and elastic net in one call: scikit-learn's ``LassoCV``.

:func:`lasso_cv` solves one warm-started path per fold (:mod:`jaxreg.paths`' solver)
on the alpha grid of all rows, scores each point on the held-out fold, and refits the
chosen alpha on all rows, all in one compiled program.

>>> import jax.numpy as jnp
>>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
>>> lasso_cv(X, X @ jnp.array([1.0, -1.0]), folds=2, alphas=5).alphas.shape
(5,)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg import _folds
from jaxreg import _working_set
from jaxreg import paths

__all__ = ["lasso_cv", "LassoCVResult"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LassoCVResult:
  """What :func:`lasso_cv` measured and chose (scikit-learn's ``LassoCV`` names in
  brackets).

  Attributes:
    alphas: ``(n_alphas,)``, descending [``alphas_``].
    mse_path: ``(n_alphas, folds)`` held-out mean squared error [``mse_path_``].
    mean, stderr: ``(n_alphas,)`` its mean over the folds and the standard error of
      that mean (``ddof=1``).
    alpha: the alpha of least ``mean`` [``alpha_``].
    alpha_one_se: the largest alpha whose ``mean`` is within one ``stderr`` of the
      least (Hastie, Tibshirani & Friedman, §7.10).
    coef, intercept: the fit on all rows at ``alpha`` [``coef_``, ``intercept_``].
  """
  alphas: jax.Array
  mse_path: jax.Array
  mean: jax.Array
  stderr: jax.Array
  alpha: jax.Array
  alpha_one_se: jax.Array
  coef: jax.Array
  intercept: jax.Array


def lasso_cv(X, y, *, l1_ratio=1.0, eps=1e-3, alphas=100, folds=5, key=None,
             stratify=None, tol=1e-4, max_iter=1000, positive=False, fit_intercept=True
             ) -> LassoCVResult:
  r"""K-fold cross-validation of the Lasso (or elastic net) path, as ``LassoCV``.

  The grid is scikit-learn's, computed from all rows (centered when
  ``fit_intercept``), as ``LassoCV`` does: ``alphas`` points from :func:`alpha_max`
  down to ``eps`` times it, or the alphas given. For each fold, the path of the other
  rows (centered on their own means) is solved as :func:`jaxreg.paths.lasso_path`
  does, each point warm-started from the one before, and every point is scored by
  its mean squared error on the fold :math:`F`, intercept included,

  .. math::
    \mathrm{mse}_{\alpha,F} = \frac{1}{|F|}\sum_{i\in F}
    \bigl(y_i - \bar y_{-F} - (x_i - \bar x_{-F})^\top\beta_{\alpha,-F}\bigr)^2

  (:math:`-F`: the other rows, whose means center the fit). The folds run one after
  another inside one program: a path's loops stop at data-dependent points, which a
  ``vmap`` over folds would make every fold wait for. ``coef`` and ``intercept``
  are then fit on all rows at the chosen ``alpha``, from zero, as ``LassoCV``
  refits.

  Args:
    X, y: ``(n, p)`` and ``(n,)``.
    l1_ratio: ρ of the elastic net, in ``(0, 1]`` (0 only with ``alphas`` given).
    eps, alphas, tol, max_iter, positive: as in :func:`jaxreg.paths.lasso_path`.
    folds: the number of folds, or fold ids ``(n,)`` in ``0 .. k - 1`` (scikit-learn's
      ``KFold(k)`` without shuffling is ``folds=k``).
    key, stratify: how rows are dealt to folds, as in :func:`jaxreg.cv.kfold` (only
      with ``folds`` a number).
    fit_intercept: center each training fold (and all rows for the grid and refit).

  Returns a :class:`LassoCVResult`. Non-convergence at some point of some fold
  warns, as in :func:`jaxreg.paths.lasso_path`.

  >>> import jax.numpy as jnp
  >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
  >>> result = lasso_cv(X, X @ jnp.array([1.0, -1.0]), folds=2, alphas=5)
  >>> result.mse_path.shape, bool(result.alpha == result.alphas[result.mean.argmin()])
  ((5, 2), True)
  """
  X, y, _ = paths._check_xy(X, y, None)
  settings = paths._check_settings(X, alphas=alphas, eps=eps, l1_ratio=l1_ratio, tol=tol,
                                   max_iter=max_iter, positive=positive, working_set=None)
  n = X.shape[0]
  if hasattr(folds, "shape"):
    if key is not None or stratify is not None:
      raise ValueError("key and stratify deal rows to folds: pass them with folds as a "
                       "number, not with fold ids")
    ids, count = _folds.fold_ids(folds, n)  # concrete ids, checked
    fold_rows = int(np.bincount(np.asarray(ids), minlength=count).max())
  else:
    ids, count = _folds.kfold(n, folds, key=key, stratify=stratify), int(folds)
    fold_rows = -(-n // count)  # blocks or dealt in turn: sizes differ by one at most
  fit_intercept = _checks.check_bool(fit_intercept, "fit_intercept")
  result, (at, gaps, limits) = _cross_validate(X, y, ids, settings, count, fold_rows,
                                               fit_intercept)
  paths._warn_unconverged("lasso_cv", at, gaps, limits, settings.max_iter)
  return result


def _fold_problem(X0, y0, moments, test, fit_intercept: bool):
  """The problem of the rows outside ``test`` (indices, padded with ``n``), centered on
  their means when ``fit_intercept``, and those means relative to ``X0``'s, ``y0``'s.

  ``X0`` and ``y0`` are the data centered on all rows' means. With the Gram form, the
  fold's moments are all rows' ``moments`` less the held-out rows': one product of
  ``n/k`` rows per fold instead of ``n − n/k``. Centering ``X0`` first keeps the mean
  correction small, so that no precision is lost to cancellation."""
  n = X0.shape[0]
  held_out = test < n
  X_test = jnp.where(held_out[:, None], X0[jnp.minimum(test, n - 1)], 0)
  y_test = jnp.where(held_out, y0[jnp.minimum(test, n - 1)], 0)
  rows = n - held_out.sum()
  x_mean = (X0.sum(0) - X_test.sum(0)) / rows if fit_intercept else jnp.zeros_like(X0[0])
  y_mean = (y0.sum() - y_test.sum()) / rows if fit_intercept else jnp.zeros_like(y0[0])
  if moments is None:
    train = jnp.ones(n, bool).at[test].set(False, mode="drop")[:, None]
    X_train = jnp.where(train, X0 - x_mean, 0)
    y_train = jnp.where(train[:, 0], y0 - y_mean, 0)
    return _working_set.problem(X_train, y_train, rows), x_mean, y_mean
  gram, xty, yy = moments
  prob = _working_set.gram_problem(
      gram - X_test.T @ X_test - rows * jnp.outer(x_mean, x_mean),
      xty - X_test.T @ y_test - rows * x_mean * y_mean,
      yy - y_test @ y_test - rows * y_mean**2, rows)
  return prob, x_mean, y_mean


@functools.partial(jax.jit, static_argnames=("count", "fold_rows", "fit_intercept"))
def _cross_validate(X, y, ids, settings, count: int, fold_rows: int, fit_intercept: bool):
  n = X.shape[0]
  x_offset = X.mean(0) if fit_intercept else jnp.zeros(X.shape[1], X.dtype)
  y_offset = y.mean() if fit_intercept else jnp.zeros((), X.dtype)
  X0, y0 = X - x_offset, y - y_offset
  alphas = paths._grid(X0, y0, n, settings)
  gram_form = _working_set.uses_gram(n - fold_rows, X.shape[1])
  moments = (X0.T @ X0, X0.T @ y0, y0 @ y0) if gram_form else None

  def fold_path(fold):
    test = jnp.nonzero(ids == fold, size=fold_rows, fill_value=n)[0]
    prob, x_mean, y_mean = _fold_problem(X0, y0, moments, test, fit_intercept)
    coefs, gaps, limit = paths._solve(prob, alphas, settings)
    held_out = test < n
    rows = jnp.minimum(test, n - 1)
    errors = (y0[rows] - y_mean)[:, None] - (X0[rows] - x_mean) @ coefs.T
    mse = held_out @ jnp.square(errors) / held_out.sum()
    return mse, gaps, limit

  mse, gaps, limits = jax.lax.map(fold_path, jnp.arange(count))
  mse_path = mse.T
  mean = mse_path.mean(axis=1)
  stderr = mse_path.std(axis=1, ddof=1) / np.sqrt(count)
  best = jnp.argmin(mean)
  # Descending alphas: the first point within one standard error is the largest alpha.
  one_se = jnp.argmax(mean <= mean[best] + stderr[best])
  everything = (_working_set.gram_problem(*moments, n) if gram_form
                else _working_set.problem(X0, y0, n))
  coef, gap, limit = paths._solve(everything, alphas[best][None], settings)
  coef = coef[0]
  result = LassoCVResult(alphas, mse_path, mean, stderr, alphas[best], alphas[one_se],
                         coef, y_offset - x_offset @ coef)
  # Every solve's alpha, gap and limit: the folds' paths, then the refit.
  solves = (jnp.concatenate([jnp.tile(alphas, count), alphas[best][None]]),
            jnp.concatenate([gaps.ravel(), gap]),
            jnp.concatenate([jnp.repeat(limits, len(alphas)), limit[None]]))
  return result, solves
