r"""Regularization paths of the Lasso and the elastic net, on scikit-learn's objective.

:func:`alpha_max` is the least strength at which every coefficient is 0, and
:func:`lasso_path` solves the problem for a decreasing grid of strengths from there,
each solution warm-starting the next, by FISTA with the proximal step
:func:`jaxreg.prox.elastic_net`. Objective, grid, tolerance and output layout are
scikit-learn's (``sklearn.linear_model.lasso_path`` / ``enet_path``), so the two can be
compared point by point; :mod:`jaxreg.cv` re-exports both, beside the cross-validation
that chooses a point of the path.

>>> import jax.numpy as jnp
>>> X = jnp.array([[1.0, 0.0], [0.0, 2.0]]); y = jnp.array([1.0, 1.0])
>>> float(alpha_max(X, y))
1.0
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import _sharding
from jaxreg import prox as _prox

__all__ = ["alpha_max", "lasso_path"]

# scikit-learn's floor for a degenerate alpha grid (y orthogonal to every column).
_ALPHA_FLOOR = float(np.finfo(np.float64).resolution)


def _is_concrete(*values) -> bool:
  return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(values))


def _check_xy(X, y, weights):
  """Arrays in one float dtype; ``weights`` stays None (all ones) when not given."""
  # float32 at least: a 16-bit duality gap could not tell a solution from a start.
  dtype = _dtypes.wide(jnp.result_type(X, y, float))
  X, y = jnp.asarray(X, dtype), jnp.asarray(y, dtype)
  if X.ndim != 2:
    raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}")
  if 0 in X.shape:
    raise ValueError(f"X has no {'rows' if X.shape[0] == 0 else 'features'}: shape {X.shape}")
  if y.shape != X.shape[:1]:
    raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
  # The solver's products couple every row and feature: on an explicit-axis mesh, the
  # data are gathered (XLA's partitioner decides elsewhere).
  X, y = _sharding.replicated(X), _sharding.replicated(y)
  for name, array in (("X", X), ("y", y)):  # As scikit-learn refuses them.
    if _is_concrete(array) and not np.all(np.isfinite(np.asarray(array))):
      raise ValueError(f"{name} contains NaN or infinity")
  if weights is None:
    return X, y, None
  weights = _checks.check_nonnegative(weights, "weights")
  if jnp.shape(weights) != y.shape:
    raise ValueError(f"weights must have shape {y.shape}, got {jnp.shape(weights)}")
  if _is_concrete(weights) and not np.asarray(weights).sum() > 0:
    raise ValueError("weights are all 0: no row to fit")
  return X, y, _sharding.replicated(jnp.asarray(weights, dtype))


def _check_l1_ratio(l1_ratio, *, grid: bool):
  """``l1_ratio`` in ``[0, 1]``; 0 (ridge) only where no grid is made from
  :func:`alpha_max`, which divides by it (scikit-learn refuses it there too)."""
  l1_ratio = _checks.check_rate(l1_ratio, "l1_ratio")
  if grid and isinstance(l1_ratio, float) and l1_ratio == 0:
    raise ValueError("l1_ratio=0 has no alpha_max (every alpha leaves some coefficient "
                     "non-zero): pass the alphas as an array")
  return l1_ratio


def _weighted(X, y, weights):
  """Rows scaled by ``sqrt(w)`` and ``n = Σw``: the weighted objective becomes the plain
  one, and rows of weight 0 (a held-out fold) drop out exactly."""
  if weights is None:
    return X, y, X.shape[0]
  root = jnp.sqrt(weights)
  return X * root[:, None], y * root, weights.sum()


def _alpha_max(X, y, n, l1_ratio):
  return jnp.max(jnp.abs(X.T @ y)) / (n * l1_ratio)


@jax.jit
def _weighted_alpha_max(X, y, weights, l1_ratio):
  return _alpha_max(*_weighted(X, y, weights), l1_ratio)


def alpha_max(X, y, *, l1_ratio=1.0, weights=None) -> jax.Array:
  r"""The least :math:`\alpha` at which every coefficient of the elastic net is 0.

  :math:`\alpha_{max} = \lVert X^\top W y\rVert_\infty / (\rho\sum_i w_i)`,
  :math:`W = \mathrm{diag}(w)` (all ones without ``weights``): the first point of
  scikit-learn's grid. No centering is done; for a model with an intercept pass
  centered ``X`` and ``y`` (``LassoCV``'s grid is this on the centered data).

  >>> import jax.numpy as jnp
  >>> float(alpha_max(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 1.0])))
  1.0
  """
  X, y, weights = _check_xy(X, y, weights)
  return _weighted_alpha_max(X, y, weights, _check_l1_ratio(l1_ratio, grid=True))


def lasso_path(X, y, *, l1_ratio=1.0, eps=1e-3, alphas=100, tol=1e-4, max_iter=10_000,
               weights=None) -> tuple[jax.Array, jax.Array]:
  r"""The Lasso / elastic-net path, warm-started from the largest :math:`\alpha` down.

  At each :math:`\alpha` it minimizes scikit-learn's objective

  .. math::
    \frac{1}{2\sum_i w_i}\sum_i w_i (y_i - x_i^\top\beta)^2 + \alpha\rho\lVert\beta\rVert_1
    + \frac{\alpha(1-\rho)}{2}\lVert\beta\rVert_2^2

  (``ρ = l1_ratio``, ``w`` = ``weights``, all ones by default: ``1/(2n)‖y − Xβ‖²``) by
  FISTA with adaptive restart (O'Donoghue & Candès, 2015), step ``1/L`` with ``L`` the
  largest eigenvalue of :math:`X^\top W X / \sum w` (by power iteration, raised by
  1%), each point started from the previous solution, the proximal step
  :func:`jaxreg.prox.elastic_net`. It stops when
  scikit-learn's duality gap is below ``tol·‖y‖²`` (its ``tol`` means the same) or
  after ``max_iter`` steps; on concrete inputs a point that did not converge warns.
  In float32 the gap cannot be resolved much below ``1e-6·‖y‖²``.

  ``alphas``: an int, the number of points of scikit-learn's grid, geometric from
  :func:`alpha_max` down to ``eps·alpha_max``, or an array of strengths (sorted
  descending, as scikit-learn does). No intercept is fitted, as in scikit-learn's
  ``lasso_path``; center ``X`` and ``y`` first for one.

  Returns ``(alphas, coefs)``: ``alphas`` descending ``(n_alphas,)``, ``coefs``
  ``(n_features, n_alphas)``, laid out as scikit-learn's ``lasso_path``/``enet_path``,
  in float32 or float64 (16-bit data are solved in float32).

  >>> import jax.numpy as jnp
  >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); y = jnp.array([1.0, 0.0, 1.0])
  >>> alphas, coefs = lasso_path(X, y, alphas=jnp.array([1.0, 0.1]))
  >>> alphas, coefs.shape, bool(jnp.all(coefs[:, 0] == 0))
  (Array([1. , 0.1], dtype=float32), (2, 2), True)
  """
  X, y, weights = _check_xy(X, y, weights)
  grid = isinstance(alphas, (int, np.integer)) and not isinstance(alphas, bool)
  l1_ratio = _check_l1_ratio(l1_ratio, grid=grid)
  max_iter = _checks.check_positive_int(max_iter, "max_iter")
  tol = _checks.check_nonnegative(tol, "tol")
  count = None
  if grid:
    if alphas < 1:
      raise ValueError(f"alphas as a count must be >= 1, got {alphas}")
    if _is_concrete(eps) and not float(eps) > 0:
      raise ValueError(f"eps must be > 0, got {eps}")
    count, alphas = int(alphas), None
  else:
    alphas = _checks.check_nonnegative(alphas, "alphas")
    if jnp.ndim(alphas) != 1 or jnp.size(alphas) == 0:
      raise ValueError(f"alphas must be an int or a non-empty 1-D array, got shape "
                       f"{jnp.shape(alphas)}")
  alphas, coefs, gaps, limit = _path(X, y, weights, alphas, count, eps, l1_ratio, tol,
                                     max_iter)
  if _is_concrete(gaps, limit):
    stuck = np.asarray(gaps) > np.asarray(limit)
    if stuck.any():
      warnings.warn(f"lasso_path did not converge in max_iter={max_iter} steps at alphas "
                    f"{np.asarray(alphas)[stuck]}; raise max_iter or tol", RuntimeWarning,
                    stacklevel=2)
  return alphas, coefs.T


# Power iteration stops when the estimate moves by less than this, relatively; the
# estimate is then raised by _EIGENVALUE_MARGIN, as it approaches the eigenvalue from below.
_EIGENVALUE_RTOL = 1e-6
_EIGENVALUE_MARGIN = 1.01


def _largest_eigenvalue(gram, max_steps: int = 1000):
  """The largest eigenvalue of a symmetric positive semi-definite ``gram``, by power
  iteration from a fixed pseudo-random start, raised by 1%: an upper bound in practice,
  for a step ``1/L`` that FISTA can take. Unlike ``eigvalsh`` it needs no solver library
  (no custom call on GPU) and costs one matrix-vector product per step."""
  v = jax.random.normal(jax.random.key(0), gram.shape[:1], gram.dtype)

  def step(state):
    v, estimate, _, k = state
    w = gram @ v
    norm = jnp.linalg.norm(w)
    return w / jnp.where(norm > 0, norm, 1), v @ w, estimate, k + 1

  def unfinished(state):
    _, estimate, previous, k = state
    return (jnp.abs(estimate - previous) > _EIGENVALUE_RTOL * estimate) & (k < max_steps)

  v = v / jnp.linalg.norm(v)
  start = (v, jnp.zeros((), gram.dtype), jnp.full((), jnp.inf, gram.dtype), 0)
  _, estimate, _, _ = jax.lax.while_loop(unfinished, step, step(start))
  return _EIGENVALUE_MARGIN * estimate


@functools.partial(jax.jit, static_argnames="count")
def _path(X, y, weights, alphas, count, eps, l1_ratio, tol, max_iter):
  X, y, n = _weighted(X, y, weights)
  if alphas is None:  # scikit-learn's grid (_alpha_grid), floor included
    top = _alpha_max(X, y, n, l1_ratio)
    grid = top * jnp.power(jnp.asarray(eps, X.dtype), jnp.linspace(0, 1, count, dtype=X.dtype))
    alphas = jnp.where(top <= _ALPHA_FLOOR, _ALPHA_FLOOR, grid)
  else:
    alphas = jnp.sort(jnp.asarray(alphas, X.dtype))[::-1]
  Xty = X.T @ y
  gram = X.T @ X if X.shape[1] <= X.shape[0] else X @ X.T  # same largest eigenvalue
  step = n / jnp.maximum(_largest_eigenvalue(gram), jnp.finfo(X.dtype).tiny)
  limit = tol * (y @ y)

  def gap(w, Xw, XtXw, l1, l2):
    # scikit-learn's duality gap (cd_fast.gap_enet), on the objective times n.
    residual = y - Xw
    r2, ry, w2 = residual @ residual, residual @ y, w @ w
    beta = l2 * n
    # With an L1 term: a dual point scaled into the feasible set of the L1 term.
    correlation = Xty - XtXw - beta * w
    dual_norm = jnp.max(jnp.abs(correlation))
    scale = jnp.where(dual_norm > l1 * n, l1 * n / jnp.where(dual_norm > 0, dual_norm, 1),
                      1.0)
    with_l1 = (0.5 * (r2 + beta * w2) * (1 + scale**2) + l1 * n * jnp.sum(jnp.abs(w))
               - scale * ry)
    # Without one (l1_ratio = 0): ridge's own dual; at alpha = 0, the normal equations.
    xtr2 = jnp.sum(jnp.square(Xty - XtXw))
    ridge = r2 + 0.5 * beta * w2 - ry + xtr2 / (2 * jnp.where(beta > 0, beta, 1))
    return jnp.where(l1 > 0, with_l1, jnp.where(beta > 0, ridge, xtr2))

  def solve(w, alpha):
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    Xw = X @ w
    XtXw = X.T @ Xw
    start = (w, Xw, XtXw, w, Xw, XtXw, jnp.ones((), X.dtype), 0, gap(w, Xw, XtXw, l1, l2))

    def unfinished(state):
      return (state[-1] > limit) & (state[-2] < max_iter)

    def fista_step(state):
      w, Xw, XtXw, w_old, Xw_old, XtXw_old, t, k, _ = state
      t_next = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
      momentum = (t - 1) / t_next
      v = w + momentum * (w - w_old)
      # X^T X v from the two stored products: the extrapolation is linear.
      grad = (XtXw + momentum * (XtXw - XtXw_old) - Xty) / n
      w_new = _prox.elastic_net(v - step * grad, step * l1, step * l2 / 2)
      Xw_new = X @ w_new
      XtXw_new = X.T @ Xw_new
      # Restart the momentum when it points uphill (gradient scheme).
      t_next = jnp.where((v - w_new) @ (w_new - w) > 0, 1.0, t_next).astype(X.dtype)
      return (w_new, Xw_new, XtXw_new, w, Xw, XtXw, t_next, k + 1,
              gap(w_new, Xw_new, XtXw_new, l1, l2))

    final = jax.lax.while_loop(unfinished, fista_step, start)
    return final[0], (final[0], final[-1])

  _, (coefs, gaps) = jax.lax.scan(solve, jnp.zeros(X.shape[1], X.dtype), alphas)
  # Traced non-finite data (checked where known) must not come out as zeros.
  finite = jnp.all(jnp.isfinite(X)) & jnp.all(jnp.isfinite(y))
  return alphas, jnp.where(finite, coefs, jnp.nan), gaps, limit
