"""Attention dropout in a transformer: what it adds to a training step, and the memory
``grad`` needs per attention weight.

**Step time.** One pre-LN transformer block (``x + MHA(LN(x))``, ``x + MLP(LN(x))``, MLP
4× wide, GELU) at batch 8, length 256, width 256, 8 heads, trained by a jitted Adam
step on a squared error, in linen (``nn.MultiHeadDotProductAttention``) and in NNX
(``nnx.MultiHeadAttention``). Three variants per framework differ only in attention
dropout: none (Flax's module at rate 0), Flax's (rate 0.1, its default
``attention_fn``), and jaxreg's (rate 0.1, ``attention_fn=jr.attention.dot_product_attention``).
The figure of merit is the time each dropout *adds* to the step without dropout.

**Memory.** ``temp_size_in_bytes`` of ``jit(grad(loss))`` of the attention alone (batch
1, 8 heads, depth 64, rate 0.1, no broadcast of the mask), from XLA's
``memory_analysis()``: nothing is run, so the figures are exact and cost compile time
only. Per attention weight (``8·T²`` of them) at one length, and the longest length
(in steps of 256) whose ``grad`` fits a fixed scratch budget, for Flax's
``dot_product_attention``, jaxreg's dense path and jaxreg's blockwise path.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg as jr
from benchmarks import report
from benchmarks import targets
from benchmarks import timing

BATCH, LENGTH, WIDTH, HEADS = 8, 256, 256, 8
RATE = 0.1
LEARNING_RATE = 1e-3

MEMORY_HEADS, MEMORY_DEPTH = 8, 64
MEMORY_LENGTH = 1024  # Where the bytes per weight are reported.
FIT_LENGTHS = (MEMORY_LENGTH, 2 * MEMORY_LENGTH, 4 * MEMORY_LENGTH)
BUDGET_BYTES = 2**27  # The scratch budget the longest lengths are found for.
LENGTH_STEP = 256
# Searching stops at the last length with fewer than 2^32 weights, where the mask is
# hashed by one flat index (larger masks take one seed per row); a path that fits
# there is reported as ≥.
MAX_LENGTH = int((2**32 / MEMORY_HEADS) ** 0.5) // LENGTH_STEP * LENGTH_STEP
IMPLEMENTATIONS = ("Flax", "jaxreg dense", "jaxreg blockwise")
BLOCK_SIZE = 256

FULL_BUDGET = timing.Budget(40.0, 10, 30)
QUICK_BUDGET = timing.Budget(6.0, 3, 5)
ADDED_BOUND = 0.25  # jaxreg's added time over Flax's.
STEP_BOUND = 0.05  # jaxreg's added time over the step without dropout.
LENGTH_BOUND = 4  # Blockwise's longest length over Flax's.


# The transformer block --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Variant:
  """How the block's attention does (or skips) its dropout."""
  deterministic: bool
  broadcast_dropout: bool = True
  jaxreg: bool = False

  def attention_fn(self, flax_fn):
    return jr.attention.dot_product_attention if self.jaxreg else flax_fn


BASELINE = "no dropout"
# Flax's modules broadcast the attention mask over batch and heads by default.
VARIANTS = {
    BASELINE: Variant(deterministic=True),
    "Flax": Variant(deterministic=False),
    "jaxreg": Variant(deterministic=False, jaxreg=True),
    "Flax, broadcast_dropout=False": Variant(deterministic=False, broadcast_dropout=False),
    "jaxreg, broadcast_dropout=False": Variant(deterministic=False, broadcast_dropout=False,
                                               jaxreg=True),
}
PAIRS = (("Flax", "jaxreg"),
         ("Flax, broadcast_dropout=False", "jaxreg, broadcast_dropout=False"))


class LinenBlock(nn.Module):
  variant: Variant

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(
        HEADS, dropout_rate=RATE, deterministic=self.variant.deterministic,
        broadcast_dropout=self.variant.broadcast_dropout,
        attention_fn=self.variant.attention_fn(nn.dot_product_attention))(h)
    h = nn.LayerNorm()(x)
    return x + nn.Dense(WIDTH)(nn.gelu(nn.Dense(4 * WIDTH)(h)))


class NnxBlock(nnx.Module):
  def __init__(self, variant: Variant, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(WIDTH, rngs=rngs)
    # The baseline keeps the rate and is deterministic: at rate 0, NNX would switch to
    # jax.nn.dot_product_attention, another kernel than the one dropout runs in.
    self.attention = nnx.MultiHeadAttention(
        HEADS, WIDTH, dropout_rate=RATE, deterministic=variant.deterministic,
        broadcast_dropout=variant.broadcast_dropout, decode=False,
        attention_fn=variant.attention_fn(nnx.dot_product_attention), keep_rngs=False,
        rngs=rngs)
    self.norm2 = nnx.LayerNorm(WIDTH, rngs=rngs)
    self.up = nnx.Linear(WIDTH, 4 * WIDTH, rngs=rngs)
    self.down = nnx.Linear(4 * WIDTH, WIDTH, rngs=rngs)

  def __call__(self, x, key):
    x = x + self.attention(self.norm1(x), rngs=nnx.Rngs(dropout=key))
    return x + self.down(nnx.gelu(self.up(self.norm2(x))))


def _adam_step(apply):
  """A jitted-by-the-caller Adam step of ``apply(params, x, key)`` on a squared error."""
  tx = optax.adam(LEARNING_RATE)

  def step(params, state, x, key):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(jnp.square(apply(p, x, key) - x)))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss
  return tx, step


def _linen_cases(x, key):
  cases = {}
  for name, variant in VARIANTS.items():
    block = LinenBlock(variant)
    params = block.init({"params": jax.random.key(1), "dropout": key}, x)
    apply = lambda p, x, key, block=block: block.apply(p, x, rngs={"dropout": key})
    tx, step = _adam_step(apply)
    cases[name] = (step, (params, tx.init(params), x, key))
  return cases


def _nnx_cases(x, key):
  cases = {}
  for name, variant in VARIANTS.items():
    graphdef, params = nnx.split(NnxBlock(variant, nnx.Rngs(1)))
    apply = lambda p, x, key, graphdef=graphdef: nnx.merge(graphdef, p)(x, key)
    tx, step = _adam_step(apply)
    cases[name] = (step, (params, tx.init(params), x, key))
  return cases


# Memory ------------------------------------------------------------------------------

def _attention_grad(implementation: str):
  if implementation == "Flax":
    attend = functools.partial(nn.dot_product_attention, broadcast_dropout=False)
  else:
    kind = implementation.split()[-1]
    attend = functools.partial(jr.attention.dot_product_attention, broadcast_dropout=False,
                               implementation=kind, block_size=BLOCK_SIZE)

  def loss(q, k, v, key):
    return jnp.sum(jnp.sin(attend(q, k, v, dropout_rng=key, dropout_rate=RATE)))
  return jax.grad(loss, argnums=(0, 1, 2))


def temp_bytes(implementation: str, length: int) -> int:
  """Scratch bytes of ``jit(grad)`` of the attention at ``length``, compiled, not run."""
  x = jax.ShapeDtypeStruct((1, length, MEMORY_HEADS, MEMORY_DEPTH), jnp.float32)
  compiled = jax.jit(_attention_grad(implementation)).lower(
      x, x, x, jax.random.key(0)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def _fits(implementation: str, length: int, budget: int) -> bool:
  return temp_bytes(implementation, length) <= budget


def _searched_length(implementation: str, budget: int) -> int:
  """The longest multiple of :data:`LENGTH_STEP` up to :data:`MAX_LENGTH` whose
  ``grad`` fits ``budget``: doubling, then bisection (scratch grows with length)."""
  low, high = 0, 1
  while high * LENGTH_STEP <= MAX_LENGTH and _fits(implementation, high * LENGTH_STEP, budget):
    low, high = high, 2 * high
  if high * LENGTH_STEP > MAX_LENGTH:
    return low * LENGTH_STEP
  while high - low > 1:
    middle = (low + high) // 2
    fits = _fits(implementation, middle * LENGTH_STEP, budget)
    low, high = (middle, high) if fits else (low, middle)
  return low * LENGTH_STEP


def longest_length(implementation: str, budget: int, scratch: dict[int, int],
                   verify: bool) -> int:
  """The longest multiple of :data:`LENGTH_STEP` (at most :data:`MAX_LENGTH`) whose
  ``grad`` fits ``budget``, predicted by the quadratic through the ``scratch`` bytes
  measured at three lengths (a dense attention's scratch is quadratic in the length,
  a blockwise one's about linear). With ``verify``, the prediction is checked by
  compiling at it and one step above, and searched for where it is wrong."""
  lengths = sorted(scratch)
  a, b, c = np.polyfit(lengths, [scratch[n] for n in lengths], 2)
  roots = np.roots([a, b, c - budget]) if abs(a) > 0 else np.array([(budget - c) / b])
  root = max([r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0], default=0.0)
  steps = int(min(root, MAX_LENGTH) // LENGTH_STEP)
  if not verify:
    return steps * LENGTH_STEP
  below, above = steps * LENGTH_STEP, (steps + 1) * LENGTH_STEP
  if (below == 0 or _fits(implementation, below, budget)) and (
      above > MAX_LENGTH or not _fits(implementation, above, budget)):
    return below
  return _searched_length(implementation, budget)


# The suite ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Result:
  step: dict[str, dict[str, float]]
  """Median seconds per training step, by framework and variant."""
  bytes_per_weight: dict[str, float]
  """Scratch bytes of the attention's ``grad`` per weight at :data:`MEMORY_LENGTH`."""
  longest: dict[str, int]
  """Longest length whose ``grad`` fits :data:`BUDGET_BYTES`, by implementation."""
  verified: bool
  """Whether ``longest`` was checked by compiling (full runs), or only predicted."""

  def added(self, framework: str, variant: str) -> float:
    seconds = self.step[framework]
    return seconds[variant] - seconds[BASELINE]

  def section(self) -> list[str]:
    step_rows = []
    for framework, seconds in self.step.items():
      for flax, ours in PAIRS:
        for variant in (flax, ours):
          versus = self.added(framework, variant) / self.added(framework, flax)
          step_rows.append([framework, variant, report._ms(seconds[variant]),
                            f"{seconds[variant] / seconds[BASELINE]:.3f}×",
                            f"{versus:+.2f}"])
      step_rows.append([framework, BASELINE, report._ms(seconds[BASELINE]), "1×", "—"])
    memory_rows = [[name, f"{self.bytes_per_weight[name]:.2f}",
                    _length_text(self.longest[name])] for name in IMPLEMENTATIONS]
    budget = f"{BUDGET_BYTES / 2**20:g} MiB"
    return [
        "## Attention dropout in a transformer block", "",
        f"A pre-LN block, batch {BATCH}, length {LENGTH}, width {WIDTH}, {HEADS} heads, "
        f"MLP 4×, one jitted Adam step, attention dropout at rate {RATE} "
        "(`benchmarks/attention_bench.py`). *No dropout* is the same module in "
        "deterministic mode (Flax's einsum attention in both frameworks). *Added* is a "
        "step's time minus the step without dropout, over what Flax's dropout of the same "
        "kind adds.", "",
        *report._table(["framework", "attention dropout", "step (ms)", "/ no dropout",
                        "added / Flax's added"], step_rows), "",
        f"Scratch memory of `jit(grad)` of the attention alone (batch 1, {MEMORY_HEADS} "
        f"heads, depth {MEMORY_DEPTH}, rate {RATE}, `broadcast_dropout=False`, float32), "
        f"from `memory_analysis()`: bytes per attention weight at length {MEMORY_LENGTH}, "
        f"and the longest length (steps of {LENGTH_STEP}) within {budget}, predicted by "
        f"the quadratic through lengths {', '.join(map(str, FIT_LENGTHS))}"
        + (" and checked by compiling there and one step above." if self.verified
           else " (quick run: not checked by compiling).")
        + f" Blockwise uses block_size={BLOCK_SIZE}; lengths stop at {MAX_LENGTH}, the "
        "last with fewer than 2^32 mask elements (one flat index; larger masks are "
        "hashed with one seed per row and are not measured here).", "",
        *report._table(["implementation", f"B/weight at T={MEMORY_LENGTH}",
                        f"longest T in {budget}"], memory_rows), "",
    ]

  def targets(self) -> list[targets.Target]:
    found = []
    for framework, seconds in self.step.items():
      for flax, ours in PAIRS:
        ours_added, flax_added = self.added(framework, ours), self.added(framework, flax)
        share, flax_share = ours_added / seconds[BASELINE], flax_added / seconds[BASELINE]
        # Where Flax's dropout itself costs less than the step bound (its broadcast mask
        # is one T×T draw), the ratio of two added times is a ratio of noise: only the
        # bound on the step applies there.
        if flax_share > STEP_BOUND:
          ratio = ours_added / flax_added
          found.append(targets.Target(
              f"{framework} transformer block, attention dropout ({ours}): jaxreg's added "
              f"time / Flax's = {report._ms(ours_added)} / {report._ms(flax_added)} ms = "
              f"{ratio:.2f} (target ≤ {ADDED_BOUND})", ratio <= ADDED_BOUND))
        found.append(targets.Target(
            f"{framework} transformer block ({ours}): attention dropout adds "
            f"{share:.1%} to the step, Flax's {flax_share:.1%} (target ≤ {STEP_BOUND:.0%})",
            share <= STEP_BOUND))
    capped = "≥ " if self.longest["jaxreg blockwise"] >= MAX_LENGTH else ""
    ratio = self.longest["jaxreg blockwise"] / self.longest["Flax"]
    found.append(targets.Target(
        f"longest attention length within {BUDGET_BYTES / 2**20:g} MiB of grad scratch: "
        f"blockwise / Flax = {capped}{ratio:.1f}× (target ≥ {LENGTH_BOUND}×)",
        ratio >= LENGTH_BOUND))
    return found


def _length_text(length: int) -> str:
  return f"≥ {length}" if length >= MAX_LENGTH else str(length)


def run(quick: bool, log) -> Result:
  budget = QUICK_BUDGET if quick else FULL_BUDGET
  data_key, key = jax.random.split(jax.random.key(0))
  x = jax.random.normal(data_key, (BATCH, LENGTH, WIDTH))
  step = {}
  # A quick run times linen only: compiling is most of its cost.
  frameworks = (("linen", _linen_cases),) + (() if quick else (("nnx", _nnx_cases),))
  for framework, cases in frameworks:
    log(f"  {framework} transformer step ...")
    step[framework] = timing.compare(cases(x, key), budget)
  log("  attention grad memory ...")
  scratch = {name: {n: temp_bytes(name, n) for n in FIT_LENGTHS} for name in IMPLEMENTATIONS}
  bytes_per_weight = {name: scratch[name][MEMORY_LENGTH] / (MEMORY_HEADS * MEMORY_LENGTH**2)
                      for name in IMPLEMENTATIONS}
  longest = {name: longest_length(name, BUDGET_BYTES, scratch[name], verify=not quick)
             for name in IMPLEMENTATIONS}
  return Result(step, bytes_per_weight, longest, verified=not quick)


if __name__ == "__main__":
  result = run(quick=True, log=print)
  print("\n".join(result.section()))
  print("\n".join(t.line() for t in result.targets()))
