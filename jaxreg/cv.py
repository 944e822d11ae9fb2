r"""Choosing a strength or a rate: k-fold cross-validation and regularization paths.

Strengths and rates in jaxreg may be traced, so a whole grid of them, times every fold,
trains as **one** compiled program: :func:`cross_validate` expresses each fold as 0/1
row weights, so every (grid point, fold) pair has the same shapes and all of them run
under one ``jax.vmap`` (in chunks of ``batch_size`` with ``jax.lax.map`` when memory
requires). :func:`lasso_path` and :func:`alpha_max` (from :mod:`jaxreg.paths`) give the
warm-started path of the Lasso and the elastic net on scikit-learn's objective and grid,
and :func:`lasso_cv` cross-validates it in one call, as scikit-learn's ``LassoCV``.

Choosing from the curve (as glmnet does): ``best`` minimizes the mean held-out loss over
the folds; the one-standard-error choice ``one_se`` is the most regularized point whose
mean is within one standard error of the best one's,
:math:`\bar L_j \le \bar L_{best} + \mathrm{SE}_{best}` with
:math:`\mathrm{SE} = \mathrm{sd}(L_{j,1..K}) / \sqrt{K}` (``ddof=1``) (Hastie, Tibshirani
& Friedman, *The Elements of Statistical Learning*, §7.10).

>>> import jax.numpy as jnp
>>> from jaxreg import cv
>>> cv.kfold(5, 2)
Array([0, 0, 0, 1, 1], dtype=int32)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg import _folds
from jaxreg._folds import kfold
from jaxreg._lasso_cv import LassoCVResult
from jaxreg._lasso_cv import lasso_cv
# Public here too (``cv.alpha_max``, ``cv.lasso_path``): a path is what CV chooses from.
from jaxreg.paths import alpha_max
from jaxreg.paths import lasso_path

__all__ = [
    "kfold",
    "cross_validate",
    "CVResult",
    "alpha_max",
    "lasso_path",
    "lasso_cv",
    "LassoCVResult",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CVResult:
  """What :func:`cross_validate` measured, one row per grid point.

  Attributes:
    grid: the grid as given (a pytree, leading axis = grid points).
    per_fold: ``(points, folds)`` held-out loss; NaN where the point failed on that fold.
    failed: ``(points,)``, True where ``fit`` or ``score`` gave a non-finite value on
      some fold. A failed point has NaN ``mean`` and ``stderr`` and is never chosen.
    mean, stderr: ``(points,)`` mean over folds and its standard error (``ddof=1``).
    best_index: the point with the least mean loss.
    one_se_index: the most regularized point within one standard error of the best,
      or None when ``cross_validate`` was not told what "more regularized" means.
  """
  grid: Any
  per_fold: jax.Array
  failed: jax.Array
  mean: jax.Array
  stderr: jax.Array
  best_index: jax.Array
  one_se_index: jax.Array | None

  @property
  def best(self):
    """The grid point at ``best_index`` (a pytree of scalars)."""
    return jax.tree.map(lambda leaf: leaf[self.best_index], self.grid)

  @property
  def one_se(self):
    """The grid point at ``one_se_index``; needs ``regularization=`` in cross_validate."""
    if self.one_se_index is None:
      raise ValueError(
          "one_se needs to know which points are more regularized: pass "
          "regularization= (a function of a grid point, larger = more regularized) "
          "to cross_validate")
    return jax.tree.map(lambda leaf: leaf[self.one_se_index], self.grid)


def _grid_size(grid) -> int:
  leaves = jax.tree.leaves(grid)
  if not leaves:
    raise ValueError("grid is empty: pass a pytree of arrays with a leading grid axis")
  lengths = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
  if None in lengths:
    raise ValueError("every grid leaf needs a leading grid axis; got a scalar leaf (a "
                     "Python list is a pytree of scalars: pass jnp.array(...) instead)")
  if len(lengths) > 1:
    shapes = jax.tree.map(jnp.shape, grid)
    raise ValueError(f"grid leaves have different lengths {sorted(lengths)}: {shapes}")
  (size,) = lengths
  if size == 0:
    raise ValueError("grid is empty: its leaves have length 0")
  return size


def _rows(data) -> int:
  leaves = jax.tree.leaves(data)
  if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
    raise ValueError("data must be a pytree of arrays whose leading axis is the rows; "
                     "got a scalar leaf (a Python list is a pytree of scalars)")
  lengths = {jnp.shape(leaf)[0] for leaf in leaves}
  if len(lengths) > 1:
    raise ValueError(f"data arrays have different lengths (rows): "
                     f"{jax.tree.map(jnp.shape, data)}")
  return lengths.pop()


def _amounts(regularization, grid, size: int):
  if regularization is None:
    return None
  amount = (jax.vmap(regularization)(grid) if callable(regularization)
            else jnp.asarray(regularization))
  if jnp.shape(amount) != (size,):
    raise ValueError(f"regularization must give one scalar per grid point ({size},), "
                     f"got shape {jnp.shape(amount)}")
  return amount


def _all_finite(tree) -> jax.Array:
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def cross_validate(fit: Callable, score: Callable, data, grid, *, folds, key=None,
                   batch_size: int | None = None, regularization=None,
                   path: bool = False) -> CVResult:
  r"""K-fold cross-validation of every grid point, all (point, fold) pairs in one vmap.

  Args:
    fit: ``fit(hparams, key, data, weights) -> params``: trains on the rows whose
      weight is 1 (``weights`` is ``(n,)``, 0/1, in the default float dtype). ``hparams``
      is one grid point (the grid's leaves without their leading axis, traced).
    score: ``score(params, data, weights) -> scalar``: the weighted mean loss on the
      rows whose weight is 1 (the held-out fold). Lower is better.
    data: a pytree of arrays whose leading axis is the ``n`` rows.
    grid: a pytree of arrays with a leading grid axis (strengths, rates, ...).
    folds: the number of folds (contiguous blocks, :func:`kfold` without a key), or
      fold ids ``(n,)`` in ``0 .. k - 1`` (from :func:`kfold`, or scikit-learn's splits).
    key: split into one key per fold; every grid point gets the same key on a fold
      (common random numbers: points differ by their hparams, not their init or
      dropout draws). ``None`` passes ``None`` to ``fit``.
    batch_size: at most how many (point, fold) fits run at once; ``None`` runs all of
      them in one vmap. Otherwise ``jax.lax.map`` runs chunks one after another: of
      ``batch_size // k`` points with all ``k`` folds each, or, for ``batch_size < k``,
      of one point's folds ``batch_size`` at a time.
      How much batching gains depends on how much work one step does: see the Speed
      section of docs/cv.md (``benchmarks/cv_bench.py``).
    regularization: what "more regularized" means for the one-standard-error choice: a
      function of one grid point returning a scalar, larger = more regularized (for a
      strength, ``lambda h: h``), or an array ``(points,)`` of such amounts.
    path: ``fit`` trains the whole grid at once, as a warm-started path does: it gets
      the whole grid (leaves with their leading axis), and ``score`` returns one loss
      per grid point, a vector ``(points,)``. ``batch_size`` then counts folds.

  A pair whose params or loss is not finite marks its point failed: not chosen, NaN in
  ``mean``. If every point fails, ``ValueError``. A grid point that could only train as
  another point is refused before any training: a NaN in a known grid, and a grid leaf
  that ``fit`` passes as it is to a jaxreg strength, threshold or rate (``jr.L2(h)``,
  ``jr.dropout(k, x, h["rate"])``) where that value is out of range (negative or NaN
  for a strength, outside ``[0, 1]`` for a rate): traced, jaxreg would read it as 0 or
  clip it. Those raise ``ValueError`` naming the leaf and the points; under ``jit``,
  with the grid traced, they mark the points failed instead. (A leaf transformed first,
  ``jr.L2(10.0**h)``, is the caller's to keep in range; it may well be negative.)

  Each call compiles ``fit`` and ``score`` anew (they are closed over); wrap the call
  in ``jax.jit`` to reuse one compiled program for several grids of the same shape.

  >>> import jax.numpy as jnp
  >>> x = jnp.linspace(-1.0, 1.0, 20); data = (x, 2 * x)
  >>> fit = lambda lam, key, d, w: jnp.sum(w * d[0] * d[1]) / (jnp.sum(w * d[0]**2) + lam)
  >>> score = lambda a, d, w: jnp.sum(w * (a * d[0] - d[1])**2) / jnp.sum(w)
  >>> result = cross_validate(fit, score, data, jnp.array([0.0, 1.0, 10.0]), folds=4)
  >>> float(result.best)
  0.0
  """
  data, grid = jax.tree.map(jnp.asarray, data), jax.tree.map(jnp.asarray, grid)
  n = _rows(data)
  size = _grid_size(grid)
  fold_ids, count = _folds.fold_ids(folds, n)
  amounts = _amounts(regularization, grid, size)
  batch_size = _checks.check_positive_int(batch_size, "batch_size", allow_none=True)
  key = None if key is None else _checks.check_key(key)
  weight_dtype = jnp.result_type(float)
  labels = [jax.tree_util.keystr(path)
            for path, _ in jax.tree_util.tree_leaves_with_path(grid)]
  _check_no_nan(grid, labels)

  path = _checks.check_bool(path, "path")
  loss_shape = (size,) if path else ()

  def one(hparams, fold, fold_key, data, fold_ids):
    train = (fold_ids != fold).astype(weight_dtype)
    params = fit(hparams, fold_key, data, train)
    loss = score(params, data, 1 - train)
    if jnp.shape(loss) != loss_shape:
      wanted = f"a vector of {size} losses (path=True)" if path else "a scalar"
      raise ValueError(f"score must return {wanted}, got shape {jnp.shape(loss)}")
    # A path's params cover every point: one that is not finite fails them all.
    ok = _all_finite(params) & jnp.isfinite(loss)
    return jnp.where(ok, loss, jnp.nan), ~ok

  @jax.jit
  def run(grid, data, fold_ids, key):
    fold_keys = None if key is None else jax.random.split(key, count)
    folds = jnp.arange(count, dtype=jnp.int32)

    def point(hparams):
      for label, leaf in zip(labels, jax.tree.leaves(hparams)):
        _checks.watch_traced(leaf, label)  # Which leaves fit uses as a strength or rate.
      # The folds inside, the grid outside: a fold's key and weights are the same for
      # every point, so what depends on them alone (minibatch draws, gathered rows, the
      # first layer's input) stays unbatched along the grid and is computed once per
      # fold (10-40% faster than one flat vmap over (point, fold) pairs on a CPU).
      fn = lambda fold_and_key: one(hparams, *fold_and_key, data, fold_ids)
      if batch_size is None or batch_size >= count:
        return jax.vmap(fn)((folds, fold_keys))
      return jax.lax.map(fn, (folds, fold_keys), batch_size=batch_size)

    if path:  # (folds, points) from one fit per fold
      losses, bad = point(grid)
      return losses.T, bad.T.any(axis=1)
    if batch_size is None:
      losses, bad = jax.vmap(point)(grid)
    else:
      losses, bad = jax.lax.map(point, grid, batch_size=max(1, batch_size // count))
    return losses, bad.any(axis=1)

  args = (grid, data, fold_ids, key)
  with _checks.watching_traced() as uses:
    traced = run.trace(*args)  # Traces fit and score, so that uses is filled.
  invalid = _invalid_points(grid, labels, uses.uses)
  per_fold, failed = run(*args) if _is_traced(args) else traced.lower().compile()(*args)
  failed = failed | invalid
  if not isinstance(failed, jax.core.Tracer) and bool(np.all(failed)):
    raise ValueError("every grid point failed: fit or score gave a non-finite value "
                     "(NaN or inf) on some fold of each point")
  return CVResult(grid, per_fold, failed, *_summary(per_fold, failed, amounts))


def _is_traced(tree) -> bool:
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _check_no_nan(grid, labels):
  """A known NaN grid point is no candidate: it would train as whatever the code that
  receives it maps NaN to (a strength of 0), and could be chosen."""
  for label, leaf in zip(labels, jax.tree.leaves(grid)):
    if isinstance(leaf, jax.core.Tracer) or not jnp.issubdtype(leaf.dtype, jnp.inexact):
      continue
    nan = np.flatnonzero(np.isnan(np.asarray(leaf)).reshape(len(leaf), -1).any(axis=1))
    if nan.size:
      raise ValueError(f"grid{label} is NaN at grid point(s) {nan.tolist()}")


def _invalid_points(grid, labels, uses) -> jax.Array:
  """``(points,)``: where a grid leaf that ``fit`` passed to a jaxreg check as a
  strength or a rate (:func:`jaxreg._checks.watching_traced`) fails that check.

  Traced inside, a bad strength acts as 0 and a bad rate is clipped, so the point
  would train as another point. A known grid raises ``ValueError`` here, before any
  training; a traced one marks those points failed."""
  invalid = jnp.zeros(_grid_size(grid), bool)
  for label, leaf in zip(labels, jax.tree.leaves(grid)):
    for name, kind in sorted(uses.get(label, ())):
      bad = ~_checks.valid_for(leaf, kind)
      bad = bad.reshape(len(leaf), -1).any(axis=1)
      if isinstance(bad, jax.core.Tracer):
        invalid = invalid | bad
        continue
      points = np.flatnonzero(np.asarray(bad))
      if points.size:
        rule = "in [0, 1]" if kind == "rate" else "finite and >= 0"
        values = np.asarray(leaf)[points].tolist()
        raise ValueError(f"grid{label} is passed to jaxreg as {name!r}, which must be "
                         f"{rule}; grid point(s) {points.tolist()} are {values}")
  return invalid


@jax.jit
def _summary(per_fold, failed, amounts):
  """Mean, standard error, best and one-SE indices of a ``(points, folds)`` table."""
  count = per_fold.shape[1]
  mean = jnp.where(failed, jnp.nan, per_fold.mean(axis=1))
  stderr = jnp.where(failed, jnp.nan, per_fold.std(axis=1, ddof=1) / np.sqrt(count))
  # int32 indices: an int64 one (made under enable_x64) cannot index once x64 is off.
  best = jnp.argmin(jnp.where(failed, jnp.inf, mean)).astype(jnp.int32)
  if amounts is None:
    return mean, stderr, best, None
  within = ~failed & (mean <= mean[best] + stderr[best])
  most = jnp.max(jnp.where(within, amounts, -jnp.inf))
  one_se = jnp.argmin(jnp.where(within & (amounts == most), mean, jnp.inf))
  return mean, stderr, best, one_se.astype(jnp.int32)
