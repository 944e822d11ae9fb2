r"""Optax gradient transformations built on jaxreg's regularizers.

Two ways to add a penalty :math:`R` to a loss :math:`L_0`:

* **coupled** (:func:`add_gradient`): add :math:`\nabla R(w)` to the gradient before the
  optimizer sees it, so the optimizer minimizes :math:`L_0 + R` like any other loss.
  For ``L1`` the gradient is :math:`λ\,\mathrm{sign}(w)`: constant in size, so the
  weights oscillate around 0 and almost never land on it.
* **proximal** (:func:`proximal`, :func:`prox_sgd`, :func:`prox_adam`, and
  ``prox_adagrad`` and ``ftrl`` from :mod:`jaxreg.adaptive`): take the
  optimizer's step on :math:`L_0` alone, then apply the proximal map of the penalty,
  :math:`w \leftarrow \operatorname{prox}_{η_t R}(w + u)`. For ``L1`` this is
  soft-thresholding, which sets coordinates to exactly 0.

Every transform reads the penalty from the regularizer object (``reg(params)``,
``jax.grad(reg)``, ``reg.prox(params, step)``), so ``where=``, sums and traced
strengths behave as they do there. All states are NamedTuples of arrays, and every
transform needs ``params`` in ``update``.

**Learning rates.** :func:`proximal` is chained after an optimizer and must use the
step size that optimizer used: the same float, or the same schedule, evaluated at the
same count. Its count starts at 0 and advances once per ``update``, as the count of
``optax.scale_by_learning_rate`` does, so ``optax.chain(optax.sgd(lr), proximal(reg,
lr))`` with one ``lr`` object (float or schedule) is exactly :func:`prox_sgd`. A chain
cannot be inspected from inside, so a mismatch (a schedule in one place, a float in
the other) is not detected there: pass the same object twice. :func:`prox_sgd` and
:func:`prox_adam` take the learning rate once and cannot mismatch. A learning rate
that is neither a number nor a callable raises ``TypeError``. A learning rate of 0 (a
schedule's last step, a warm-up's first) leaves the weights where they are, in every
proximal optimizer here: FISTA's momentum and FTRL's closed form included.

**Parameters** may be arrays or Python floats (a Python-float leaf is a parameter, moved
as a 0-d array, as Optax's ``apply_updates`` does). ``optax.inject_hyperparams`` takes
every callable argument for a schedule, a regularizer too: pass
``static_args=("reg",)``.

**Conventions.** ``L2(λ)`` is :math:`λ\sum w^2`, with gradient :math:`2λw`; Optax's
``add_decayed_weights(wd)`` adds :math:`wd\cdot w`. So:

* ``chain(add_gradient(L2(λ)), sgd(lr))`` is ``chain(add_decayed_weights(2λ),
  sgd(lr))``: the same update;
* ``chain(add_gradient(L2(λ)), adam(lr))`` is coupled L2 ("Adam + L2"), **not**
  ``adamw(lr, weight_decay=2λ)``;
* ``adamw(lr, weight_decay=2λ)`` is ``chain(scale_by_adam(), add_gradient(L2(λ)),
  scale_by_learning_rate(lr))``: decoupled weight decay;
* ``chain(sgd(lr), proximal(L2(λ), lr))`` decays implicitly,
  :math:`w \leftarrow (w - lr\,g)/(1 + 2\,lr\,λ)`.

Under Adam the coupled penalty gradient is divided by the preconditioner, so weights
with large gradients are barely decayed; AdamW adds the decay after the
preconditioner (Loshchilov & Hutter, "Decoupled weight decay regularization", ICLR
2019). Neither is wrong; they are different methods.

>>> import jax, jax.numpy as jnp, optax, jaxreg as jr
>>> params = jnp.array([0.5, -0.05, 2.0])
>>> tx = jr.transforms.prox_sgd(0.1, jr.L1(1.0))
>>> updates, state = tx.update(jnp.zeros(3), tx.init(params), params)
>>> optax.apply_updates(params, updates)
Array([0.4, 0. , 1.9], dtype=float32)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxreg import _checks
from jaxreg.regularizers import Regularizer

__all__ = [
    "NO_PARAMS_MSG",
    "ProximalState",
    "ProxSGDState",
    "FISTAState",
    "ProxAdamState",
    "ProxAdagradState",
    "FtrlState",
    "add_gradient",
    "proximal",
    "prox_sgd",
    "prox_adam",
    "prox_adagrad",
    "ftrl",
]

# Optax's own wording for a transform that needs params and got none (it has no
# public name there), so users meet the message they know.
NO_PARAMS_MSG = ("You are using a transformation that requires the current value of "
                 "parameters, but you are not passing `params` when calling `update`.")


class ProximalState(NamedTuple):
  """State of :func:`proximal`: the count its learning rate is evaluated at."""
  count: jax.Array  # shape=(), dtype=int32


class ProxSGDState(NamedTuple):
  """State of :func:`prox_sgd` without acceleration."""
  count: jax.Array  # shape=(), dtype=int32
  trace: optax.Params  # momentum buffer; optax.EmptyState() when momentum is None


class FISTAState(NamedTuple):
  r"""State of ``prox_sgd(..., accelerated=True)``.

  ``iterate`` is the last proximal point :math:`x_k` (exactly sparse under L1), while
  the params hold the extrapolated point :math:`y_{k+1}` where the next gradient is
  taken; the two agree at convergence.
  """
  count: jax.Array  # shape=(), dtype=int32
  t: jax.Array  # shape=(), dtype=float32: Beck & Teboulle's t_k, t_1 = 1
  iterate: optax.Params


class ProxAdamState(NamedTuple):
  """State of :func:`prox_adam`: Adam's moments (as in ``optax.ScaleByAdamState``)."""
  count: jax.Array  # shape=(), dtype=int32
  mu: optax.Updates
  nu: optax.Updates


def _check_regularizer(reg, *, prox: bool):
  if prox and not isinstance(reg, Regularizer):
    raise TypeError(
        f"reg must be a jaxreg regularizer (jr.L1, jr.GroupLasso, ...), got {reg!r}")
  if not callable(reg):
    raise TypeError(f"reg must be a regularizer or a function params -> scalar, got {reg!r}")
  return reg


def _check_learning_rate(learning_rate):
  """A non-negative scalar, or a schedule ``count -> scalar``."""
  if isinstance(learning_rate, Regularizer):
    # A regularizer is callable, so it would pass for a schedule: the arguments of
    # prox_sgd/prox_adam are (learning_rate, reg), those of proximal (reg, learning_rate).
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


def _learning_rate_at(learning_rate, count):
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _dtype(leaf):
  """A leaf's dtype; a Python-float leaf (a parameter, as in Optax) has jnp's."""
  return jnp.result_type(leaf)


def _descent(learning_rate, direction):
  """``-lr·d`` in ``d``'s dtype, the update ``optax.scale_by_learning_rate`` makes."""
  return jax.tree.map(lambda d: jnp.asarray(-learning_rate, d.dtype) * d, direction)


def _prox_updates(reg, params, updates, step):
  """Updates that move ``params`` to ``prox_{step·R}(params + updates)``."""
  # The prox acts on the point optax.apply_updates would produce, in the params' dtype.
  moved = jax.tree.map(lambda p, u: (p + u).astype(_dtype(p)), params, updates)
  new = reg.prox(moved, step)
  # A zeroed coordinate gets the update -p, and p + (-p) is exactly 0, provided -p is
  # not rounded: hence the wider of the two dtypes (the updates' own when they agree).
  return jax.tree.map(
      lambda n, p, u: (n - p).astype(jnp.promote_types(_dtype(p), _dtype(u))),
      new, params, updates)


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
  reg = _check_regularizer(reg, prox=False)
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
      raise ValueError(NO_PARAMS_MSG)
    # allow_int: integer leaves (counters, indices) get float0 and are left alone.
    grads = jax.grad(reg, allow_int=True)(params)
    updates = jax.tree.map(
        lambda u, g: u if u is None or g.dtype == jax.dtypes.float0
        else u + g.astype(u.dtype),
        updates, grads, is_leaf=lambda x: x is None)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def proximal(reg: Regularizer, learning_rate: optax.ScalarOrSchedule
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

  Args:
    reg: a jaxreg regularizer; its ``prox`` is used.
    learning_rate: the optimizer's learning rate, a float or an Optax schedule.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ProximalState`.

  >>> import jax.numpy as jnp, optax, jaxreg as jr
  >>> lr = 0.1
  >>> tx = optax.chain(optax.sgd(lr), proximal(jr.L1(1.0), lr))
  >>> params = jnp.array([1.0, 0.05, -0.5])
  >>> updates, _ = tx.update(jnp.zeros(3), tx.init(params), params)
  >>> optax.apply_updates(params, updates)
  Array([ 0.9,  0. , -0.4], dtype=float32)
  """
  reg = _check_regularizer(reg, prox=True)
  learning_rate = _check_learning_rate(learning_rate)

  def init_fn(params):
    del params
    return ProximalState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    step = _learning_rate_at(learning_rate, state.count)
    updates = _prox_updates(reg, params, updates, step)
    return updates, ProximalState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def prox_sgd(learning_rate: optax.ScalarOrSchedule, reg: Regularizer, *,
             momentum: Optional[float] = None, nesterov: bool = False,
             accelerated: bool = False) -> optax.GradientTransformation:
  r"""Proximal gradient descent; FISTA with ``accelerated=True``.

  Minimizes :math:`L_0(w) + R(w)` with :math:`g = \nabla L_0` (the updates given):

  .. math:: w_{k+1} = \operatorname{prox}_{η_k R}(w_k - η_k g_k)

  This is ISTA for ``L1``. With ``momentum`` the gradient step is Optax's heavy-ball
  (or Nesterov) step, so ``prox_sgd(lr, reg, momentum=m)`` equals
  ``optax.chain(optax.sgd(lr, momentum=m), proximal(reg, lr))``.

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
  point :math:`x_k` (exactly sparse) is ``state.iterate``.

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
  learning_rate = _check_learning_rate(learning_rate)
  reg = _check_regularizer(reg, prox=True)
  if accelerated and momentum is not None:
    raise ValueError(
        f"accelerated=True (FISTA) brings its own momentum sequence; got momentum={momentum}")
  if nesterov and momentum is None:
    raise ValueError("nesterov=True needs a momentum, got momentum=None")
  if momentum is not None:
    _checks.check_nonnegative(momentum, "momentum")
  if accelerated:
    return _fista(learning_rate, reg)

  trace = optax.trace(decay=momentum, nesterov=nesterov) if momentum is not None else None

  def init_fn(params):
    return ProxSGDState(
        count=jnp.zeros([], jnp.int32),
        trace=optax.EmptyState() if trace is None else trace.init(params).trace)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    new_trace = state.trace
    if trace is not None:
      updates, trace_state = trace.update(updates, optax.TraceState(trace=state.trace))
      new_trace = trace_state.trace
    # One count and one learning rate for the step and the prox: they cannot disagree.
    step = _learning_rate_at(learning_rate, state.count)
    updates = _prox_updates(reg, params, _descent(step, updates), step)
    return updates, ProxSGDState(count=optax.safe_increment(state.count),
                                 trace=new_trace)

  return optax.GradientTransformation(init_fn, update_fn)


def _fista(learning_rate, reg) -> optax.GradientTransformation:
  """``prox_sgd(..., accelerated=True)``; see its docstring for the recursion."""

  def init_fn(params):
    return FISTAState(count=jnp.zeros([], jnp.int32), t=jnp.ones([], jnp.float32),
                      iterate=jax.tree.map(jnp.asarray, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    step = _learning_rate_at(learning_rate, state.count)
    to_x = _prox_updates(reg, params, _descent(step, updates), step)
    x = jax.tree.map(lambda p, u: (p + u).astype(_dtype(p)), params, to_x)
    # A learning rate of 0 is a step not taken: the params, t and the iterate stay
    # (the momentum alone would otherwise move the params).
    moving = jnp.asarray(step) > 0
    t_next = jnp.where(moving, (1 + jnp.sqrt(1 + 4 * state.t ** 2)) / 2, state.t)
    beta = jnp.where(moving, (state.t - 1) / t_next, 0.0)
    x = jax.tree.map(lambda x, x_prev: jnp.where(moving, x, x_prev), x, state.iterate)
    y_next = jax.tree.map(
        lambda x, x_prev: (x + jnp.asarray(beta, x.dtype) * (x - x_prev)).astype(x.dtype),
        x, state.iterate)
    updates = jax.tree.map(
        lambda y, p, u: jnp.where(moving, y - p, 0).astype(
            jnp.promote_types(_dtype(p), _dtype(u))),
        y_next, params, updates)
    return updates, FISTAState(count=optax.safe_increment(state.count),
                               t=t_next, iterate=x)

  return optax.GradientTransformation(init_fn, update_fn)


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
  learning_rate = _check_learning_rate(learning_rate)
  reg = _check_regularizer(reg, prox=True)
  if not reg.separable:
    raise ValueError(
        f"prox_adam needs a penalty whose prox takes one step per coordinate; {reg!r} "
        "has none in closed form: use prox_sgd, or optax.adam followed by proximal")
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype)

  def init_fn(params):
    return ProxAdamState(*adam.init(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    direction, adam_state = adam.update(updates, optax.ScaleByAdamState(*state))
    # The schedule is read at the count before this step, as optax.adam reads it.
    step = _learning_rate_at(learning_rate, state.count)
    nu_hat = optax.tree.bias_correction(adam_state.nu, b2, adam_state.count)
    steps = jax.tree.map(lambda v: step / (jnp.sqrt(v + eps_root) + eps), nu_hat)
    updates = _prox_updates(reg, params, _descent(step, direction), steps)
    return updates, ProxAdamState(*adam_state)

  return optax.GradientTransformation(init_fn, update_fn)


# Adagrad-style proximal optimizers live in jaxreg.adaptive, which builds on the
# helpers above; loaded on first access, since that module imports this one.
_ADAPTIVE = ("prox_adagrad", "ftrl", "ProxAdagradState", "FtrlState")


def __getattr__(name):
  if name in _ADAPTIVE:
    import jaxreg.adaptive  # pylint: disable=g-import-not-at-top
    return getattr(jaxreg.adaptive, name)
  raise AttributeError(f"module 'jaxreg.transforms' has no attribute {name!r}")
