"""Proximal gradient descent: ISTA, with Optax's momentum, or accelerated (FISTA)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jaxreg import _checks
from jaxreg.regularizers import Regularizer
from jaxreg.transforms import _base
from jaxreg.transforms import _fista


class ProxSGDState(NamedTuple):
  """State of :func:`prox_sgd` without acceleration."""
  count: jax.Array  # shape=(), dtype=int32
  trace: optax.Params  # momentum buffer; optax.EmptyState() when momentum is None


def prox_sgd(learning_rate: optax.ScalarOrSchedule, reg: Regularizer, *,
             momentum: Optional[float] = None, nesterov: bool = False,
             accelerated: bool = False) -> optax.GradientTransformation:
  r"""Proximal gradient descent; FISTA with ``accelerated=True``.

  Minimizes :math:`L_0(w) + R(w)` with :math:`g = \nabla L_0` (the updates given):

  .. math:: w_{k+1} = \operatorname{prox}_{η_k R}(w_k - η_k g_k)

  This is ISTA for ``L1``. With ``momentum`` the gradient step is Optax's heavy-ball
  (or Nesterov) step, so ``prox_sgd(lr, reg, momentum=m)`` equals
  ``optax.chain(optax.sgd(lr, momentum=m), proximal(lr, reg))``.

  ``accelerated=True`` is FISTA (Beck & Teboulle, "A fast iterative
  shrinkage-thresholding algorithm for linear inverse problems", SIAM J. Imaging
  Sci. 2009), objective gap :math:`O(1/k^2)` instead of :math:`O(1/k)` for
  :math:`η \le 1/\mathrm{Lip}(\nabla L_0)`:

  .. math::
    x_k = \operatorname{prox}_{η_k R}(y_k - η_k \nabla L_0(y_k)), \quad
    t_{k+1} = \tfrac{1 + \sqrt{1 + 4t_k^2}}{2}, \quad
    y_{k+1} = x_k + \tfrac{t_k - 1}{t_{k+1}}(x_k - x_{k-1}),

  with :math:`t_1 = 1` and :math:`x_0 = y_1` the initial params. The gradient is taken
  at the params, so the params are the extrapolated points :math:`y_k`; the proximal
  point :math:`x_k` (exactly sparse) is ``state.iterate``, which :func:`fista_iterate`
  finds in any optimizer state that holds it (a chain, an ``nnx.Optimizer``).

  Args:
    learning_rate: a float or an Optax schedule; used for the step and the prox.
    reg: a jaxreg regularizer; its ``prox`` is used.
    momentum: heavy-ball decay as in ``optax.sgd``; not with ``accelerated``.
    nesterov: Nesterov momentum, as in ``optax.sgd``; needs ``momentum``.
    accelerated: FISTA's momentum sequence.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ProxSGDState`, or
    :class:`FISTAState` when ``accelerated``.

  >>> import jax, jax.numpy as jnp, optax, jaxreg as jr
  >>> X = jnp.eye(3)
  >>> y = jnp.array([2.0, 0.3, -1.0])
  >>> loss = lambda w: 0.5 * jnp.sum((X @ w - y) ** 2)
  >>> tx = prox_sgd(1.0, jr.L1(0.5), accelerated=True)
  >>> w = jnp.zeros(3)
  >>> state = tx.init(w)
  >>> for _ in range(3):
  ...   updates, state = tx.update(jax.grad(loss)(w), state, w)
  ...   w = optax.apply_updates(w, updates)
  >>> state.iterate
  Array([ 1.5,  0. , -0.5], dtype=float32)
  """
  learning_rate = _base.check_learning_rate(learning_rate)
  reg = _base.check_regularizer(reg, prox=True)
  if accelerated and momentum is not None:
    raise ValueError(
        f"accelerated=True (FISTA) brings its own momentum sequence; got momentum={momentum}")
  if nesterov and momentum is None:
    raise ValueError("nesterov=True needs a momentum, got momentum=None")
  if momentum is not None:
    _checks.check_nonnegative(momentum, "momentum")
  if accelerated:
    return _fista.fista(learning_rate, reg)

  trace = optax.trace(decay=momentum, nesterov=nesterov) if momentum is not None else None

  def init_fn(params):
    return ProxSGDState(
        count=jnp.zeros([], jnp.int32),
        trace=optax.EmptyState() if trace is None else trace.init(params).trace)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_base.NO_PARAMS_MSG)
    new_trace = state.trace
    if trace is not None:
      updates, trace_state = trace.update(updates, optax.TraceState(trace=state.trace))
      new_trace = trace_state.trace
    # One count and one learning rate for the step and the prox: they cannot disagree.
    step = _base.learning_rate_at(learning_rate, state.count)
    updates = _base.prox_updates(reg, params, _base.descent(step, updates), step)
    return updates, ProxSGDState(count=optax.safe_increment(state.count),
                                 trace=new_trace)

  return optax.GradientTransformation(init_fn, update_fn)
