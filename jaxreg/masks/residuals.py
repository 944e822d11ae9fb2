"""What the backward pass of a masked op keeps of its mask.

The backward pass of a masked op needs the mask. :func:`residual_policy` and
:func:`as_residual` let a caller keep it as 1 bit per element (``"packed"``, by
:func:`pack`) or keep nothing and draw it again from the key (``"recompute"``),
through ``jax.checkpoint``, which leaves forward mode (``jvp``, ``jacfwd``) untouched.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

__all__ = ["RESIDUALS", "as_residual", "check_residual", "pack", "residual_policy", "unpack"]

RESIDUALS = ("recompute", "packed")
_MASK_NAME = "jaxreg_packed_mask"


def check_residual(residual: str | None, exact: bool) -> str:
  """The backward residual to use: ``None`` picks ``"recompute"`` for the fast path
  (a hash is as cheap as unpacking bits) and ``"packed"`` for the exact one (threefry
  is not).

  >>> check_residual(None, exact=False), check_residual(None, exact=True)
  ('recompute', 'packed')
  """
  if residual is None:
    return "packed" if exact else "recompute"
  if residual not in RESIDUALS:
    raise ValueError(f"residual must be one of {RESIDUALS} or None, got {residual!r}")
  return residual


def residual_policy(residual: str):
  """The ``jax.checkpoint`` policy that saves what ``residual`` names and nothing else."""
  if residual == "packed":
    return jax.checkpoint_policies.save_only_these_names(_MASK_NAME)
  return jax.checkpoint_policies.nothing_saveable


def as_residual(mask: jax.Array, residual: str) -> jax.Array:
  """``mask`` routed so that, under :func:`residual_policy`, the backward pass keeps
  it as 1 bit per element (``"packed"``) or nothing (``"recompute"``)."""
  if residual != "packed":
    return mask
  packed = checkpoint_name(pack(mask), _MASK_NAME)
  return unpack(packed, mask.shape)


def pack(mask: jax.Array) -> jax.Array:
  """Packs a bool mask into uint32 words along its last axis (padded to 32):
  bit ``j`` of word ``k`` is entry ``32k + j``.

  >>> import jax.numpy as jnp
  >>> pack(jnp.array([True, False, True]))
  Array([5], dtype=uint32)
  """
  mask = jnp.atleast_1d(mask)
  if mask.size == 0:  # No entry to pack: reshaping to (..., -1, 32) would divide by 0.
    return jnp.zeros((*mask.shape[:-1], -(-mask.shape[-1] // 32)), jnp.uint32)
  pad = -mask.shape[-1] % 32
  mask = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)])
  lanes = mask.reshape(*mask.shape[:-1], -1, 32).astype(jnp.uint32)
  return jnp.sum(lanes << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def unpack(words: jax.Array, shape: Sequence[int]) -> jax.Array:
  """The inverse of :func:`pack` for a mask of ``shape``.

  >>> import jax.numpy as jnp
  >>> unpack(jnp.array([5], jnp.uint32), (3,))
  Array([ True, False,  True], dtype=bool)
  """
  shape = tuple(shape)
  if math.prod(shape) == 0:
    return jnp.zeros(shape, bool)
  lanes = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
  flat = lanes.reshape(*words.shape[:-1], -1)[..., :(shape[-1] if shape else 1)]
  return flat.astype(bool).reshape(shape)
