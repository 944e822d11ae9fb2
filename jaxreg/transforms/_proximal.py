"""The proximal step on its own, to chain after any optimizer."""

from __future__ import annotations

from typing import NamedTuple
import warnings

import jax
import jax.numpy as jnp
import optax

from jaxreg.regularizers import Regularizer
from jaxreg.transforms import _base


class ProximalState(NamedTuple):
  """State of :func:`proximal`: the count its learning rate is evaluated at."""
  count: jax.Array  # shape=(), dtype=int32


def proximal(learning_rate: optax.ScalarOrSchedule, reg: Regularizer
             ) -> optax.GradientTransformation:
  r"""Turns an optimizer's step into a proximal step: chain it after the optimizer.

  .. math:: u \leftarrow \operatorname{prox}_{η_t R}(w + u) - w

  so that ``optax.apply_updates`` lands on :math:`\operatorname{prox}_{η_t R}(w + u)`.
  With ``optax.sgd(η)`` before it this is proximal gradient descent (ISTA for L1),
  exactly :func:`prox_sgd`. ``η_t`` must be the learning rate of the optimizer before
  it: the same float, or the same schedule (evaluated at this transform's own count,
  which starts at 0 and advances once per update, like Optax's). After an adaptive
  optimizer the threshold is ``η_t·λ`` for every coordinate, whatever the
  preconditioner did; :func:`prox_adam` scales it per coordinate instead.

  The learning rate comes first, as in every Optax optimizer and every transform here.
  The former order ``proximal(reg, learning_rate)`` still works, with a
  ``DeprecationWarning``: a regularizer has a ``prox`` method, a learning rate (a
  number, an array, a schedule) has none, so the two cannot be mistaken.

  Args:
    learning_rate: the optimizer's learning rate, a float or an Optax schedule.
    reg: a jaxreg regularizer; its ``prox`` is used.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ProximalState`.

  >>> import jax.numpy as jnp, optax, jaxreg as jr
  >>> lr = 0.1
  >>> tx = optax.chain(optax.sgd(lr), proximal(lr, jr.L1(1.0)))
  >>> params = jnp.array([1.0, 0.05, -0.5])
  >>> updates, _ = tx.update(jnp.zeros(3), tx.init(params), params)
  >>> optax.apply_updates(params, updates)
  Array([ 0.9,  0. , -0.4], dtype=float32)
  """
  learning_rate, reg = _in_order(learning_rate, reg)
  reg = _base.check_regularizer(reg, prox=True)
  learning_rate = _base.check_learning_rate(learning_rate)

  def init_fn(params):
    del params
    return ProximalState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_base.NO_PARAMS_MSG)
    step = _base.learning_rate_at(learning_rate, state.count)
    updates = _base.prox_updates(reg, params, updates, step)
    return updates, ProximalState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def _has_prox(value) -> bool:
  return callable(getattr(value, "prox", None))


def _in_order(learning_rate, reg):
  """``(learning_rate, reg)`` from a call in today's order or in the former one."""
  if _has_prox(learning_rate) and _has_prox(reg):
    raise TypeError(
        f"proximal(learning_rate, reg) got two regularizers, learning_rate="
        f"{learning_rate!r} and reg={reg!r}: learning_rate must be a float or an Optax "
        "schedule; check the order of the arguments")
  if _has_prox(learning_rate):
    warnings.warn(
        "proximal(reg, learning_rate) is deprecated: the learning rate comes first, as "
        "in Optax and in prox_sgd; write proximal(learning_rate, reg)",
        DeprecationWarning, stacklevel=3)
    return reg, learning_rate
  if not _has_prox(reg):
    raise TypeError(
        f"proximal(learning_rate, reg) got no regularizer (learning_rate="
        f"{learning_rate!r}, reg={reg!r}): reg must be a jaxreg regularizer (jr.L1, "
        "jr.GroupLasso, ...)")
  return learning_rate, reg
