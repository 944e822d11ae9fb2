r"""Proximal operators on arrays.

The proximal map of a penalty :math:`R` with step :math:`t \ge 0` is

.. math::
  \operatorname{prox}_{tR}(v) = \arg\min_z\; t\,R(z) + \tfrac12 \lVert z - v \rVert_2^2 .

A proximal gradient step ``w <- prox_{lr·R}(w - lr·∇L0(w))`` minimizes ``L0 + R``
without differentiating ``R``; for the L1 penalty the prox is soft-thresholding, which
sets small coordinates to exactly 0 (a plain gradient step with ``λ·sign(w)`` only
oscillates around 0). The penalties follow jaxreg's convention: ``λΣ|w|`` and
``λΣw²`` (no ½). ``t`` may be a scalar or an array that broadcasts against ``x`` (one
threshold per coordinate, as preconditioned methods need).

Thresholds, steps and bounds must be finite and ``>= 0``: a known negative, infinite or
NaN one raises ``ValueError`` naming it (a negative threshold is no prox: it would
grow ``x``), and a traced one that is negative or NaN acts as 0. An integer ``x`` is
computed in the default float dtype, as ``jnp.sqrt`` would. A bfloat16 or float16 ``x``
is computed in float32, thresholds included, and rounded once to its dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import _safe

__all__ = [
    "soft_threshold",
    "hard_threshold",
    "ridge",
    "elastic_net",
    "group_norm",
    "group_soft_threshold",
    "nonneg_soft_threshold",
    "nonneg_ridge",
    "KERAS_EPSILON",
    "non_negative",
    "max_norm",
    "min_max_norm",
    "unit_norm",
]


def _floating(x) -> jax.Array:
  """``x`` as an array of a floating dtype (integers promoted as jnp does)."""
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def _threshold(t, name: str, dtype) -> jax.Array:
  """A checked threshold (:func:`jaxreg._checks.check_nonnegative`) in ``dtype``."""
  return jnp.asarray(_checks.check_nonnegative(t, name), dtype)


def _soft(w, t):
  # The same map as sign(w)·max(|w| - t, 0), but a zeroed entry is +0.0 (the product
  # gives -0.0 for negative w) and a NaN stays NaN.
  return w - jnp.clip(w, -t, t)


def _ridge(w, t):
  return w / (1 + 2 * t)


def soft_threshold(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_1`: :math:`\operatorname{sign}(x)\max(|x| - t, 0)`.

  Entries with :math:`|x| \le t` become exactly 0.

  >>> import jax.numpy as jnp
  >>> soft_threshold(jnp.array([-2.0, 0.5, 3.0]), 1.0)
  Array([-1.,  0.,  2.], dtype=float32)
  """
  x = _floating(x)
  w = _dtypes.widen(x)
  return _soft(w, _threshold(t, "t", w.dtype)).astype(x.dtype)


def hard_threshold(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_0` (the count of non-zeros).

  :math:`z_i = x_i` where :math:`|x_i| > \sqrt{2t}`, else 0: keeping :math:`x_i` costs
  :math:`t`, zeroing it costs :math:`x_i^2/2`. At :math:`|x_i| = \sqrt{2t}` both are
  minimizers and 0 is returned.

  >>> import jax.numpy as jnp
  >>> hard_threshold(jnp.array([-2.0, 0.5, 3.0]), 0.5)
  Array([-2.,  0.,  3.], dtype=float32)
  """
  x = _floating(x)
  w = _dtypes.widen(x)
  t = _threshold(t, "t", w.dtype)
  return jnp.where(jnp.abs(w) > jnp.sqrt(2 * t), x, jnp.zeros((), x.dtype))


def ridge(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_2^2`: :math:`x / (1 + 2t)`.

  >>> import jax.numpy as jnp
  >>> ridge(jnp.array([3.0]), 1.0)
  Array([1.], dtype=float32)
  """
  x = _floating(x)
  w = _dtypes.widen(x)
  return _ridge(w, _threshold(t, "t", w.dtype)).astype(x.dtype)


def elastic_net(x, t1, t2) -> jax.Array:
  r"""Prox of :math:`t_1\lVert z\rVert_1 + t_2\lVert z\rVert_2^2`.

  :math:`\operatorname{soft\_threshold}(x, t_1) / (1 + 2t_2)`: the two maps compose
  because both act coordinate-wise and the second is a positive scaling.

  >>> import jax.numpy as jnp
  >>> elastic_net(jnp.array([-2.0, 0.5, 4.0]), 1.0, 0.5)
  Array([-0.5,  0. ,  1.5], dtype=float32)
  """
  x = _floating(x)
  w = _dtypes.widen(x)
  t1, t2 = _threshold(t1, "t1", w.dtype), _threshold(t2, "t2", w.dtype)
  return _ridge(_soft(w, t1), t2).astype(x.dtype)


def group_norm(x, axis, keepdims: bool = False) -> jax.Array:
  r""":math:`\lVert x_g \rVert_2` over ``axis``, like ``jnp.linalg.norm(x, axis=axis)``.

  Its gradient at a zero group is 0 (a subgradient) instead of NaN. A 16-bit ``x``
  is summed in float32 and the norms rounded once.

  >>> import jax.numpy as jnp
  >>> group_norm(jnp.array([[3.0, 0.0], [4.0, 0.0]]), axis=0)
  Array([5., 0.], dtype=float32)
  """
  x = _floating(x)
  squares = jnp.sum(jnp.square(_dtypes.widen(x)), axis=axis, keepdims=keepdims)
  return _safe.safe_sqrt(squares).astype(x.dtype)


def group_soft_threshold(x, t, axis) -> jax.Array:
  r"""Prox of :math:`t\sum_g \lVert z_g\rVert_2`, groups reduced over ``axis``.

  :math:`z_g = \max(1 - t/\lVert x_g\rVert_2,\ 0)\,x_g`: a group whose norm is at most
  :math:`t` becomes exactly 0 as a whole, the others shrink towards 0 by :math:`t`
  in norm. ``axis`` means what it means in ``jnp.linalg.norm(x, axis=axis)``: for a
  Dense kernel of shape ``(in, out)``, ``axis=0`` makes one group per output unit.

  >>> import jax.numpy as jnp
  >>> group_soft_threshold(jnp.array([[3.0, 0.1], [4.0, 0.1]]), 1.0, axis=0)
  Array([[2.4, 0. ],
         [3.2, 0. ]], dtype=float32)
  """
  x = _floating(x)
  w = _dtypes.widen(x)
  t = _threshold(t, "t", w.dtype)
  norms = group_norm(w, axis, keepdims=True)
  positive = norms > 0
  # t / n, not t·(1/n): the product rounds differently.
  shrink = jnp.maximum(1 - _safe.safe_divide(t, norms), 0)
  return (jnp.where(positive, shrink, 0) * w).astype(x.dtype)


# Non-negative proxes: the penalty plus the indicator of z >= 0. For a penalty that is
# even and convex in each coordinate, clamping its prox at 0 gives the prox of the sum.


def nonneg_soft_threshold(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_1` on :math:`z \ge 0`: :math:`\max(x - t, 0)`.

  The same map as ``jaxopt.prox.prox_non_negative_lasso(x, t)``.

  >>> import jax.numpy as jnp
  >>> nonneg_soft_threshold(jnp.array([-2.0, 0.5, 3.0]), 1.0)
  Array([0., 0., 2.], dtype=float32)
  """
  x = _floating(x)
  w = _dtypes.widen(x)
  return jnp.maximum(_soft(w, _threshold(t, "t", w.dtype)), 0).astype(x.dtype)


def nonneg_ridge(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_2^2` on :math:`z \ge 0`: :math:`\max(x, 0)/(1 + 2t)`.

  jaxopt's ``prox_non_negative_ridge(x, l2reg)`` computes
  :math:`\max(x, 0)/(1 + \text{l2reg})`, the prox of
  :math:`\tfrac{\text{l2reg}}{2}\lVert z\rVert_2^2` (its docstring omits the ½), so
  ``nonneg_ridge(x, t)`` is ``prox_non_negative_ridge(x, 2t)``.

  >>> import jax.numpy as jnp
  >>> nonneg_ridge(jnp.array([-2.0, 3.0]), 1.0)
  Array([0., 1.], dtype=float32)
  """
  x = _floating(x)
  w = _dtypes.widen(x)
  return _ridge(jnp.maximum(w, 0), _threshold(t, "t", w.dtype)).astype(x.dtype)


# Projections: the prox of the indicator of a set (0 on it, +inf off it), whatever the
# step. The norm projections follow Keras's constraints formula for formula, epsilon
# included (``keras.backend.epsilon()`` is 1e-7), so that they agree with Keras to
# rounding; ``epsilon=0`` gives the exact Euclidean projection.

KERAS_EPSILON = 1e-7
"""``keras.backend.epsilon()``: what Keras adds to a norm before dividing by it."""


def non_negative(x) -> jax.Array:
  r"""Projection onto :math:`\{z \ge 0\}`: :math:`\max(x, 0)` (Keras's ``NonNeg``).

  >>> import jax.numpy as jnp
  >>> non_negative(jnp.array([-1.0, 2.0]))
  Array([0., 2.], dtype=float32)
  """
  x = _floating(x)
  return jnp.maximum(x, jnp.zeros((), x.dtype))


def _rescale(x, axis, target_norm, epsilon, ratio_at_zero=0.0):
  """``x·target(n)/(epsilon + n)`` with ``n`` the norm over ``axis``, Keras's formula,
  computed in at least float32 and returned in ``x``'s dtype.

  At a zero group with ``epsilon = 0`` the factor is ``ratio_at_zero``, the limit of
  ``target(n)/n`` as ``n -> 0``: ``x`` is 0 there, so the value is 0 either way, but
  the factor is the derivative there (1 for a ball that contains 0, whose projection
  is the identity around it)."""
  x = _floating(x)
  epsilon = _checks.check_nonnegative(epsilon, "epsilon")
  wide = _dtypes.widen(x)
  norms = group_norm(wide, axis, keepdims=True)
  denominator = epsilon + norms
  # Keras's target / (epsilon + n), bit for bit: not target·(1/(epsilon + n)).
  factor = _safe.safe_divide(target_norm(norms), denominator, ratio_at_zero)
  return (wide * factor).astype(x.dtype)


def max_norm(x, max_value, axis=0, epsilon: float = KERAS_EPSILON) -> jax.Array:
  r"""Projection onto :math:`\{z: \lVert z_g\rVert_2 \le c\}` for every group ``g``.

  :math:`z_g = x_g\,\min(\lVert x_g\rVert, c)/(\epsilon + \lVert x_g\rVert)`, Keras's
  ``MaxNorm`` formula; groups are reduced over ``axis`` as in :func:`group_norm` (for
  a Dense kernel ``(in, out)``, ``axis=0`` bounds each unit's incoming weights). With
  ``epsilon=0`` it is the exact projection; Keras's ``epsilon`` shrinks a feasible
  group by the factor :math:`n/(n + \epsilon)`, a relative :math:`10^{-7}/n`.

  >>> import jax.numpy as jnp
  >>> max_norm(jnp.array([[3.0, 0.3], [4.0, 0.4]]), 1.0, epsilon=0.0)
  Array([[0.6, 0.3],
         [0.8, 0.4]], dtype=float32)
  """
  max_value = _checks.check_nonnegative(max_value, "max_value")
  # Around a zero group the projection is the identity when the ball has a radius.
  return _rescale(x, axis, lambda n: jnp.minimum(n, max_value), epsilon,
                  ratio_at_zero=jnp.where(jnp.asarray(max_value) > 0, 1.0, 0.0))


def min_max_norm(x, min_value, max_value, rate=1.0, axis=0,
                 epsilon: float = KERAS_EPSILON) -> jax.Array:
  r"""Keras's ``MinMaxNorm``: moves each group's norm towards :math:`[a, b]`.

  :math:`z_g = x_g\,\big(r\,\mathrm{clip}(n_g, a, b) + (1 - r)\,n_g\big)/(\epsilon +
  n_g)`, :math:`n_g = \lVert x_g\rVert_2`. With ``rate=1`` and ``epsilon=0`` it is
  the projection onto :math:`\{a \le \lVert z_g\rVert \le b\}` (a shell, not convex
  for :math:`a > 0`: the nearest point is still this rescaling, except at
  :math:`x_g = 0`, which stays 0). With ``rate < 1`` it is no projection: a group
  moves a fraction ``rate`` of the way, so the constraint holds only in the limit of
  repeated steps.

  >>> import jax.numpy as jnp
  >>> min_max_norm(jnp.array([[0.3], [0.4]]), 1.0, 2.0, epsilon=0.0)
  Array([[0.6],
         [0.8]], dtype=float32)
  """
  min_value = _checks.check_nonnegative(min_value, "min_value")
  max_value = _checks.check_nonnegative(max_value, "max_value")
  if not any(isinstance(v, jax.core.Tracer) for v in (min_value, max_value)):
    if float(min_value) > float(max_value):
      raise ValueError(f"min_value must be <= max_value, got min_value={min_value}, "
                       f"max_value={max_value}")
  rate = _checks.check_rate(rate, "rate")

  def target(n):
    return rate * jnp.clip(n, min_value, max_value) + (1 - rate) * n

  # target(n)/n near 0: r·clip(n, a, b)/n + (1 - r), where clip(n, a, b)/n -> 1 for
  # a = 0 < b, 0 for a = b = 0; for a > 0 it grows without bound and x = 0 stays 0.
  clip_ratio = jnp.where(jnp.asarray(max_value) > 0, 1.0, 0.0)
  ratio = jnp.where(jnp.asarray(min_value) > 0, 0.0, rate * clip_ratio + (1 - rate))
  return _rescale(x, axis, target, epsilon, ratio_at_zero=ratio)


def unit_norm(x, axis=0, epsilon: float = KERAS_EPSILON) -> jax.Array:
  r"""Projection onto the unit sphere :math:`\{z: \lVert z_g\rVert_2 = 1\}`: Keras's
  ``UnitNorm``, :math:`z_g = x_g/(\epsilon + \lVert x_g\rVert_2)`.

  A zero group stays 0 (every unit vector is nearest to it; Keras keeps 0 too).

  >>> import jax.numpy as jnp
  >>> unit_norm(jnp.array([[3.0, 0.0], [4.0, 0.0]]), epsilon=0.0)
  Array([[0.6, 0. ],
         [0.8, 0. ]], dtype=float32)
  """
  return _rescale(x, axis, lambda n: jnp.ones_like(n), epsilon)
