"""What regularization adds to a whole training step.

A plain-JAX MLP (512 -> 1024 -> 1024 -> 1024 -> 10, ReLU, batch 128, softmax
cross-entropy) trained with Adam in one jitted step. The variants differ only in the
regularization, so each step's time divided by the unregularized one is the price of
that regularization in a realistic setting, where the matmuls dominate:

* dropout (rate 0.1 after every hidden layer) plus an L2 penalty added to the loss,
  with jaxreg (``jr.dropout`` and ``jr.L2``) or with ``flax.linen.Dropout`` and the
  penalty written by hand;
* ``prox_adam`` with an L1 penalty, against plain ``optax.adam``, both as a whole step
  and as the optimizer update alone.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

import jaxreg as jr
from benchmarks import implementations
from benchmarks import timing

WIDTHS = (512, 1024, 1024, 1024, 10)
BATCH = 128
RATE = 0.1
STRENGTH = 1e-4
LEARNING_RATE = 1e-3
BASELINE = "adam, no regularization"


@dataclasses.dataclass(frozen=True)
class Result:
  step: dict[str, float]
  """Median seconds per training step, by variant; :data:`BASELINE` is among them."""
  update: dict[str, float]
  """Median seconds of the optimizer update alone, ``optax.adam`` and ``prox_adam``."""


def _init(key):
  params = []
  for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
    key, sub = jax.random.split(key)
    params.append({"w": jax.random.normal(sub, (fan_in, fan_out)) * fan_in**-0.5,
                   "b": jnp.zeros(fan_out)})
  return params


def _hand_l2(params):
  return STRENGTH * sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(params))


def _loss(params, x, labels, key, drop, penalty):
  for i, layer in enumerate(params[:-1]):
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
    if drop is not None:
      x = drop(jax.random.fold_in(key, i), x, RATE)
  logits = x @ params[-1]["w"] + params[-1]["b"]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss if penalty is None else loss + penalty(params)


def _step(tx, drop=None, penalty=None):
  def step(params, state, x, labels, key):
    loss, grads = jax.value_and_grad(_loss)(params, x, labels, key, drop, penalty)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss
  return step


def _update(tx):
  def update(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return update


def run(budget: timing.Budget) -> Result:
  data_key, params_key, labels_key = jax.random.split(jax.random.key(0), 3)
  params = _init(params_key)
  x = jax.random.normal(data_key, (BATCH, WIDTHS[0]))
  labels = jax.random.randint(labels_key, (BATCH,), 0, WIDTHS[-1])
  key = jax.random.key(1)
  adam = optax.adam(LEARNING_RATE)
  prox_adam = jr.transforms.prox_adam(LEARNING_RATE, jr.L1(STRENGTH))
  variants = {
      BASELINE: (adam, _step(adam)),
      "adam + jaxreg dropout + jr.L2": (
          adam, _step(adam, implementations.jaxreg_default, jr.L2(STRENGTH))),
      "adam + flax.linen Dropout + hand-written L2": (
          adam, _step(adam, implementations.flax_linen, _hand_l2)),
      "jr.transforms.prox_adam with jr.L1": (prox_adam, _step(prox_adam)),
  }
  step = timing.compare(
      {name: (fn, (params, tx.init(params), x, labels, key))
       for name, (tx, fn) in variants.items()}, budget)
  grads = jax.tree.map(jnp.ones_like, params)
  update = timing.compare(
      {name: (_update(tx), (params, tx.init(params), grads))
       for name, tx in (("optax.adam", adam), ("jr.transforms.prox_adam", prox_adam))},
      budget)
  return Result(step, update)
