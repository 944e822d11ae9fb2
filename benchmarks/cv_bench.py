"""Cross-validating a grid as one vmapped program against a loop of jitted fits.

16 L2 strengths x 5 folds of a small ReLU MLP (32 -> hidden -> 10, 500 generated rows,
Adam, weights and biases initialized from the fold's key), trained in three ways:

* *minibatch* (the headline, and the target): 300 steps of 64 rows, the way a small
  MLP is usually trained. Each step draws its rows from all 500 with the fold's key and
  weights them by the fold's 0/1 weights (a weighted mean loss), as ``cross_validate``'s
  ``fit(hparams, key, data, weights)`` contract allows;
* *full-batch*: 100 steps over all 500 rows, where each step is a matmul over every
  row and the CPU's arithmetic, not the cost of an operation, sets the time;
* *narrow minibatch*: 8 hidden units, 16 rows a step, about the least work a step can
  do, where the fixed cost of each operation weighs most.

In each, ``jaxreg.cv.cross_validate`` runs all 80 fits under one ``vmap`` (full runs
add ``batch_size=16``: chunks of 16 under ``lax.map``) against the same 80 fits as calls
of one jitted function in a Python loop, the way a hand-written sweep runs them: one
compile, the strength, key and weights as arguments, the calls dispatched one after
another without waiting for each (JAX's asynchronous dispatch), the 80 losses waited
for at the end. Everything is compiled before the clock starts; the compile times are
reported on their own, since the loop compiles one fit and cross_validate the batched
program.

A last table says why the speed-up stays small where a step is made of matmuls: a
matmul of each setup's first-layer shape timed inside a compiled loop, alone and
batched 80 times with an operand of its own per fit (as ``vmap`` makes every layer
after the first), per fit.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg as jr
from benchmarks import report
from benchmarks import targets
from benchmarks import timing
from jaxreg import cv

ROWS, FEATURES, CLASSES = 500, 32, 10
LEARNING_RATE = 1e-2
STRENGTHS = np.logspace(-5, -1, 16)
FOLDS = 5
TARGET = 5.0
LOOP = "Python loop of jitted fits"
VMAPPED = "cross_validate (one vmap)"
CHUNKED = "cross_validate (batch_size=16)"
FULL = timing.Budget(8.0, 3, 20)
QUICK = timing.Budget(1.0, 2, 3)


@dataclasses.dataclass(frozen=True)
class Setup:
  name: str
  hidden: int
  batch: int | None
  """Rows drawn per step; None trains on all rows every step."""
  steps: int

  def describe(self) -> str:
    rows = "all 500 rows" if self.batch is None else f"{self.batch} rows"
    return f"32 → {self.hidden} → 10, {self.steps} Adam steps of {rows}"


MINIBATCH = Setup("minibatch", hidden=64, batch=64, steps=300)
NARROW = Setup("narrow minibatch", hidden=8, batch=16, steps=300)
SETUPS = (MINIBATCH, Setup("full-batch", hidden=64, batch=None, steps=100), NARROW)


def _data():
  """Inputs and one-hot labels of a noisy linear teacher (one-hot: the loss picks the
  label's logit with a product, not a gather, which XLA's CPU runs slowly under vmap)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
  teacher = rng.normal(size=(FEATURES, CLASSES))
  labels = np.argmax(x @ teacher + rng.gumbel(size=(ROWS, CLASSES)), axis=1)
  return jnp.asarray(x), jax.nn.one_hot(labels, CLASSES)


def _init(key, hidden: int):
  k1, k2 = jax.random.split(key)
  return {"hidden": {"kernel": jax.random.normal(k1, (FEATURES, hidden)) * FEATURES**-0.5,
                     "bias": jnp.zeros(hidden)},
          "out": {"kernel": jax.random.normal(k2, (hidden, CLASSES)) * hidden**-0.5,
                  "bias": jnp.zeros(CLASSES)}}


def _cross_entropy(params, data, weights):
  x, one_hot = data
  hidden = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  logits = hidden @ params["out"]["kernel"] + params["out"]["bias"]
  losses = jax.nn.logsumexp(logits, axis=1) - jnp.sum(logits * one_hot, axis=1)
  # At least 1: a minibatch of held-out rows only (chance 0.2^64) then adds nothing.
  return weights @ losses / jnp.maximum(weights.sum(), 1.0)


def _make_fit(setup: Setup):
  optimizer = optax.adam(LEARNING_RATE)

  def fit(strength, key, data, weights):
    penalty = jr.L2(strength, where=jr.select.kernels())
    init_key, batch_key = jax.random.split(key)

    def step(state, step_key):
      params, opt_state = state
      rows, row_weights = data, weights
      if setup.batch is not None:
        index = jax.random.randint(step_key, (setup.batch,), 0, ROWS)
        rows, row_weights = jax.tree.map(lambda d: d[index], data), weights[index]
      loss = lambda p: _cross_entropy(p, rows, row_weights) + penalty(p)
      updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state)
      return (optax.apply_updates(params, updates), opt_state), None

    params = _init(init_key, setup.hidden)
    state = (params, optimizer.init(params))
    return jax.lax.scan(step, state, jax.random.split(batch_key, setup.steps))[0][0]

  return fit


@dataclasses.dataclass(frozen=True)
class Measured:
  setup: Setup
  seconds: dict[str, float]
  """Median seconds for all 80 fits, by contestant."""
  compile_seconds: dict[str, float]
  """Seconds to lower and compile, by contestant (the loop: its one jitted fit)."""
  max_difference: float
  """Largest |mean loss| difference between the loop and a cross_validate run."""

  def speedup(self, name: str = VMAPPED) -> float:
    return self.seconds[LOOP] / self.seconds[name]


@dataclasses.dataclass(frozen=True)
class MatmulCost:
  """Microseconds one matmul of ``shape`` (rows, inner, out) costs inside a compiled
  loop: alone, and per fit when the 80 fits' matmuls run as one batched matmul."""
  shape: tuple[int, int, int]
  alone: float
  batched_per_fit: float


@dataclasses.dataclass(frozen=True)
class Result:
  setups: list[Measured]
  matmuls: list[MatmulCost]

  def section(self) -> list[str]:
    rows = [[m.setup.name, m.setup.describe(), name, f"{s * 1e3:.4g}",
             f"{m.speedup(name):.1f}×", f"{m.compile_seconds[name]:.1f}",
             f"{m.max_difference:.0e}"]
            for m in self.setups for name, s in m.seconds.items()]
    return [
        "## Cross-validation: one vmapped grid against a loop of fits", "",
        f"{len(STRENGTHS)} L2 strengths × {FOLDS} folds of a ReLU MLP on {ROWS} generated "
        "rows, Adam; a minibatch draws its rows from all rows with the fold's key and "
        "weights them by the fold's 0/1 weights. The loop calls one jitted fit 80 times "
        "(asynchronous dispatch, waited for at the end). Median milliseconds for all "
        "80 fits, compile excluded; compile time on its own; *difference*: the largest "
        "difference of a mean held-out loss from the loop's. The target is on the "
        f"{MINIBATCH.name} setup.", "",
        *report._table(["setup", "model and training", "how", "ms for 80 fits",
                        "speed-up over the loop", "compile (s)", "difference"], rows), "",
        "What batching can save in a step made of matmuls: a matmul of each setup's "
        "first-layer shape inside a compiled loop (`lax.scan`, its operand changed "
        "every step), alone and as one batched matmul of 80 with a left operand of its "
        "own per fit (as in every layer after the first, whose input differs from fit "
        "to fit, and in the backward pass), per fit. XLA's CPU code runs a batched "
        "matmul as one small product after another, so it saves little.", "",
        *report._table(["rows × inner × out", "µs alone", "µs per fit, batched × 80",
                        "saved"],
                       [[" × ".join(map(str, m.shape)), f"{m.alone:.2f}",
                         f"{m.batched_per_fit:.2f}", f"{m.alone / m.batched_per_fit:.1f}×"]
                        for m in self.matmuls]), "",
    ]

  def targets(self) -> list[targets.Target]:
    (headline,) = [m for m in self.setups if m.setup == MINIBATCH]
    ratio = headline.speedup()
    return [targets.Target(
        f"cross-validation, {len(STRENGTHS)} strengths × {FOLDS} folds, {MINIBATCH.name} "
        f"MLP: loop / one vmap = {ratio:.1f}× (target ≥ {TARGET:g}×)", ratio >= TARGET)]


def _compiled(fn, *args):
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def _measure(setup: Setup, data, quick: bool, log) -> Measured:
  grid = jnp.asarray(STRENGTHS, jnp.float32)
  key = jax.random.key(0)
  folds = cv.kfold(ROWS, FOLDS)
  fit = _make_fit(setup)

  def whole_grid(batch_size):
    return lambda grid, data: cv.cross_validate(
        fit, _cross_entropy, data, grid, folds=folds, key=key, batch_size=batch_size).mean

  # The chunked program only in full runs: its compile would take the quick budget.
  sizes = {VMAPPED: None} if quick else {VMAPPED: None, CHUNKED: 16}
  programs = {name: _compiled(whole_grid(size), grid, data) for name, size in sizes.items()}
  # The loop sees what cross_validate gives each fit: the fold's key and 0/1 weights.
  fold_keys = jax.random.split(key, FOLDS)
  trains = [(folds != f).astype(jnp.float32) for f in range(FOLDS)]
  calls = [(grid[g], fold_keys[f], data, trains[f])
           for g in range(len(STRENGTHS)) for f in range(FOLDS)]
  one_fit = lambda strength, key, data, train: _cross_entropy(
      fit(strength, key, data, train), data, 1 - train)
  single, single_compile = _compiled(one_fit, *calls[0])

  def loop():
    return jnp.stack([single(*args) for args in calls]).reshape(len(STRENGTHS), FOLDS)

  contestants = {LOOP: loop, **{name: (lambda c=c: c(grid, data))
                                for name, (c, _) in programs.items()}}
  # timing.compare compiles each case into one program, and the loop has to stay a
  # Python loop: the same protocol, by hand. Two calls of each before the rounds: the
  # first checks the results, the second sizes the rounds.
  looped_mean = loop().mean(axis=1)
  difference = max(float(jnp.max(jnp.abs(fn() - looped_mean)))
                   for name, fn in contestants.items() if name != LOOP)
  budget = QUICK if quick else FULL
  per_round = sum(_seconds(fn) for fn in contestants.values())
  samples = {name: [] for name in contestants}
  for _ in range(budget.rounds(per_round)):
    for name, fn in contestants.items():
      samples[name].append(_seconds(fn))
  seconds = {name: statistics.median(s) for name, s in samples.items()}
  log(f"  {setup.name}: loop {seconds[LOOP] * 1e3:.0f} ms, "
      f"one vmap {seconds[VMAPPED] * 1e3:.0f} ms")
  return Measured(setup, seconds,
                  {LOOP: single_compile, **{n: c for n, (_, c) in programs.items()}},
                  difference)


_LOOP_STEPS = 300


def _matmul_loop(shape, fits: int, with_matmul: bool):
  """A compiled loop of ``_LOOP_STEPS`` steps, each a matmul of ``shape`` per fit (or
  only what surrounds it), whose left operand depends on the carry so that XLA cannot
  take the product out of the loop."""
  rows, inner, out = shape

  def loop(x, w):
    def step(carry, _):
      left = x + carry
      product = jnp.einsum("fri,fio->fro", left, w) if with_matmul else left
      return carry + jnp.tanh(product[:, :1, :1]), None
    return jax.lax.scan(step, jnp.zeros((fits, 1, 1)), None, length=_LOOP_STEPS)[0]

  keys = jax.random.split(jax.random.key(1))
  return loop, (jax.random.normal(keys[0], (fits, rows, inner)),
                jax.random.normal(keys[1], (fits, inner, out)) * 0.1)


def _matmul_costs(quick: bool) -> list[MatmulCost]:
  fits = len(STRENGTHS) * FOLDS
  costs = []
  for setup in (MINIBATCH, NARROW):
    shape = (setup.batch, FEATURES, setup.hidden)
    cases = {f"{n} {part}": _matmul_loop(shape, n, part == "with")
             for n in (1, fits) for part in ("with", "without")}
    seconds = timing.compare(cases, QUICK if quick else timing.Budget(4.0, 5, 50))
    per_step = {n: (seconds[f"{n} with"] - seconds[f"{n} without"]) / _LOOP_STEPS * 1e6
                for n in (1, fits)}
    costs.append(MatmulCost(shape, per_step[1], per_step[fits] / fits))
  return costs


def run(quick: bool, log) -> Result:
  data = _data()
  setups = SETUPS[:1] if quick else SETUPS
  return Result([_measure(setup, data, quick, log) for setup in setups],
                _matmul_costs(quick))


def _seconds(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


if __name__ == "__main__":
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="the headline setup only, "
                      "fewer rounds")
  result = run(parser.parse_args().quick, print)
  print("\n".join(result.section() + [t.line() for t in result.targets()]))
