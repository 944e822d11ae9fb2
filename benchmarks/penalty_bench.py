"""Penalties and proximal maps over a ~10M-parameter tree, against a fused floor.

Each jaxreg operation is timed beside the peer a user would otherwise write or import
(a hand-written sum over leaves, ``optax.add_decayed_weights``, jaxopt's
``prox_lasso``) and beside its floor: the same arithmetic done once on one vector that
holds every parameter, flattened before the clock starts. That floor is the cost of
the work itself, free of any per-leaf overhead. ``jnp.vdot`` of the vector with
itself, one read of every parameter, is shown as the absolute floor.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jaxopt
import optax

import jaxreg as jr
from benchmarks import timing

# The shapes of a Dense stack with ~10.5M parameters: kernels and their biases.
LAYERS = ((1024, 2048), (2048, 2048), (2048, 1024), (1024, 1024), (1024, 1000))
STRENGTH = 1e-4
STEP = 1e-3


@dataclasses.dataclass(frozen=True)
class Row:
  operation: str
  jaxreg: float
  """Median seconds of the jaxreg call."""
  peer: str
  peer_seconds: float
  floor: float
  """Median seconds of the same arithmetic in one pass over the flattened vector."""


@dataclasses.dataclass(frozen=True)
class Result:
  parameters: int
  vdot: float
  """Median seconds of ``jnp.vdot(v, v)`` over the flattened vector: one read."""
  rows: list[Row]


def make_params(key) -> dict:
  """A Flax-style params dict of Dense layers with :data:`LAYERS` shapes."""
  params = {}
  for i, (fan_in, fan_out) in enumerate(LAYERS):
    key, sub = jax.random.split(key)
    params[f"Dense_{i}"] = {
        "kernel": jax.random.normal(sub, (fan_in, fan_out)) * fan_in**-0.5,
        "bias": jnp.full((fan_out,), 0.01),
    }
  return params


def _hand_l2(params):
  return STRENGTH * sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(params))


def _hand_l1(params):
  return STRENGTH * sum(jnp.sum(jnp.abs(w)) for w in jax.tree.leaves(params))


def _operations():
  """(operation, jaxreg, peer name, peer, floor): the first two take ``(params, grads)``
  trees, the floor takes the same two flattened."""
  l1, l2 = jr.L1(STRENGTH), jr.L2(STRENGTH)
  add_l2 = jr.transforms.add_gradient(l2)
  # L2(λ) has gradient 2λw: the same update as add_decayed_weights(2λ).
  decay = optax.add_decayed_weights(2 * STRENGTH)
  threshold = STRENGTH * STEP
  return (
      ("L2 value",
       lambda p, g: l2(p),
       "hand-written sum", lambda p, g: _hand_l2(p),
       lambda v, g: STRENGTH * jnp.vdot(v, v)),
      ("L2 value+grad",
       lambda p, g: jax.value_and_grad(l2)(p),
       "hand-written sum", lambda p, g: jax.value_and_grad(_hand_l2)(p),
       lambda v, g: (STRENGTH * jnp.vdot(v, v), 2 * STRENGTH * v)),
      ("L1 value+grad",
       lambda p, g: jax.value_and_grad(l1)(p),
       "hand-written sum", lambda p, g: jax.value_and_grad(_hand_l1)(p),
       lambda v, g: (STRENGTH * jnp.sum(jnp.abs(v)), STRENGTH * jnp.sign(v))),
      ("L1 prox",
       lambda p, g: l1.prox(p, STEP),
       "jaxopt prox_lasso", lambda p, g: jaxopt.prox.prox_lasso(p, STRENGTH, STEP),
       lambda v, g: v - jnp.clip(v, -threshold, threshold)),
      ("L2 gradient added to updates",
       lambda p, g: add_l2.update(g, add_l2.init(p), p)[0],
       "optax.add_decayed_weights", lambda p, g: decay.update(g, decay.init(p), p)[0],
       lambda v, g: g + 2 * STRENGTH * v),
  )


def _flatten(tree):
  return jnp.concatenate([jnp.ravel(w) for w in jax.tree.leaves(tree)])


def run(budget: timing.Budget) -> Result:
  params = make_params(jax.random.key(0))
  grads = jax.tree.map(lambda w: jnp.full_like(w, 0.5), params)
  trees, flats = (params, grads), (_flatten(params), _flatten(grads))
  cases = {"vdot": (lambda v, g: jnp.vdot(v, v), flats)}
  operations = _operations()
  for name, ours, _, peer, floor in operations:
    cases[f"{name}/jaxreg"] = (ours, trees)
    cases[f"{name}/peer"] = (peer, trees)
    cases[f"{name}/floor"] = (floor, flats)
  seconds = timing.compare(cases, budget)
  rows = [Row(name, seconds[f"{name}/jaxreg"], peer_name, seconds[f"{name}/peer"],
              seconds[f"{name}/floor"])
          for name, _, peer_name, _, _ in operations]
  return Result(flats[0].size, seconds["vdot"], rows)
