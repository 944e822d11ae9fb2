"""Coupled regularization: the penalty's gradient added to the updates."""

from __future__ import annotations

import jax
import optax

from jaxreg.transforms import _base


def add_gradient(reg) -> optax.GradientTransformation:
  r"""Adds the gradient of a penalty to the updates (coupled regularization).

  .. math:: u \leftarrow u + \nabla R(w)

  Chain it before an optimizer, which then minimizes :math:`L_0 + R`:
  ``optax.chain(add_gradient(jr.L2(λ)), optax.sgd(lr))``. For ``L1(λ)`` the gradient
  is :math:`λ\,\mathrm{sign}(w)`, 0 at 0; for ``L2(λ)`` it is :math:`2λw`, which is
  ``optax.add_decayed_weights(2λ)``. Integer leaves of ``params`` get no gradient.

  Args:
    reg: a jaxreg regularizer, or any differentiable function ``params -> scalar``.

  Returns:
    An ``optax.GradientTransformation`` whose state is ``optax.EmptyState()``.

  >>> import jax.numpy as jnp, jaxreg as jr
  >>> params = jnp.array([1.0, 0.0, -2.0])
  >>> tx = add_gradient(jr.L1(0.5))
  >>> updates, _ = tx.update(jnp.zeros(3), tx.init(params), params)
  >>> updates
  Array([ 0.5,  0. , -0.5], dtype=float32)
  """
  reg = _base.check_regularizer(reg, prox=False)
  if any(getattr(term, "is_constraint", False) for term in getattr(reg, "terms", (reg,))):
    # Its value is 0 everywhere, so its gradient would silently do nothing.
    raise TypeError(
        f"{reg!r} contains a constraint, which has no gradient; enforce it with its "
        "prox (proximal, prox_sgd, prox_adam)")

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_base.NO_PARAMS_MSG)
    # allow_int: integer leaves (counters, indices) get float0 and are left alone.
    grads = jax.grad(reg, allow_int=True)(params)
    updates = jax.tree.map(
        lambda u, g: u if u is None or g.dtype == jax.dtypes.float0
        else u + g.astype(u.dtype),
        updates, grads, is_leaf=lambda x: x is None)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)
