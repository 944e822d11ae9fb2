"""Proximal Adam: Adam's step, then the prox in the metric of Adam's preconditioner."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jaxreg.regularizers import Regularizer
from jaxreg.transforms import _base


class ProxAdamState(NamedTuple):
  """State of :func:`prox_adam`: Adam's moments (as in ``optax.ScaleByAdamState``)."""
  count: jax.Array  # shape=(), dtype=int32
  mu: optax.Updates
  nu: optax.Updates


def prox_adam(learning_rate: optax.ScalarOrSchedule, reg: Regularizer, *,
              b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
              eps_root: float = 0.0, mu_dtype: Optional[Any] = None
              ) -> optax.GradientTransformation:
  r"""Proximal Adam: Adam's step, then the prox in Adam's metric.

  With Adam's bias-corrected moments :math:`\hat m, \hat v` of the gradient of
  :math:`L_0` (the updates given) and :math:`c_i = \sqrt{\hat v_i} + \epsilon`:

  .. math::
    w \leftarrow \arg\min_z\; η_t R(z) + \tfrac12 \sum_i c_i (z_i - v_i)^2,
    \qquad v = w - η_t\,\hat m / c,

  the proximal map in the norm of Adam's diagonal preconditioner (ProxGen: Yun,
  Lozano & Yang, "Adaptive proximal gradient methods for structured neural
  networks", NeurIPS 2021). For a penalty that separates by coordinate it is
  ``reg.prox(v, η_t / c)``: for ``L1(λ)`` soft-thresholding with threshold
  :math:`η_t λ / (\sqrt{\hat v_i} + \epsilon)` on coordinate i. Unlike
  ``optax.chain(add_gradient(jr.L1(λ)), optax.adam(lr))``, this gives exact zeros.
  With a zero penalty it is ``optax.adam``. A coordinate whose gradients have all been
  0 has threshold about :math:`η_tλ/\epsilon` and is zeroed at once: Adam's metric puts
  no weight on keeping it where it is, so the penalty decides alone.

  ``GroupLasso`` has no closed-form prox with a different step per coordinate, so
  ``prox_adam(lr, GroupLasso(...))`` raises ``ValueError`` at once; use
  :func:`prox_sgd`, or ``optax.adam`` followed by :func:`proximal`.

  Args:
    learning_rate: a float or an Optax schedule.
    reg: a jaxreg regularizer whose prox accepts per-coordinate steps.
    b1, b2, eps, eps_root, mu_dtype: as in ``optax.adam``.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ProxAdamState`.

  >>> import jax, jax.numpy as jnp, optax, jaxreg as jr
  >>> loss = lambda w: 0.5 * jnp.sum((w - jnp.array([1.0, 0.01])) ** 2)
  >>> tx = prox_adam(0.05, jr.L1(0.1))
  >>> w = jnp.zeros(2)
  >>> state = tx.init(w)
  >>> for _ in range(300):
  ...   updates, state = tx.update(jax.grad(loss)(w), state, w)
  ...   w = optax.apply_updates(w, updates)
  >>> w.round(2)
  Array([0.9, 0. ], dtype=float32)
  """
  learning_rate = _base.check_learning_rate(learning_rate)
  reg = _base.check_separable(_base.check_regularizer(reg, prox=True), "prox_adam",
                             "optax.adam")
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype)

  def init_fn(params):
    return ProxAdamState(*adam.init(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_base.NO_PARAMS_MSG)
    direction, adam_state = adam.update(updates, optax.ScaleByAdamState(*state))
    # The schedule is read at the count before this step, as optax.adam reads it.
    step = _base.learning_rate_at(learning_rate, state.count)
    nu_hat = optax.tree.bias_correction(adam_state.nu, b2, adam_state.count)
    steps = jax.tree.map(lambda v: step / (jnp.sqrt(v + eps_root) + eps), nu_hat)
    updates = _base.prox_updates(reg, params, _base.descent(step, direction), steps)
    return updates, ProxAdamState(*adam_state)

  return optax.GradientTransformation(init_fn, update_fn)
