r"""FISTA, ``prox_sgd(..., accelerated=True)``, and where to find its sparse iterate.

Optax takes the gradient at the params, so under FISTA the params are the
extrapolated points :math:`y_k` and the proximal points :math:`x_k`, the exactly
sparse ones, live in the optimizer state: :func:`fista_iterate` finds them there.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxreg.transforms import _base


class FISTAState(NamedTuple):
  r"""State of ``prox_sgd(..., accelerated=True)``.

  ``iterate`` is the last proximal point :math:`x_k` (exactly sparse under L1), while
  the params hold the extrapolated point :math:`y_{k+1}` where the next gradient is
  taken; the two agree at convergence.
  """
  count: jax.Array  # shape=(), dtype=int32
  t: jax.Array  # shape=(), dtype=float32: Beck & Teboulle's t_k, t_1 = 1
  iterate: optax.Params


def fista(learning_rate, reg) -> optax.GradientTransformation:
  """``prox_sgd(..., accelerated=True)`` with checked arguments; see its docstring."""

  def init_fn(params):
    return FISTAState(count=jnp.zeros([], jnp.int32), t=jnp.ones([], jnp.float32),
                      iterate=jax.tree.map(jnp.asarray, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_base.NO_PARAMS_MSG)
    step = _base.learning_rate_at(learning_rate, state.count)
    to_x = _base.prox_updates(reg, params, _base.descent(step, updates), step)
    x = jax.tree.map(lambda p, u: (p + u).astype(_base.leaf_dtype(p)), params, to_x)
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
            jnp.promote_types(_base.leaf_dtype(p), _base.leaf_dtype(u))),
        y_next, params, updates)
    return updates, FISTAState(count=optax.safe_increment(state.count),
                               t=t_next, iterate=x)

  return optax.GradientTransformation(init_fn, update_fn)


def fista_iterate(opt_state) -> optax.Params:
  r"""FISTA's proximal point :math:`x_k`, found anywhere in an optimizer state.

  Under ``prox_sgd(lr, reg, accelerated=True)`` the params are the extrapolated point
  :math:`y_{k+1}`, which is not sparse; the proximal point :math:`x_k`, with the exact
  zeros of an L1 penalty, is the ``iterate`` of the :class:`FISTAState`. This returns
  it from the state of the whole optimizer, wherever FISTA sits in it: alone, in
  ``optax.chain``, ``optax.masked`` (the leaves masked out are ``optax.MaskedNode()``),
  ``optax.inject_hyperparams``, or a Flax ``nnx.Optimizer``: pass
  ``optimizer.opt_state``, and get an ``nnx.State`` of arrays, which
  ``nnx.update(model, ...)`` writes into a model.

  Args:
    opt_state: an Optax state (a pytree) holding exactly one :class:`FISTAState`.

  Returns:
    The iterate, a pytree shaped like the params.

  Raises:
    ValueError: when ``opt_state`` holds no FISTA state, or more than one.

  >>> import jax, jax.numpy as jnp, optax, jaxreg as jr
  >>> loss = lambda w: 0.5 * jnp.sum((w - jnp.array([2.0, 0.3, -1.0])) ** 2)
  >>> tx = optax.chain(optax.clip_by_global_norm(10.0),
  ...                  jr.transforms.prox_sgd(1.0, jr.L1(0.5), accelerated=True))
  >>> w = jnp.zeros(3)
  >>> state = tx.init(w)
  >>> for _ in range(3):
  ...   updates, state = tx.update(jax.grad(loss)(w), state, w)
  ...   w = optax.apply_updates(w, updates)
  >>> fista_iterate(state)
  Array([ 1.5,  0. , -0.5], dtype=float32)
  """
  is_fista = lambda node: isinstance(node, FISTAState)
  found = [(path, node) for path, node in
           jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=is_fista)[0]
           if is_fista(node)]
  if not found:
    raise ValueError(
        "fista_iterate found no FISTA state in opt_state: it needs the state of "
        "prox_sgd(..., accelerated=True) or of an optimizer that contains it (for an "
        f"nnx.Optimizer, pass optimizer.opt_state); got {type(opt_state).__name__}")
  if len(found) > 1:
    where = ", ".join(jax.tree_util.keystr(path) for path, _ in found)
    raise ValueError(
        f"fista_iterate found {len(found)} FISTA states in opt_state, at {where}; "
        "pass the part of the state that holds the one you want")
  return _arrays(found[0][1].iterate)


def _arrays(tree):
  """``tree`` with Flax NNX variables (an ``nnx.Optimizer`` wraps its state's leaves
  in them) replaced by their arrays; jaxreg's core does not import Flax itself, and a
  tree can hold NNX variables only once Flax NNX is loaded."""
  nnx = sys.modules.get("flax.nnx")
  return tree if nnx is None else nnx.as_pure(tree)
