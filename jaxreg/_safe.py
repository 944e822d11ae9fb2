"""Division and square root whose value and gradient stay finite where the plain op's
would not: at a keep probability, a norm or a denominator of 0.

The one home for "divide by ``q``, reading ``q == 0`` as ``zero_as``". The inner
``where`` keeps ``x/0`` and ``sqrt(0)``'s infinite slope out of the graph, so reverse
mode never meets ``inf · 0`` (a NaN); where ``q > 0`` the result is the plain op's, bit
for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def safe_divide(x, q, zero_as=0.0) -> jax.Array:
  """``x / q`` where ``q > 0``, else ``zero_as``.

  >>> safe_divide(jnp.array([3.0, 3.0]), jnp.array([2.0, 0.0]), zero_as=1.0)
  Array([1.5, 1. ], dtype=float32)
  """
  positive = q > 0
  return jnp.where(positive, x / jnp.where(positive, q, 1), zero_as)


def safe_reciprocal(q, zero_as=0.0) -> jax.Array:
  """``1 / q`` where ``q > 0``, else ``zero_as``.

  >>> safe_reciprocal(jnp.array([0.5, 0.0]))
  Array([2., 0.], dtype=float32)
  """
  return safe_divide(1, q, zero_as)


def safe_sqrt(v) -> jax.Array:
  """``sqrt(v)`` for ``v >= 0``: 0 at ``v == 0``, with gradient 0 there, not infinity.

  >>> jax.grad(safe_sqrt)(0.0)
  Array(0., dtype=float32, weak_type=True)
  """
  positive = v > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1)), 0)
