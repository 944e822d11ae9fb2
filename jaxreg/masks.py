"""Keep-masks: the one place where a PRNG key becomes random bits.

Every dropout variant in :mod:`jaxreg.dropout` asks :func:`keep_mask` for its mask, and
the noise variants ask :func:`standard_normal`, so the way bits are drawn (and made
faster) is decided here alone.

A keep-mask ``m`` has independent entries with ``P(m_i = 1) = q``, where ``q`` is
``1 - rate`` rounded down to a multiple of ``2^-24``: each entry compares the top 24 bits
of one random ``uint32`` with ``q·2^24``. The mask comes with that realized ``q``, which
is exact in float32, so that callers scale by the probability the mask was truly drawn
with: for ``y = m·x/q``, ``E[y] = x`` holds exactly, not only to rounding.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxreg import _checks

_RESOLUTION_BITS = 24  # The most a float32 keep probability can resolve exactly.
_LEVELS = float(2**_RESOLUTION_BITS)


class KeepMask(NamedTuple):
  """A boolean keep-mask and the keep probability it was drawn with."""
  mask: jax.Array
  """``bool``, of the requested shape with size 1 along the broadcast dims."""
  keep_prob: jax.Array
  """``float32`` scalar ``q``: ``P(mask_i = True)``."""


def mask_shape(shape: Sequence[int], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
  """``shape`` with the dims in ``broadcast_dims`` set to 1 (one draw shared along them)."""
  ndim = len(shape)
  dims = set()
  for dim in broadcast_dims:
    if not -ndim <= dim < ndim:
      raise ValueError(
          f"broadcast_dims entry {dim} is out of range for an array of shape {tuple(shape)}")
    dims.add(dim % ndim)
  return tuple(1 if i in dims else int(size) for i, size in enumerate(shape))


def keep_mask(key, shape: Sequence[int], rate, *,
              broadcast_dims: Sequence[int] = ()) -> KeepMask:
  """Draws a keep-mask with ``P(keep) = 1 - rate``, shared along ``broadcast_dims``.

  Args:
    key: a typed (``jax.random.key``) or legacy (``jax.random.PRNGKey``) key.
    shape: the shape of the array the mask applies to.
    rate: the drop probability: a float in ``[0, 1]``, or a traced scalar, which is
      clipped to ``[0, 1]`` (NaN drops everything).
    broadcast_dims: dims along which one draw is shared (size 1 in the mask).

  Returns:
    A :class:`KeepMask`; ``mask`` broadcasts against ``shape``.

  >>> import jax
  >>> m = keep_mask(jax.random.key(0), (2, 3), 0.5, broadcast_dims=(0,))
  >>> m.mask.shape, float(m.keep_prob)
  ((1, 3), 0.5)
  """
  key = _checks.check_key(key)
  # q·2^24 and its floor are exact in float32, so is the realized q = level/2^24.
  level = jnp.floor(jnp.asarray(1.0 - _checks.check_rate(rate), jnp.float32) * _LEVELS)
  bits = jax.random.bits(key, mask_shape(shape, broadcast_dims), jnp.uint32)
  mask = (bits >> (32 - _RESOLUTION_BITS)) < level.astype(jnp.uint32)
  return KeepMask(mask, level / _LEVELS)


def standard_normal(key, shape: Sequence[int], dtype) -> jax.Array:
  """Independent ``N(0, 1)`` draws of ``shape`` and ``dtype``, for the noise variants."""
  return jax.random.normal(_checks.check_key(key), tuple(shape), dtype)
