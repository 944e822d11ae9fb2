r"""Orthogonality penalty on weight matrices (Keras's ``OrthogonalRegularizer``).

For a matrix :math:`W` with rows :math:`w_1, \dots, w_m` (``mode="rows"``; columns
with ``mode="columns"``) normalized to :math:`\hat w_i = w_i/\max(\lVert w_i\rVert,
\epsilon)`,

.. math::
  R(W) = \text{factor}\cdot\frac{1}{\binom{m}{2}}\sum_{i<j}\lvert\langle\hat w_i,
  \hat w_j\rangle\rvert,

the mean absolute cosine between distinct rows: Keras 3's value exactly, its
:math:`\epsilon = 10^{-7}` included (``0.5·factor·Σ_{i≠j}|⟨ŵ_i, ŵ_j⟩|`` divided by the
number of pairs). It is 0 when the rows are orthogonal, ``factor`` when they are all
parallel. A matrix with one row has no pairs and a value of 0 (Keras divides by 0).

It couples rows, so it has no closed-form proximal map: use it through
``jaxreg.transforms.add_gradient`` (its ``prox`` raises ``NotImplementedError``).
Every selected leaf must be a matrix (``ValueError`` otherwise): select with
``where=``, e.g. ``jaxreg.select.kernels()`` on a model of Dense layers.

>>> import jax.numpy as jnp
>>> round(float(Orthogonal(1.0)({"w": jnp.array([[1.0, 0.0], [1.0, 1.0]])})), 4)
0.7071
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import _sharding
from jaxreg import prox as _prox
from jaxreg import select
from jaxreg._regularizer import Regularizer

__all__ = ["Orthogonal"]

_MODES = ("rows", "columns")


def _normalize_rows(w, epsilon):
  """``w_i / max(||w_i||, epsilon)`` (Keras's ``ops.normalize``), NaN-free gradient."""
  squares = jnp.sum(jnp.square(w), axis=1, keepdims=True)
  large = squares > epsilon**2
  return w * jnp.where(large, jax.lax.rsqrt(jnp.where(large, squares, 1.0)), 1.0 / epsilon)


@jax.tree_util.register_pytree_node_class
class Orthogonal(Regularizer):
  r"""``factor`` times the mean :math:`|\cos|` between distinct rows (or columns).

  Keras's ``OrthogonalRegularizer(factor, mode)``: on a Dense kernel ``(in, out)``,
  ``mode="rows"`` makes the input features' weight vectors orthogonal,
  ``mode="columns"`` the output units'. See the module docstring for the formula.
  """
  _strengths = ("factor",)
  _static = ("mode", "where")
  _homogeneous = True
  separable = False

  def __init__(self, factor=0.01, mode: str = "rows", *, where=None):
    self.factor = _checks.check_nonnegative(factor, "factor")
    if mode not in _MODES:
      raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    self.mode = mode
    self.where = select.as_selector(where)

  def _leaf_value(self, w):
    if w.ndim != 2:
      raise ValueError(
          f"Orthogonal needs matrices, got a selected leaf of shape {w.shape}; pass "
          "where= to select only 2-D leaves (e.g. where=jaxreg.select.kernels())")
    # Every row meets every other: on an explicit-axis mesh the matrix is gathered.
    w = _sharding.replicated(_dtypes.widen(w))
    if self.mode == "columns":
      w = w.T
    size = w.shape[0]
    if size < 2:
      return jnp.zeros((), w.dtype)
    unit = _normalize_rows(w, _prox.KERAS_EPSILON)
    cosines = unit @ unit.T
    off_diagonal = jnp.abs(cosines) * (1.0 - jnp.eye(size, dtype=w.dtype))
    pairs = size * (size - 1) / 2
    return self.factor * 0.5 * jnp.sum(off_diagonal) / pairs

  def _leaf_prox(self, w, step):
    raise NotImplementedError(
        "Orthogonal has no closed-form proximal map: add its gradient with "
        "jaxreg.transforms.add_gradient instead")
