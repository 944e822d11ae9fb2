"""The dtype jaxreg computes in: float32 for a 16-bit input, the input's own otherwise.

A bfloat16 or float16 input is scaled, thresholded, noised, summed or solved in float32
and its result rounded once to its dtype (penalties and paths stay float32); float32 and
float64 inputs are computed in their own dtype, so float64 is never narrowed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def wide(dtype):
  """``dtype`` promoted to at least float32.

  >>> wide(jnp.bfloat16), wide(jnp.float32)
  (dtype('float32'), dtype('float32'))
  """
  return jnp.promote_types(dtype, jnp.float32)


def widen(x) -> jax.Array:
  """``x`` cast to :func:`wide` of its dtype."""
  return x.astype(wide(x.dtype))

