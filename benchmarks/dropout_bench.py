"""Dropout speed: forward, and forward+backward, for every implementation in
:data:`benchmarks.implementations.SPEED`, on the same arrays with the same key.

Forward+backward is ``jax.vjp`` of the dropout at ``x`` followed by the pullback of a
fixed cotangent ``g``, returning both the output and ``dx``: what one training step
asks of a dropout layer, including any mask it stores or draws again.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import jax

from benchmarks import implementations
from benchmarks import timing

_WIDTH = 1024  # Arrays are (size // _WIDTH, _WIDTH), the shape of a batch of activations.
PASSES = ("forward", "forward+backward")


@dataclasses.dataclass(frozen=True)
class Row:
  size: int
  rate: float
  dtype: str
  pass_: str
  seconds: dict[str, float]
  """Median seconds per call, by implementation name."""


def _forward(drop, rate):
  return lambda key, x, g: drop(key, x, rate)


def _forward_backward(drop, rate):
  def step(key, x, g):
    y, pullback = jax.vjp(lambda x: drop(key, x, rate), x)
    return y, pullback(g)[0]
  return step


BUILDERS = {"forward": _forward, "forward+backward": _forward_backward}


def run(sizes: Sequence[int], rates: Sequence[float], dtypes: Sequence[str],
        budget: timing.Budget, log=print) -> list[Row]:
  rows = []
  key = jax.random.key(0)
  for dtype, size in itertools.product(dtypes, sizes):
    shape = (size // _WIDTH, _WIDTH)
    x_key, g_key = jax.random.split(jax.random.key(size))
    x = jax.random.normal(x_key, shape, dtype)
    g = jax.random.normal(g_key, shape, dtype)
    for rate, pass_ in itertools.product(rates, PASSES):
      build = BUILDERS[pass_]
      cases = {name: (build(drop, rate), (key, x, g))
               for name, drop in implementations.SPEED.items()}
      rows.append(Row(size, rate, dtype, pass_, timing.compare(cases, budget)))
      log(f"  dropout {dtype} 2^{size.bit_length() - 1} rate={rate} {pass_}: done")
  return rows
