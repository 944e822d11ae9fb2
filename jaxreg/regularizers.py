r"""The L1/L2 family of penalties: L1, L2, ElasticNet, GroupLasso and Keras's aliases.

Each is a :class:`Regularizer` (defined, with :class:`Sum` and :class:`Scaled`, in
``jaxreg/_regularizer.py`` and exported here): ``R(params)`` is the penalty summed over
the selected leaves, ``R.prox(params, step)`` the exact proximal map of ``step·R``
(leaf by leaf, see :mod:`jaxreg.prox`); ``r1 + r2`` sums and ``c * R`` scales them.

Conventions (those of Keras and of the penalties ``L = L0 + λΣ|w|``, ``L = L0 + λΣw²``):

====================  ==========================  ==========================
regularizer           value                       gradient
====================  ==========================  ==========================
``L1(λ)``             :math:`λ\sum|w|`            :math:`λ\,\mathrm{sign}(w)` (0 at 0)
``L2(λ)``             :math:`λ\sum w^2`           :math:`2λw`
``ElasticNet(a, b)``  :math:`a\sum|w| + b\sum w^2`  :math:`a\,\mathrm{sign}(w) + 2bw`
``GroupLasso(λ)``     :math:`λ\sum_g\lVert w_g\rVert_2`  :math:`λ\,w_g/\lVert w_g\rVert_2`
====================  ==========================  ==========================

``L2(λ)`` is **not** ``λ/2·Σw²``: its gradient ``2λw`` equals Optax's
``add_decayed_weights(weight_decay=2λ)``. Under SGD the two are the same update; under
Adam, decayed weights added *after* the preconditioner (AdamW) are a different method.

A strength known at trace time must be finite and ``>= 0`` (else ``ValueError``); a
traced strength that is negative or NaN acts as 0.

>>> import jax.numpy as jnp
>>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([3.0])}
>>> float(L1(0.5)(params)), float(L2(0.5, where=lambda path, w: w.size > 1)(params))
(3.0, 2.5)
>>> L1(1.5).prox(params, 1.0)["w"]
Array([ 0. , -0.5], dtype=float32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import prox as _prox
from jaxreg import select
from jaxreg._regularizer import Regularizer
from jaxreg._regularizer import Scaled
from jaxreg._regularizer import Sum

__all__ = [
    "ElasticNet", "GroupLasso", "L1", "L2", "Regularizer", "Scaled", "Sum", "l1",
    "l1_l2", "l2",
]


@jax.custom_jvp
def _abs(x):
  """``|x|`` whose derivative is ``sign(x)``: 0 at 0, the subgradient of least norm."""
  return jnp.abs(x)


@_abs.defjvp
def _abs_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return jnp.abs(x), jnp.sign(x) * t


def _square(w):
  # Squared after the cast: a bf16 square is rounded to 8 bits, while the square of a
  # bf16 value is exact in float32.
  return jnp.square(_dtypes.widen(w))


class _OneStrength(Regularizer):
  r"""A penalty :math:`λ\sum_i f(w_i)` of one strength: ``c·R`` scales ``λ``."""
  _strengths = ("strength",)
  _homogeneous = True

  def __init__(self, strength, *, where=None):
    self.strength = _checks.check_strength(strength, "strength")
    self.where = select.as_selector(where)


@jax.tree_util.register_pytree_node_class
class L1(_OneStrength):
  r"""Lasso penalty :math:`λ\sum_i |w_i|`; its prox is soft-thresholding.

  >>> import jax.numpy as jnp
  >>> float(L1(0.25)({"w": jnp.array([1.0, -3.0])}))
  1.0
  """
  def _leaf_value(self, w):
    return self.strength * jnp.sum(_abs(w), dtype=_dtypes.wide(w.dtype))

  def _leaf_prox(self, w, step):
    return _prox.soft_threshold(w, step * self.strength)

  def elastic_coefficients(self):
    return self.strength, 0.0


@jax.tree_util.register_pytree_node_class
class L2(_OneStrength):
  r"""Ridge penalty :math:`λ\sum_i w_i^2` (no ½: gradient :math:`2λw`); prox ``w/(1+2·step·λ)``.

  >>> import jax.numpy as jnp
  >>> float(L2(0.5)({"w": jnp.array([1.0, -3.0])}))
  5.0
  """
  def _leaf_value(self, w):
    return self.strength * jnp.sum(_square(w))

  def _leaf_prox(self, w, step):
    return _prox.ridge(w, step * self.strength)

  def elastic_coefficients(self):
    return 0.0, self.strength


@jax.tree_util.register_pytree_node_class
class ElasticNet(Regularizer):
  r"""Elastic net :math:`a\sum_i|w_i| + b\sum_i w_i^2` with ``a = l1``, ``b = l2``.

  scikit-learn's ``ElasticNet(alpha, l1_ratio)`` minimizes
  :math:`\frac{1}{2n}\lVert y - Xw\rVert^2 + \alpha\rho\lVert w\rVert_1
  + \frac{\alpha(1-\rho)}{2}\lVert w\rVert_2^2`, i.e. ``ElasticNet(l1=alpha*l1_ratio,
  l2=alpha*(1-l1_ratio)/2)`` added to the mean squared error halved.

  >>> import jax.numpy as jnp
  >>> float(ElasticNet(0.5, 0.25)({"w": jnp.array([2.0])}))
  2.0
  """
  _strengths = ("l1", "l2")
  _homogeneous = True

  def __init__(self, l1, l2, *, where=None):
    self.l1 = _checks.check_strength(l1, "l1")
    self.l2 = _checks.check_strength(l2, "l2")
    self.where = select.as_selector(where)

  def _leaf_value(self, w):
    return (self.l1 * jnp.sum(_abs(w), dtype=_dtypes.wide(w.dtype))
            + self.l2 * jnp.sum(_square(w)))

  def _leaf_prox(self, w, step):
    return _prox.elastic_net(w, step * self.l1, step * self.l2)

  def elastic_coefficients(self):
    return self.l1, self.l2


@jax.tree_util.register_pytree_node_class
class GroupLasso(Regularizer):
  r"""Group lasso :math:`λ\sum_g \lVert w_g\rVert_2` (Yuan & Lin, 2006).

  ``axis`` (an int, or a tuple or list of ints) is what each group's norm reduces
  over, as in ``jnp.linalg.norm(w, axis=axis)``: for a Dense kernel of shape
  ``(in, out)``, ``axis=0`` gives one group per output unit, and the prox zeroes whole
  neurons.
  Its prox needs one step per leaf (a scalar): with a different step per coordinate
  the problem no longer separates by group and has no closed form.

  >>> import jax.numpy as jnp
  >>> float(GroupLasso(1.0, axis=0)({"w": jnp.array([[3.0, 0.0], [4.0, 1.0]])}))
  6.0
  """
  _strengths = ("strength",)
  _static = ("axis", "where")
  _homogeneous = True
  separable = False  # One norm per group: a step per coordinate has no closed form.

  def __init__(self, strength, *, axis, where=None):
    self.strength = _checks.check_strength(strength, "strength")
    axes = _checks.check_axes(axis)
    self.axis = axes if isinstance(axis, (tuple, list)) else axes[0]
    self.where = select.as_selector(where)

  def _check_axis(self, w):
    _checks.check_axes_fit(_checks.check_axes(self.axis), w.shape, "GroupLasso")

  def _leaf_value(self, w):
    self._check_axis(w)
    norms = _prox.group_norm(_dtypes.widen(w), self.axis)
    return self.strength * jnp.sum(norms)

  def _leaf_prox(self, w, step):
    self._check_axis(w)
    if jnp.ndim(step) != 0:
      raise ValueError(
          f"GroupLasso.prox needs a scalar step per leaf, got shape {jnp.shape(step)}")
    return _prox.group_soft_threshold(w, step * self.strength, self.axis)


def l1(l1: float = 0.01, *, where=None) -> L1:
  """Keras-style alias: ``l1(0.01)`` is ``L1(0.01)``."""
  return L1(l1, where=where)


def l2(l2: float = 0.01, *, where=None) -> L2:
  """Keras-style alias: ``l2(0.01)`` is ``L2(0.01)``, the penalty ``0.01·Σw²``."""
  return L2(l2, where=where)


def l1_l2(l1: float = 0.0, l2: float = 0.0, *, where=None) -> ElasticNet:
  """Keras-style alias: ``l1_l2(l1=a, l2=b)`` is ``ElasticNet(a, b)``.

  The defaults are Keras 3's, ``(0.0, 0.0)``; tf.keras 2 defaulted to ``(0.01, 0.01)``.
  """
  return ElasticNet(l1, l2, where=where)

