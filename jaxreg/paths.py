r"""Regularization paths of the Lasso and the elastic net, on scikit-learn's objective.

:func:`alpha_max` is the least strength at which every coefficient is 0, and
:func:`lasso_path` solves the problem for a decreasing grid of strengths from there,
each solution warm-starting the next, by coordinate descent on working sets with
gap-safe screening (the solver is described in ``jaxreg/_working_set.py``). Objective,
grid, tolerance and output layout are scikit-learn's (``sklearn.linear_model.lasso_path``
/ ``enet_path``), so the two can be compared point by point; :mod:`jaxreg.cv`
re-exports both, beside the cross-validation that chooses a point of the path
(:func:`jaxreg.cv.lasso_cv`).

>>> import jax.numpy as jnp
>>> X = jnp.array([[1.0, 0.0], [0.0, 2.0]]); y = jnp.array([1.0, 1.0])
>>> float(alpha_max(X, y))
1.0
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import _sharding
from jaxreg import _working_set

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


def _alpha_max(X, y, n, l1_ratio, positive: bool):
  correlations = X.T @ y
  # With positive, a negative correlation never lets its coefficient off 0.
  top = (jnp.maximum(jnp.max(correlations), 0) if positive
         else jnp.max(jnp.abs(correlations)))
  return top / (n * l1_ratio)


@functools.partial(jax.jit, static_argnames="positive")
def _weighted_alpha_max(X, y, weights, l1_ratio, positive: bool):
  return _alpha_max(*_weighted(X, y, weights), l1_ratio, positive)


def alpha_max(X, y, *, l1_ratio=1.0, weights=None, positive=False) -> jax.Array:
  r"""The least :math:`\alpha` at which every coefficient of the elastic net is 0.

  :math:`\alpha_{max} = \lVert X^\top W y\rVert_\infty / (\rho\sum_i w_i)`,
  :math:`W = \mathrm{diag}(w)` (all ones without ``weights``); with ``positive``
  (coefficients ≥ 0) the largest of :math:`X^\top W y` instead, or 0: the first point
  of scikit-learn's grid. No centering is done; for a model with an intercept pass
  centered ``X`` and ``y`` (``LassoCV``'s grid is this on the centered data).

  >>> import jax.numpy as jnp
  >>> float(alpha_max(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 1.0])))
  1.0
  >>> float(alpha_max(jnp.eye(2), jnp.array([1.0, -2.0]), positive=True))
  0.5
  """
  X, y, weights = _check_xy(X, y, weights)
  return _weighted_alpha_max(X, y, weights, _check_l1_ratio(l1_ratio, grid=True),
                             _checks.check_bool(positive, "positive"))


def lasso_path(X, y, *, l1_ratio=1.0, eps=1e-3, alphas=100, tol=1e-4, max_iter=1000,
               weights=None, positive=False, working_set=None
               ) -> tuple[jax.Array, jax.Array]:
  r"""The Lasso / elastic-net path, warm-started from the largest :math:`\alpha` down.

  At each :math:`\alpha` it minimizes scikit-learn's objective

  .. math::
    \frac{1}{2\sum_i w_i}\sum_i w_i (y_i - x_i^\top\beta)^2 + \alpha\rho\lVert\beta\rVert_1
    + \frac{\alpha(1-\rho)}{2}\lVert\beta\rVert_2^2

  (``ρ = l1_ratio``, ``w`` = ``weights``, all ones by default: ``1/(2n)‖y − Xβ‖²``),
  each point started from the previous solution. At each point, in rounds: the
  correlations of all features give scikit-learn's duality gap; features that
  gap-safe screening proves 0 are set to 0; cyclic coordinate descent (with Anderson
  extrapolation every 3 to 5 epochs) runs on a working set of the non-zero features
  and the likeliest to enter, twice as many, until the set's own gap is small. With at least as
  many rows as features it works on the Gram matrix ``XᵀX`` (see ``_working_set.py``
  for the exact rule). It stops when scikit-learn's duality gap is at most
  ``tol·‖y‖²`` (its ``tol`` means the same) and, as in scikit-learn, the last epoch
  moved no coefficient by more than ``tol`` times the largest; a warm start is kept as
  it is only when its gap is at most 0.3 times the limit. ``max_iter`` bounds the epochs
  at each point (each epoch visits every feature of the working set); on concrete
  inputs a point that did not converge warns. In float32 the gap cannot be resolved
  much below ``1e-6·‖y‖²``, and coefficient steps under 1e-5 of the largest count as
  settled (rounding noise).

  ``positive=True`` keeps every coefficient ≥ 0 (scikit-learn's ``positive``).
  ``working_set``: the size of the first working set at each point (celer's ``p0``,
  default ``min(16, n_features)``); more than the number of features is an error.

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
  settings = _check_settings(X, alphas=alphas, eps=eps, l1_ratio=l1_ratio, tol=tol,
                             max_iter=max_iter, positive=positive,
                             working_set=working_set)
  alphas, coefs, gaps, limit = _path(X, y, weights, settings)
  _warn_unconverged("lasso_path", alphas, gaps, limit, settings.max_iter)
  return alphas, coefs.T


@functools.partial(jax.tree_util.register_dataclass, meta_fields=("count", "positive"),
                   data_fields=("alphas", "eps", "l1_ratio", "tol", "max_iter",
                                "working_set"))
@dataclasses.dataclass(frozen=True)
class _Settings:
  """The checked arguments of a path (shared with :func:`jaxreg.cv.lasso_cv`): a pytree
  whose count and sign constraint shape the program, the rest traced."""
  alphas: jax.Array | None  # None: scikit-learn's grid of ``count`` points
  count: int | None
  eps: Any
  l1_ratio: Any
  tol: Any
  max_iter: Any
  working_set: Any
  positive: bool


def _check_settings(X, *, alphas, eps, l1_ratio, tol, max_iter, positive,
                    working_set) -> _Settings:
  grid = isinstance(alphas, (int, np.integer)) and not isinstance(alphas, bool)
  l1_ratio = _check_l1_ratio(l1_ratio, grid=grid)
  max_iter = _checks.check_positive_int(max_iter, "max_iter")
  tol = _checks.check_nonnegative(tol, "tol")
  positive = _checks.check_bool(positive, "positive")
  working_set = _check_working_set(working_set, X.shape[1])
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
  return _Settings(alphas, count, eps, l1_ratio, tol, max_iter, working_set, positive)



def _check_working_set(size, features: int) -> int:
  """The first working set's size (celer's ``p0``): at most the number of features,
  since a larger set would hold columns the problem does not have."""
  if size is None:
    return min(_working_set.SMALLEST_SET, features)
  size = _checks.check_positive_int(size, "working_set")
  if size > features:
    raise ValueError(f"working_set={size} exceeds the problem's {features} features")
  return size


def _warn_unconverged(caller: str, alphas, gaps, limit, max_iter: int) -> None:
  """A ``RuntimeWarning`` naming the alphas whose gap is above the limit (on concrete
  values; traced ones cannot be read)."""
  if _is_concrete(gaps, limit):
    stuck = np.asarray(gaps) > np.asarray(limit)
    if stuck.any():
      warnings.warn(f"{caller} did not converge in max_iter={max_iter} epochs at alphas "
                    f"{np.unique(np.asarray(alphas)[stuck])[::-1]}; raise max_iter or tol",
                    RuntimeWarning, stacklevel=3)


def _grid(X, y, n, settings: _Settings):
  """The alphas, descending: scikit-learn's grid (``_alpha_grid``, its floor included)
  from ``X`` and ``y`` (centered by the caller for an intercept), or the given ones."""
  if settings.alphas is not None:
    return jnp.sort(jnp.asarray(settings.alphas, X.dtype))[::-1]
  top = _alpha_max(X, y, n, settings.l1_ratio, settings.positive)
  steps = jnp.linspace(0, 1, settings.count, dtype=X.dtype)
  grid = top * jnp.power(jnp.asarray(settings.eps, X.dtype), steps)
  return jnp.where(top <= _ALPHA_FLOOR, _ALPHA_FLOOR, grid)


def _solve(prob: _working_set.Problem, alphas, settings: _Settings):
  """``(coefs (alphas, p), gaps, limit)``: the path of ``prob``."""
  limit = settings.tol * prob.yy
  coefs, gaps, _ = _working_set.solve_path(
      prob, alphas, settings.l1_ratio, limit, settings.tol, settings.max_iter,
      settings.working_set, settings.positive)
  return coefs, gaps, limit


@jax.jit
def _path(X, y, weights, settings: _Settings):
  X, y, n = _weighted(X, y, weights)
  alphas = _grid(X, y, n, settings)
  coefs, gaps, limit = _solve(_working_set.problem(X, y, n), alphas, settings)
  # Traced non-finite data (checked where known) must not come out as zeros.
  finite = jnp.all(jnp.isfinite(X)) & jnp.all(jnp.isfinite(y))
  return alphas, jnp.where(finite, coefs, jnp.nan), gaps, limit
