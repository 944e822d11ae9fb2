"""What the backward pass of a dropout keeps in memory, from XLA's own accounting.

The figure is ``compiled.memory_analysis().temp_size_in_bytes`` of ``jit(grad(loss))``
with the dropout, minus the same without it, per dropped-out element: the scratch
memory that the dropout adds to a training step. A bool mask saved for the backward
pass costs 1 byte per element, a packed one 1/8, a mask drawn again from the key 0;
a generator that materializes its state (threefry) adds its own working set on top.
Nothing is timed, so the figures are exact and do not depend on the machine's load.

* ``single``: one dropout between ``sin`` and a weighted sum. The figure is a slope,
  measured at two sizes, so that a fixed cost (a few words for the key) is not
  mistaken for a per-element one.
* ``mlp``: a 4-layer, 2048-wide tanh MLP on a batch of 256 with dropout after every
  layer, divided by the elements dropped. It includes each dropout's output, which
  the next layer's weight gradient needs whatever the dropout stores.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks import implementations

RATE = 0.1
SINGLE_SHAPES = ((1024, 2048), (2048, 2048))
MLP_LAYERS, MLP_WIDTH, MLP_BATCH = 4, 2048, 256


@dataclasses.dataclass(frozen=True)
class Result:
  single: dict[str, float]
  """Bytes per element added by one dropout (a slope), by implementation name."""
  mlp: dict[str, float]
  """Bytes per dropped element added to the MLP's gradient, by implementation name."""


def _temp_bytes(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def _single(drop):
  # sin() gives the dropout an input that is not a parameter, as in a network.
  def loss(x, c, key):
    h = jnp.sin(x)
    if drop is not None:
      h = drop(key, h, RATE)
    return jnp.sum(h * c)
  return jax.grad(loss)


def _mlp(drop):
  def loss(kernels, x, key):
    for i, w in enumerate(kernels):
      x = jnp.tanh(x @ w)
      if drop is not None:
        x = drop(jax.random.fold_in(key, i), x, RATE)
    return jnp.sum(x)
  return jax.grad(loss)


def _extra_bytes(make, drop, args) -> int:
  return _temp_bytes(make(drop), *args) - _temp_bytes(make(None), *args)


def _single_slope(drop, key) -> float:
  small, large = (
      _extra_bytes(_single, drop, (jnp.ones(shape), jnp.full(shape, 2.0), key))
      for shape in SINGLE_SHAPES)
  small_size, large_size = (shape[0] * shape[1] for shape in SINGLE_SHAPES)
  return (large - small) / (large_size - small_size)


def _mlp_per_element(drop, key) -> float:
  kernels = [jnp.full((MLP_WIDTH, MLP_WIDTH), 0.01) for _ in range(MLP_LAYERS)]
  args = (kernels, jnp.ones((MLP_BATCH, MLP_WIDTH)), key)
  return _extra_bytes(_mlp, drop, args) / (MLP_LAYERS * MLP_BATCH * MLP_WIDTH)


def run() -> Result:
  key = jax.random.key(0)
  return Result(
      single={name: _single_slope(drop, key)
              for name, drop in implementations.RESIDUAL.items()},
      mlp={name: _mlp_per_element(drop, key)
           for name, drop in implementations.RESIDUAL.items()})
