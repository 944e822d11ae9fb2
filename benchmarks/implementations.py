"""The dropout implementations under comparison, each as ``f(key, x, rate) -> y``.

Every peer is called the way its users call it in a training step, so that what is
timed includes whatever that library does around the mask (key handling, scaling).
"""

from __future__ import annotations

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp

import jaxreg as jr


def jaxreg_default(key, x, rate):
  return jr.dropout(key, x, rate)


def jaxreg_packed(key, x, rate):
  return jr.dropout(key, x, rate, residual="packed")


def jaxreg_exact(key, x, rate):
  return jr.dropout(key, x, rate, exact=True)


def jaxreg_exact_recompute(key, x, rate):
  return jr.dropout(key, x, rate, exact=True, residual="recompute")


def flax_linen(key, x, rate):
  return nn.Dropout(rate, deterministic=False).apply({}, x, rngs={"dropout": key})


def flax_nnx(key, x, rate):
  return nnx.Dropout(rate)(x, deterministic=False, rngs=key)


def bernoulli_where(key, x, rate):
  """What one writes by hand: a threefry Bernoulli draw per element and a select."""
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def copy_floor(key, x, rate):
  """One read and one write of ``x``: no dropout can be faster."""
  del key, rate
  return x * 2


# Display names, in table order. The first is the one every ratio is taken against.
SPEED = {
    "jaxreg": jaxreg_default,
    "jaxreg exact": jaxreg_exact,
    "flax.linen": flax_linen,
    "flax.nnx": flax_nnx,
    "bernoulli+where": bernoulli_where,
    "copy x*2": copy_floor,
}

RESIDUAL = {
    "jaxreg (default: recompute)": jaxreg_default,
    "jaxreg residual='packed'": jaxreg_packed,
    "jaxreg exact (default: packed)": jaxreg_exact,
    "jaxreg exact residual='recompute'": jaxreg_exact_recompute,
    "flax.linen": flax_linen,
    "bernoulli+where": bernoulli_where,
}
