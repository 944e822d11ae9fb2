r"""Anderson extrapolation of a fixed-point iteration (Bertrand & Massias, 2021), as the
path solver (``_working_set.py``) applies it to its coordinate-descent epochs.

>>> import jax.numpy as jnp
>>> steps = jnp.array([[0.5, 0.3], [0.25, 0.21], [0.125, 0.147]])  # two linear rates
>>> history = jnp.concatenate([jnp.zeros((1, 2)), jnp.cumsum(steps, axis=0)])
>>> [round(float(v), 2) for v in extrapolate(history)]  # both limits are 1
[1.0, 1.0]
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["extrapolate"]


def extrapolate(history):
  r"""Anderson extrapolation of the iterates ``history`` (oldest first): the affine
  combination :math:`\sum_i c_i w_i` of the last ones whose weights make the combined
  steps least, :math:`c = C^{-1}1 / 1^\top C^{-1}1` with :math:`C = UU^\top`, ``U`` the
  steps (Bertrand & Massias, 2021). A small ridge, 1e-10 of the trace (ten roundings
  in float32, where 1e-10 would round away), keeps ``C`` invertible when the steps are
  collinear; a combination that is still not finite is for the caller to refuse."""
  steps = jnp.diff(history, axis=0)
  products = steps @ steps.T
  relative = max(1e-10, 10 * float(jnp.finfo(history.dtype).eps))
  ridge = relative * jnp.trace(products) + jnp.finfo(history.dtype).tiny
  z = _gauss_jordan(products + ridge * jnp.eye(steps.shape[0], dtype=history.dtype),
                    jnp.ones(steps.shape[0], history.dtype))
  return (z / z.sum()) @ history[1:]


def _gauss_jordan(a, b):
  """``a⁻¹b`` for a small symmetric positive-definite ``a``, eliminated in a loop
  unrolled at its static size, without pivoting (its diagonal stays positive): no
  solver library call, so that the path lowers alike for every backend."""
  size = a.shape[0]
  augmented = jnp.concatenate([a, b[:, None]], axis=1)
  for i in range(size):
    row = augmented[i] / augmented[i, i]
    others = jnp.where(jnp.arange(size) == i, 0, augmented[:, i])
    augmented = (augmented - jnp.outer(others, row)).at[i].set(row)
  return augmented[:, size]
