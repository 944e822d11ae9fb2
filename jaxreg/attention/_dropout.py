"""The dropout of the attention weights: one mask for the whole weights, any block of
it drawn alone, applied as :func:`jaxreg.dropout` applies its own."""

from __future__ import annotations

import jax
import numpy as np

from jaxreg import masks


class AttentionDropout:
  """The attention dropout: its mask is that of the whole ``(batch..., heads, q, k)``
  weights, whichever block of them asks."""

  def __init__(self, rng, rate, broadcast: bool, exact: bool, shape, dtype):
    self.rng, self.rate, self.exact, self.shape = rng, rate, exact, shape
    # The weights' dtype sets the mask's resolution, the same in the dense and the
    # blockwise path (whose float32 or wider probabilities stand in for the weights).
    self.dtype = dtype
    # Flax's broadcast_dropout shares the mask over every batch dim and the heads.
    self.broadcast_dims = tuple(range(len(shape) - 2)) if broadcast else ()

  def keep(self, start=None, block_shape=None) -> masks.KeepMask:
    return masks.keep_mask(self.rng, self.shape, self.rate, broadcast_dims=self.broadcast_dims,
                           exact=self.exact, start=start, block_shape=block_shape,
                           dtype=self.dtype)

  def scale(self, x, kept, dtype):
    """``x``'s kept entries over the keep probability, 0 elsewhere
    (:func:`jaxreg.masks.apply_keep`). The fast path scales as ``jr.dropout`` does (by
    ``1/q`` in float32, rounded once to ``x``'s dtype). ``exact=True`` keeps Flax's
    arithmetic, ``x · (keep / (1 - p))`` with ``1 - p`` formed in Python and the
    factor in the computation ``dtype``: bit-exact to Flax, and like Flax off by the
    rounding of ``q`` in bfloat16. ``q = 0`` (everything dropped) divides by 1, so no
    ``0/0``."""
    return masks.apply_keep(x, kept, self.rate, exact=self.exact, mask_dtype=self.dtype,
                            multiplier_dtype=dtype)


def unfused(mask, shape):
  """``mask``, computed on its own when it is broadcast (``broadcast_dropout``): fused
  into the ops on the weights, XLA would hash it again for every batch entry and head."""
  if mask.size < np.prod(shape):
    return jax.lax.optimization_barrier(mask)
  return mask
