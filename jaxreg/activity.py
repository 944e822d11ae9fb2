r"""Activity penalties: a penalty on a layer's output, reduced over the batch as Keras does.

Keras ≥ 3.14 divides every activity penalty by the batch size, the activation's first
dimension (keras-team/keras#22021), so that a strength means the same at every batch
size; Keras before 3.14 and tf.keras summed over the batch. The Flax
``ActivityRegularization`` modules (:mod:`jaxreg.linen`, :mod:`jaxreg.nnx`) record
:func:`activity_penalty` and follow current Keras by default.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg._regularizer import Regularizer

__all__ = ["ACTIVITY_REDUCTIONS", "activity_penalty", "check_activity_reduction"]

ACTIVITY_REDUCTIONS = ("batch_mean", "sum")


def check_activity_reduction(reduction: str) -> str:
  """``reduction`` if it is one of :data:`ACTIVITY_REDUCTIONS`, else ``ValueError``."""
  if reduction not in ACTIVITY_REDUCTIONS:
    raise ValueError(f"reduction must be one of {ACTIVITY_REDUCTIONS}, got {reduction!r}")
  return reduction


def activity_penalty(activation, reg: Regularizer, *,
                     reduction: str = "batch_mean") -> jax.Array:
  r"""An activity penalty as Keras computes it: ``reg(a)`` of the activation ``a``.

  With ``reduction="batch_mean"`` (the default) it is divided by the batch size
  ``a.shape[0]``, as Keras ≥ 3.14 does for every activity regularizer, so a strength
  does not depend on the batch size; ``reduction="sum"`` keeps the sum over the batch
  (Keras before 3.14, tf.keras). A scalar activation is not divided, and an empty
  batch gives 0, as in Keras. The Flax ``ActivityRegularization`` modules record
  ``activity_penalty(a, ElasticNet(l1, l2), reduction=...)``.

  >>> import jax.numpy as jnp, jaxreg as jr
  >>> a = jnp.array([[1.0, -2.0], [0.0, 1.0]])
  >>> float(activity_penalty(a, jr.L1(0.5)))
  1.0
  >>> float(activity_penalty(a, jr.L1(0.5), reduction="sum"))
  2.0
  """
  check_activity_reduction(reduction)
  penalty = reg(activation)
  if reduction == "sum" or jnp.ndim(activation) == 0:
    return penalty
  batch = jnp.shape(activation)[0]
  return penalty / batch if batch else jnp.zeros_like(penalty)
