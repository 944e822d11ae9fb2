r"""The elastic-net path solver: gap-safe screening, working sets, coordinate descent.

Each point of the path minimizes scikit-learn's objective times ``n``,

.. math::
  P(\beta) = \tfrac12\lVert y - X\beta\rVert^2 + n\lambda_1\lVert\beta\rVert_1
  + \tfrac{n\lambda_2}{2}\lVert\beta\rVert^2,\qquad
  \lambda_1 = \alpha\rho,\ \lambda_2 = \alpha(1-\rho),

warm-started from the previous point, in rounds (Massias, Gramfort & Salmon, 2018,
"Celer"), until scikit-learn's duality gap is at most ``limit``:

1. the correlations :math:`c = X^\top r - n\lambda_2\beta` of all features give the
   dual point :math:`\theta = r\,\min(1, n\lambda_1/\lVert c\rVert_\infty)/(n\lambda_1)`
   and the gap;
2. gap-safe screening (Ndiaye et al., 2017): a feature with
   :math:`|c_j|\,s + \sqrt{2\,\mathrm{gap}}\,\lVert\tilde x_j\rVert/(n\lambda_1) < 1`
   is 0 at the solution, so it is set to 0 and left out;
3. the working set: every non-zero feature and those whose constraint the dual point
   is nearest to violating, :math:`(1 - |x_j^\top\theta|)/\lVert\tilde x_j\rVert`
   smallest, at least twice the non-zeros and twice the last round's size (chosen by
   bisection on that distance: a sort of all features costs more than a round);
4. cyclic coordinate descent on the working set, with Anderson extrapolation every
   few epochs (``ANDERSON_DEPTH``; Bertrand & Massias, 2021), until the set's own gap is
   below 0.3 times the full one and, as in scikit-learn, the last epoch moved no
   coefficient by more than ``tol`` times the largest.

A warm start is kept as it is when its gap is at most ``_ACCEPT`` times the limit:
the gap bounds the objective, not the coefficients, and a warm start just under the
limit can be several times further from the solution than scikit-learn's points.

Static shapes for XLA: the working set is a mask over all features, and its members'
positions; the loops run over the members' count, which is traced, so one program
serves every size of set (a program per power-of-two size compiled in 4–6 s, this one
in about 1 s). The coefficient vector is written to a second buffer during an epoch,
because XLA copies a vector that one step of a loop both reads and writes.

With at least as many rows as features the Gram matrix is formed once and every round
works on it (:func:`uses_gram`); otherwise on the features' rows of ``Xᵀ``, stored
contiguously so that both the full correlations and a member's column read memory in
order.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxreg import _anderson

# The smallest working set, and the fraction of the full gap a round's inner solve
# reaches (celer's defaults: smaller sets would cost more rounds than they save).
SMALLEST_SET = 16
_INNER_FRACTION = 0.3
# Anderson extrapolation every this many epochs, from as many steps, by form: of 3, 4,
# 5 (skglm's default) and 8, 5 was the fastest with the Gram matrix and 3 without on the
# benchmark's problems (a data-form epoch costs more beside the full passes it saves).
ANDERSON_DEPTH = {"gram": 5, "data": 3}
# A warm start is kept when its gap is at most this times the limit (module docstring).
_ACCEPT = 0.3
# See uses_gram().
_GRAM_FEATURES = 1024


class Problem(NamedTuple):
  """A least-squares problem in the form the solver reads; ``gram`` or ``xt`` is None."""
  xty: jax.Array       # (p,)  Xᵀy
  yy: jax.Array        # ()    ‖y‖²
  n: jax.Array         # ()    the number of rows (Σ weights)
  norms2: jax.Array    # (p,)  ‖x_j‖²
  gram: jax.Array | None = None   # (p, p) XᵀX, where uses_gram()
  xt: jax.Array | None = None     # (p, n) Xᵀ, otherwise
  y: jax.Array | None = None      # (n,)


def uses_gram(rows: int, features: int) -> bool:
  """Whether the Gram matrix replaces ``X``: with at least as many rows as features
  (scikit-learn's ``precompute='auto'`` asks for more), up to ``_GRAM_FEATURES``
  features, or with twice as many rows. Forming ``XᵀX`` costs ``p`` passes over ``X``;
  a round then costs ``p²`` instead of ``n·p``, and an epoch ``p`` per coordinate
  instead of ``2n``. On a square 2000×2000 design the passes cost more than they save
  (measured), on a square 1000×1000 one much less."""
  return rows >= features and (features <= _GRAM_FEATURES or rows >= 2 * features)


def problem(X, y, n) -> Problem:
  """The solver's view of ``(X, y)``, the objective divided by ``n``."""
  xt = X.T
  if uses_gram(*X.shape):
    return gram_problem(xt @ X, xt @ y, y @ y, n)
  return Problem(xty=xt @ y, yy=y @ y, n=jnp.asarray(n, X.dtype),
                 norms2=jnp.sum(jnp.square(X), axis=0), xt=xt, y=y)


def gram_problem(gram, xty, yy, n) -> Problem:
  """The problem given by its moments ``XᵀX``, ``Xᵀy`` and ``‖y‖²``."""
  return Problem(xty=xty, yy=yy, n=jnp.asarray(n, gram.dtype), norms2=jnp.diagonal(gram),
                 gram=gram)


class _Fit(NamedTuple):
  """What one round needs of the current point: the coefficients, the residual (data
  form only), the correlations Xᵀr, ‖r‖² and rᵀy."""
  w: jax.Array
  r: jax.Array | None
  corr: jax.Array
  rr: jax.Array
  ry: jax.Array


def _measure(prob: Problem, w, r) -> _Fit:
  if prob.gram is not None:
    corr = prob.xty - prob.gram @ w
    ry = prob.yy - w @ prob.xty
    return _Fit(w, None, corr, ry - w @ corr, ry)
  return _Fit(w, r, prob.xt @ r, r @ r, r @ prob.y)


def _penalties(alpha, l1_ratio, n):
  """``(nλ₁, nλ₂)``: the objective's weights on ‖β‖₁ and ‖β‖²/2, times n."""
  return n * alpha * l1_ratio, n * alpha * (1 - l1_ratio)


def _dual_scale(corr, w, l1n, l2n, positive):
  """``(c, s)``: the elastic-net correlations and the factor that brings the dual point
  into the feasible set, ``min(1, nλ₁/‖c‖∞)`` (the largest of ``c`` with ``positive``)."""
  c = corr - l2n * w
  norm = jnp.max(c) if positive else jnp.max(jnp.abs(c))
  return c, jnp.where(norm > l1n, l1n / jnp.where(norm > 0, norm, 1), 1.0)


def gap(fit: _Fit, l1n, l2n, positive):
  """scikit-learn's duality gap (``cd_fast``), of the objective times n."""
  w, w2 = fit.w, fit.w @ fit.w
  _, scale = _dual_scale(fit.corr, w, l1n, l2n, positive)
  with_l1 = (0.5 * (fit.rr + l2n * w2) * (1 + scale**2) + l1n * jnp.sum(jnp.abs(w))
             - scale * fit.ry)
  # Without an L1 term (l1_ratio = 0): ridge's own dual; at alpha = 0 the normal equations.
  xtr2 = jnp.sum(jnp.square(fit.corr))
  ridge = fit.rr + 0.5 * l2n * w2 - fit.ry + xtr2 / (2 * jnp.where(l2n > 0, l2n, 1))
  return jnp.where(l1n > 0, with_l1, jnp.where(l2n > 0, ridge, xtr2))


def _soft_threshold(z, l1n, positive):
  if positive:
    return jnp.maximum(z - l1n, 0)
  return jnp.sign(z) * jnp.maximum(jnp.abs(z) - l1n, 0)


def _coordinate_epoch(prob: Problem, slots, count, w, aux, free, l1n, l2n, positive):
  """One cyclic pass over the features ``slots[:count]``, each set to the minimizer of
  the objective along it (a soft threshold), ``aux`` kept equal to the residual
  ``y − Xw`` (data form) or to ``Gw − Xᵀy`` (Gram form)."""
  block, norms2 = (prob.xt if prob.gram is None else prob.gram), prob.norms2

  # Each coordinate moves once per epoch, so its old value is read from ``w`` as the
  # epoch found it and its new one written to another vector: XLA copies a vector that
  # one step of a loop both reads and writes.
  def update(k, state):
    new_w, aux = state
    j = slots[k]
    column = block[j]
    # (A one-element slice, not ``aux[j]``: XLA then updates ``aux`` in place.)
    correlation = (column @ aux if prob.gram is None
                   else -jax.lax.dynamic_slice(aux, (j,), (1,))[0])
    new = _soft_threshold(correlation + w[j] * norms2[j], l1n, positive)
    new = jnp.where(free[j], new / jnp.where(free[j], norms2[j] + l2n, 1), 0)
    delta = new - w[j]
    aux = aux - delta * column if prob.gram is None else aux + delta * column
    return new_w.at[j].set(new), aux
  return jax.lax.fori_loop(0, count, update, (w, aux))


def _set_correlations(prob: Problem, slots, count, member, aux):
  """``Xᵀr`` on the working set, 0 elsewhere (so that it leaves the dual point alone):
  in the data form one product per member, not a pass over every feature."""
  if prob.gram is not None:
    return jnp.where(member, -aux, 0)

  def correlate(k, corr):
    j = slots[k]
    return corr.at[j].set(prob.xt[j] @ aux)
  return jax.lax.fori_loop(0, count, correlate, jnp.zeros_like(prob.xty))


def _residual(prob: Problem, slots, count, w):
  """The residual ``y − X w`` (data form) or ``G w − Xᵀy`` (Gram form) of a ``w`` that
  is 0 outside the working set, from the members' rows only."""
  block, start, sign = ((prob.xt, prob.y, -1) if prob.gram is None
                        else (prob.gram, -prob.xty, 1))

  def add(k, aux):
    j = slots[k]
    return aux + (sign * w[j]) * block[j]
  return jax.lax.fori_loop(0, count, add, start)


def _fit(prob: Problem, w, aux, corr) -> _Fit:
  """The fit from the residual of :func:`_residual` and correlations ``corr``."""
  if prob.gram is None:
    return _Fit(w, aux, corr, aux @ aux, aux @ prob.y)
  ry = prob.yy - w @ prob.xty
  return _Fit(w, None, corr, ry + w @ aux, ry)


def _objective(prob: Problem, w, aux, l1n, l2n):
  """The objective times n, from the residual of :func:`_residual`."""
  rr = aux @ aux if prob.gram is None else prob.yy - w @ prob.xty + w @ aux
  return 0.5 * rr + l1n * jnp.sum(jnp.abs(w)) + 0.5 * l2n * (w @ w)


def _moving(old, new, settle):
  """scikit-learn's test before it computes a gap: does the largest coordinate step
  exceed ``settle`` times the largest coefficient? Requiring it too keeps solving
  where the gap is small but the coefficients still move (ill-conditioned designs).
  Steps within a hundred roundings of the largest are rounding noise (float32: 1e-5)."""
  largest = jnp.max(jnp.abs(new))
  settle = jnp.maximum(settle, 100 * jnp.finfo(new.dtype).eps)
  return (largest > 0) & (jnp.max(jnp.abs(new - old)) > settle * largest)


def _solve_set(prob: Problem, w, aux, stale, member, free, l1n, l2n, limit, settle,
               epochs, positive):
  """Coordinate descent on the ``member`` features until the gap of the problem
  restricted to them is at most ``limit`` and their coordinates have settled, or
  ``epochs`` run out.

  The members are visited in feature order, read in place: the loops run over their
  count, which may be traced, so one program serves every size of set.

  ``aux`` is the residual of ``w`` (see :func:`_residual`), unless ``stale``.
  Returns ``(w, aux, epochs)``.
  """
  count = jnp.sum(member)
  slots = jnp.nonzero(member, size=member.shape[0])[0]
  depth = ANDERSON_DEPTH["data" if prob.gram is None else "gram"]
  aux = jax.lax.cond(stale, lambda: _residual(prob, slots, count, w), lambda: aux)

  def restricted_gap(w, aux):
    fit = _fit(prob, w, aux, _set_correlations(prob, slots, count, member, aux))
    return gap(fit, l1n, l2n, positive)

  def epochs_then_extrapolate(state):
    """A few epochs (one in the first pass, whose gap often ends the round at once;
    then ``ANDERSON_DEPTH``), the Anderson extrapolation of their iterates where it
    lowers the objective, and the restricted gap. The data form's gap reads the set's
    columns once more, half an epoch's work, so it is checked once per pass; the Gram
    form's, which is nearly free, after every epoch."""
    w, aux, done, *_ = state
    count_now = jnp.minimum(jnp.where(done == 0, 1, depth), epochs - done)

    def one_epoch(carry):
      i, w, aux, history, *_ = carry
      new_w, aux = _coordinate_epoch(prob, slots, count, w, aux, free, l1n, l2n,
                                     positive)
      inner_gap = (jnp.asarray(jnp.inf, w.dtype) if prob.gram is None
                   else restricted_gap(new_w, aux))
      return (i + 1, new_w, aux, history.at[i + 1].set(new_w),
              _moving(w, new_w, settle), inner_gap)

    def epochs_left(carry):
      i, *_, moving, inner_gap = carry
      return (i < count_now) & ((inner_gap > limit) | moving)

    history = jnp.zeros((depth + 1, w.shape[0]), w.dtype).at[0].set(w)
    start = (0, w, aux, history, True, jnp.asarray(jnp.inf, w.dtype))
    ran, w, aux, history, moving, _ = jax.lax.while_loop(epochs_left, one_epoch, start)

    def extrapolate(w, aux, history):
      # Outside the set every iterate is 0, and so is any affine combination of them.
      extrapolated = _anderson.extrapolate(history)
      extrapolated_aux = _residual(prob, slots, count, extrapolated)
      better = (_objective(prob, extrapolated, extrapolated_aux, l1n, l2n)
                < _objective(prob, w, aux, l1n, l2n))
      if positive:
        better &= jnp.all(extrapolated >= 0)
      return (jnp.where(better, extrapolated, w),
              jnp.where(better, extrapolated_aux, aux))

    # (A residual costs half an epoch: none for a pass cut short.)
    w, aux = jax.lax.cond(ran == depth, extrapolate, lambda w, aux, _: (w, aux),
                          w, aux, history)
    return w, aux, done + ran, moving, restricted_gap(w, aux)

  def unfinished(state):
    w, aux, done, moving, inner_gap = state
    return ((inner_gap > limit) | moving) & (done < epochs)

  start = (w, aux, 0, True, jnp.asarray(jnp.inf, w.dtype))
  w, aux, done, *_ = jax.lax.while_loop(unfinished, epochs_then_extrapolate, start)
  if jnp.finfo(w.dtype).bits < 64:
    # Made afresh (one more pass over the members' columns): updated coordinate by
    # coordinate, the residual drifts by rounding, in float32 enough over thousands of
    # epochs to report a gap the coefficients do not have (in float64, 1e-9 times less).
    aux = _residual(prob, slots, count, w)
  return w, aux, done


def _least(priority, wanted, steps: int = 32):
  """The features of least ``priority`` (all those at −∞, none at +∞), about ``wanted``
  of them (ties are kept together), by bisection on a threshold: a sort of the
  features would cost more than the rest of a round."""
  finite = jnp.isfinite(priority)
  forced = priority == -jnp.inf
  need = wanted - jnp.sum(forced)
  # ``high`` keeps at least ``need`` finite priorities at or below it; ``low`` starts
  # under the least of them.
  low = jnp.min(jnp.where(finite, priority, jnp.inf)) - 1
  high = jnp.max(jnp.where(finite, priority, -jnp.inf))

  def halve(_, bounds):
    low, high = bounds
    middle = (low + high) / 2
    enough = jnp.sum(finite & (priority <= middle)) >= need
    return jnp.where(enough, low, middle), jnp.where(enough, middle, high)

  _, high = jax.lax.fori_loop(0, steps, halve, (low, high))
  return forced | (finite & (priority <= high) & (need > 0))


def solve(prob: Problem, fit: _Fit, alpha, l1_ratio, limit, settle, max_epochs,
          first_set, positive: bool):
  """The point of the path at ``alpha``, from the warm start ``fit`` (the last point's:
  a fit does not depend on alpha, so it is not measured again).

  Returns ``(fit, gap, epochs)``: the solution's fit, its duality gap and the
  coordinate-descent epochs run.
  """
  l1n, l2n = _penalties(alpha, l1_ratio, prob.n)
  usable = prob.norms2 > 0  # a column of zeros stays 0

  def unfinished(state):
    fit, least_size, epochs, current = state
    target = jnp.where(epochs == 0, _ACCEPT * limit, limit)
    return (current > target) & (epochs < max_epochs)

  def round_(state):
    fit, least_size, epochs, current = state
    c, scale = _dual_scale(fit.corr, fit.w, l1n, l2n, positive)
    u = c * scale / jnp.where(l1n > 0, l1n, 1)  # x̃_jᵀθ, at most 1 in size
    u = u if positive else jnp.abs(u)
    norm = jnp.sqrt(prob.norms2 + l2n)
    radius = jnp.sqrt(2 * jnp.maximum(current, 0)) / jnp.where(l1n > 0, l1n, 1)
    screened = (l1n > 0) & (u + radius * norm < 1)
    free = usable & ~screened
    w = jnp.where(free, fit.w, 0)
    nonzero = w != 0
    distance = (1 - u) / jnp.where(usable, norm, 1)
    priority = jnp.where(nonzero, -jnp.inf, jnp.where(free, distance, jnp.inf))
    wanted = jnp.maximum(2 * jnp.sum(nonzero), least_size)
    wanted = jnp.where(l1n > 0, wanted, len(usable))  # ridge: every feature is non-zero
    member = _least(priority, jnp.minimum(wanted, len(usable)))
    # The fit's residual holds unless screening zeroed a coefficient.
    aux = fit.r if prob.gram is None else -fit.corr
    new_w, aux, done = _solve_set(prob, w, aux, jnp.any(w != fit.w), member, free, l1n,
                                  l2n, _INNER_FRACTION * current, settle,
                                  max_epochs - epochs, positive)
    # The Gram form's residual is −Xᵀr for every feature already; the data form's
    # correlations need one pass over X.
    new_fit = (_measure(prob, new_w, aux) if prob.gram is None
               else _fit(prob, new_w, aux, -aux))
    return (new_fit, 2 * wanted, epochs + jnp.maximum(done, 1),
            gap(new_fit, l1n, l2n, positive))

  start = (fit, jnp.asarray(first_set), 0, gap(fit, l1n, l2n, positive))
  fit, _, epochs, final = jax.lax.while_loop(unfinished, round_, start)
  return fit, final, epochs


def solve_path(prob: Problem, alphas, l1_ratio, limit, settle, max_epochs, first_set,
               positive: bool):
  """Every point of the path at ``alphas`` (descending), each warm-started from the
  one before. Returns ``(coefs, gaps, epochs)``, one row per alpha."""
  def point(fit, alpha):
    fit, gap, epochs = solve(prob, fit, alpha, l1_ratio, limit, settle, max_epochs,
                             first_set, positive)
    return fit, (fit.w, gap, epochs)

  zero = jnp.zeros_like(prob.xty)
  start = _measure(prob, zero, None if prob.gram is not None else prob.y)
  _, (coefs, gaps, epochs) = jax.lax.scan(point, start, alphas)
  return coefs, gaps, epochs
