r"""Constraints: Keras's weight constraints as regularizer objects whose prox projects.

A constraint ``C`` is the indicator of a set :math:`S` (0 on :math:`S`, :math:`+\infty`
off it), and the proximal map of an indicator is the Euclidean projection onto the set,
whatever the step. So a constraint is one more :class:`jaxreg.Regularizer`:
``C.prox(params, step)`` projects every selected leaf, and every proximal transform
(``jaxreg.transforms.proximal``, ``prox_sgd`` with FISTA, ``prox_adam``) enforces it
after each step, as Keras applies ``kernel_constraint`` after each optimizer update.

==================================  ==========================================
constraint                          projection of each group :math:`x_g`
==================================  ==========================================
``MaxNorm(c, axis)``                :math:`x_g\min(n_g, c)/(\epsilon + n_g)`
``MinMaxNorm(a, b, rate, axis)``    :math:`x_g(r\,\mathrm{clip}(n_g, a, b) + (1-r)n_g)/(\epsilon + n_g)`
``UnitNorm(axis)``                  :math:`x_g/(\epsilon + n_g)`
``NonNeg()``                        :math:`\max(x, 0)`, entrywise
==================================  ==========================================

with :math:`n_g = \lVert x_g\rVert_2` reduced over ``axis``, Keras's convention: for a
Dense kernel ``(in, out)``, ``axis=0`` constrains each output unit's incoming weights;
for a conv kernel ``(h, w, in, out)``, ``axis=(0, 1, 2)`` each filter. The formulas are
Keras's, its :math:`\epsilon = 10^{-7}` included, so the results agree with
``keras.constraints`` to rounding; ``epsilon=0`` gives the exact projection (Keras's
:math:`\epsilon` scales a feasible group by :math:`n/(n+\epsilon)`). ``MinMaxNorm`` with
``rate < 1`` only moves towards the set and is not a projection.

**Value.** ``C(params)`` is 0 everywhere, not :math:`+\infty` off the set: a constraint
is enforced by its prox, and a loss that adds penalties (``loss + reg(params)``) must
stay finite while the weights are outside the set, before the first projection. For
the same reason a constraint has no gradient: ``jaxreg.transforms.add_gradient``
refuses one.

**Scaling.** A multiple of an indicator by :math:`c > 0` is the same indicator, so
``c * C`` is ``C`` itself; ``0 * C`` is the zero penalty, whose prox is the identity
(:math:`0\cdot\infty = 0`: it no longer constrains), and a traced ``c`` gives a
:class:`jaxreg.regularizers.Scaled` that projects where ``c > 0``.

**Sums.** ``L1(λ) + NonNeg()`` has the closed-form prox :math:`\max(w - tλ, 0)`, and
``L2``, ``ElasticNet`` plus ``NonNeg`` likewise (the elastic-net prox clamped at 0:
:func:`jaxreg.prox.nonneg_soft_threshold`, :func:`jaxreg.prox.nonneg_ridge`). Any
other overlap on one leaf raises ``NotImplementedError``, as sums do.

``where=`` is as for every regularizer; the default (every floating leaf) includes
biases, which Keras's ``kernel_constraint`` leaves alone: pass
``where=jaxreg.select.kernels()`` for Keras's behaviour.

>>> import jax.numpy as jnp
>>> params = {"kernel": jnp.array([[3.0, 0.3], [4.0, -0.4]])}
>>> MaxNorm(1.0, epsilon=0.0).prox(params, 0.1)["kernel"]
Array([[ 0.6,  0.3],
       [ 0.8, -0.4]], dtype=float32)
>>> float(MaxNorm(1.0)(params))
0.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import prox as _prox
from jaxreg import select
from jaxreg._regularizer import Regularizer

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"]


class Constraint(Regularizer):
  """Base class: a regularizer whose value is 0 and whose prox is a projection.

  Subclasses define ``_project(w)``; the step of the prox is not used.
  """
  # Read by jaxreg.transforms.add_gradient, which refuses a penalty with no gradient.
  is_constraint = True

  def _leaf_value(self, w):
    self._check_leaf(w)
    return jnp.zeros((), _dtypes.wide(w.dtype))  # as penalties sum

  def _leaf_prox(self, w, step):
    self._check_leaf(w)
    return self._project(w)

  def _check_leaf(self, w):
    del w

  def _scaled(self, c):
    # An indicator times c > 0 is the same indicator; 0 or a traced c is wrapped.
    if not isinstance(c, jax.core.Tracer) and c > 0:
      return self
    return super()._scaled(c)


class _NormConstraint(Constraint):
  """A constraint on the norm of each group of a leaf, reduced over ``axis``."""
  separable = False  # A norm ball in a per-coordinate metric is no rescaling.

  def _init_axis(self, axis, epsilon):
    axes = _checks.check_axes(axis)  # Keras takes lists too: kept as a tuple.
    self.axis = axes if isinstance(axis, (tuple, list)) else axes[0]
    self.epsilon = float(_checks.check_nonnegative(epsilon, "epsilon"))

  def _check_leaf(self, w):
    _checks.check_axes_fit(_checks.check_axes(self.axis), w.shape, type(self).__name__)

  def _leaf_prox(self, w, step):
    if jnp.ndim(step) != 0:
      # With one step per coordinate the prox is a projection in a weighted norm,
      # which is not the rescaling below.
      raise ValueError(
          f"{type(self).__name__}.prox needs a scalar step per leaf, got shape "
          f"{jnp.shape(step)}; use prox_sgd or proximal after the optimizer")
    return super()._leaf_prox(w, step)


@jax.tree_util.register_pytree_node_class
class MaxNorm(_NormConstraint):
  r"""Max-norm: each group's norm at most ``max_value`` (Keras ``MaxNorm``).

  Srivastava et al. (2014, §5.1) pair it with dropout. ``max_value`` must be ``>= 0``.

  >>> import jax.numpy as jnp
  >>> MaxNorm(2.5, epsilon=0.0).prox({"w": jnp.array([[3.0], [4.0]])}, 1.0)["w"]
  Array([[1.5],
         [2. ]], dtype=float32)
  """
  _strengths = ("max_value",)
  _static = ("axis", "epsilon", "where")

  def __init__(self, max_value=2.0, *, axis=0, epsilon: float = _prox.KERAS_EPSILON,
               where=None):
    self.max_value = _checks.check_nonnegative(max_value, "max_value")
    self._init_axis(axis, epsilon)
    self.where = select.as_selector(where)

  def _project(self, w):
    return _prox.max_norm(w, self.max_value, self.axis, self.epsilon)


@jax.tree_util.register_pytree_node_class
class MinMaxNorm(_NormConstraint):
  r"""Each group's norm moved into ``[min_value, max_value]`` at ``rate`` (Keras ``MinMaxNorm``).

  ``rate=1`` enforces the bounds at every step; ``rate < 1`` moves the norm the
  fraction ``rate`` of the way, which is not a projection (see
  :func:`jaxreg.prox.min_max_norm`).

  >>> import jax.numpy as jnp
  >>> MinMaxNorm(1.0, 2.0, epsilon=0.0).prox({"w": jnp.array([[0.3], [0.4]])}, 1.0)["w"]
  Array([[0.6],
         [0.8]], dtype=float32)
  """
  _strengths = ("min_value", "max_value", "rate")
  _static = ("axis", "epsilon", "where")

  def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, *, axis=0,
               epsilon: float = _prox.KERAS_EPSILON, where=None):
    self.min_value = _checks.check_nonnegative(min_value, "min_value")
    self.max_value = _checks.check_nonnegative(max_value, "max_value")
    concrete = not any(isinstance(v, jax.core.Tracer) for v in (min_value, max_value))
    if concrete and float(min_value) > float(max_value):
      raise ValueError(
          f"min_value must be <= max_value, got min_value={min_value}, max_value={max_value}")
    self.rate = _checks.check_rate(rate, "rate")
    self._init_axis(axis, epsilon)
    self.where = select.as_selector(where)

  def _project(self, w):
    return _prox.min_max_norm(w, self.min_value, self.max_value, self.rate, self.axis,
                              self.epsilon)


@jax.tree_util.register_pytree_node_class
class UnitNorm(_NormConstraint):
  r"""Each group's norm equal to 1 (Keras ``UnitNorm``); a zero group stays 0.

  >>> import jax.numpy as jnp
  >>> UnitNorm(epsilon=0.0).prox({"w": jnp.array([[3.0], [4.0]])}, 1.0)["w"]
  Array([[0.6],
         [0.8]], dtype=float32)
  """
  _static = ("axis", "epsilon", "where")

  def __init__(self, *, axis=0, epsilon: float = _prox.KERAS_EPSILON, where=None):
    self._init_axis(axis, epsilon)
    self.where = select.as_selector(where)

  def _project(self, w):
    return _prox.unit_norm(w, self.axis, self.epsilon)


@jax.tree_util.register_pytree_node_class
class NonNeg(Constraint):
  r"""Non-negative weights (Keras ``NonNeg``): the projection :math:`\max(w, 0)`.

  It acts entrywise, so its prox takes per-coordinate steps too (``prox_adam``), and
  in a sum with ``L1``, ``L2`` or ``ElasticNet`` the prox is theirs clamped at 0.

  >>> import jax.numpy as jnp, jaxreg as jr
  >>> (NonNeg() + jr.L1(0.5)).prox({"w": jnp.array([-1.0, 0.2, 2.0])}, 1.0)["w"]
  Array([0. , 0. , 1.5], dtype=float32)
  """
  # Read by jaxreg.regularizers.Sum, which cannot import this module.
  projects_nonnegative = True

  def __init__(self, *, where=None):
    self.where = select.as_selector(where)

  def _project(self, w):
    return _prox.non_negative(w)
