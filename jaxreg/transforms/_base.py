"""What every transform in :mod:`jaxreg.transforms` shares: the checks of its
arguments, the learning rate at a count, and the update that lands on a proximal point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxreg import _checks
from jaxreg.regularizers import Regularizer

# Optax's own wording for a transform that needs params and got none (it has no
# public name there), so users meet the message they know.
NO_PARAMS_MSG = ("You are using a transformation that requires the current value of "
                 "parameters, but you are not passing `params` when calling `update`.")


def check_regularizer(reg, *, prox: bool):
  """``reg``; a ``TypeError`` unless it is a regularizer (``prox=True``: a jaxreg one)."""
  if prox and not isinstance(reg, Regularizer):
    raise TypeError(
        f"reg must be a jaxreg regularizer (jr.L1, jr.GroupLasso, ...), got {reg!r}")
  if not callable(reg):
    raise TypeError(f"reg must be a regularizer or a function params -> scalar, got {reg!r}")
  return reg


def check_separable(reg, optimizer: str, alternative: str):
  """``reg``; a ``ValueError`` unless its prox takes one step per coordinate, which a
  preconditioned optimizer (``optimizer``) needs."""
  if not reg.separable:
    raise ValueError(
        f"{optimizer} needs a penalty whose prox takes one step per coordinate; {reg!r} "
        f"has none in closed form: use prox_sgd, or {alternative} followed by proximal")
  return reg


def check_learning_rate(learning_rate):
  """A non-negative scalar, or a schedule ``count -> scalar``."""
  if isinstance(learning_rate, Regularizer):
    # A regularizer is callable, so it would pass for a schedule: the learning rate
    # comes first in every transform here, the regularizer second.
    raise TypeError(
        f"learning_rate must be a float or an Optax schedule, got the regularizer "
        f"{learning_rate!r}; check the order of the arguments")
  if callable(learning_rate):
    return learning_rate
  dtype = getattr(learning_rate, "dtype", None)
  is_number = (isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool)
               ) or (dtype is not None and np.issubdtype(dtype, np.number))
  if not is_number:
    raise TypeError(
        "learning_rate must be a float or an Optax schedule (a callable count -> "
        f"float), got {type(learning_rate).__name__}: {learning_rate!r}")
  if jnp.ndim(learning_rate) != 0:
    raise ValueError(
        f"learning_rate must be a scalar, got shape {jnp.shape(learning_rate)}; "
        "use jax.vmap for a batch of learning rates")
  return _checks.check_nonnegative(learning_rate, "learning_rate")


def learning_rate_at(learning_rate, count):
  """The learning rate of the step ``count``: a schedule read there, or the number."""
  return learning_rate(count) if callable(learning_rate) else learning_rate


def leaf_dtype(leaf):
  """A leaf's dtype; a Python-float leaf (a parameter, as in Optax) has jnp's."""
  return jnp.result_type(leaf)


def descent(learning_rate, direction):
  """``-lr·d`` in ``d``'s dtype, the update ``optax.scale_by_learning_rate`` makes."""
  return jax.tree.map(lambda d: jnp.asarray(-learning_rate, d.dtype) * d, direction)


def prox_updates(reg, params, updates, step):
  """Updates that move ``params`` to ``prox_{step·R}(params + updates)``."""
  # The prox acts on the point optax.apply_updates would produce, in the params' dtype.
  moved = jax.tree.map(lambda p, u: (p + u).astype(leaf_dtype(p)), params, updates)
  new = reg.prox(moved, step)
  # A zeroed coordinate gets the update -p, and p + (-p) is exactly 0, provided -p is
  # not rounded: hence the wider of the two dtypes (the updates' own when they agree).
  return jax.tree.map(
      lambda n, p, u: (n - p).astype(jnp.promote_types(leaf_dtype(p), leaf_dtype(u))),
      new, params, updates)
