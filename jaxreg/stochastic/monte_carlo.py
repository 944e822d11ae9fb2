"""Monte-Carlo dropout: a predictive mean and variance over independent dropout keys."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxreg import _checks

__all__ = ["mc_predict"]


def mc_predict(fn: Callable[..., Any], key, *args, num_samples: int):
  """Monte-Carlo dropout (Gal & Ghahramani, 2016): predictive mean and variance.

  Evaluates ``fn(k, *args)`` for ``num_samples`` independent keys ``k`` split from
  ``key``, vmapped, and returns ``(mean, variance)`` over the samples, leaf by leaf if
  ``fn`` returns a pytree. The variance is the population variance (``ddof=0``).
  ``fn`` must apply its dropout in training mode with the key it is given.

  >>> import jax, jax.numpy as jnp, jaxreg as jr
  >>> fn = lambda k, x: jr.dropout(k, x, 0.5)
  >>> mean, var = mc_predict(fn, jax.random.key(0), jnp.ones(3), num_samples=64)
  >>> mean.shape, var.shape
  ((3,), (3,))
  """
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  keys = jax.random.split(_checks.check_key(key), num_samples)
  samples = jax.vmap(lambda k: fn(k, *args))(keys)
  mean = jax.tree.map(lambda s: jnp.mean(s, axis=0), samples)
  variance = jax.tree.map(lambda s: jnp.var(s, axis=0), samples)
  return mean, variance
