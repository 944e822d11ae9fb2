"""16-bit dropout against float32 dropout, timed side by side in one comparison.

At 2^22 elements, for each rate and pass, jaxreg's dropout of a float32, a bfloat16 and
a float16 array of the same shape and the copy floor of each dtype are six cases of one
:func:`benchmarks.timing.compare`, called in turns round after round. A 16-bit row
divided by its float32 row in the main dropout tables compares medians taken minutes
apart, and on a CPU whose speed drifts that moved the ratio by up to 0.3 between runs;
here both sides of every ratio see the same moments of the machine.

The 16-bit target is read from this comparison: jaxreg at 16 bits no slower than jaxreg
at 32 bits. A 16-bit array moves half the bytes, and its mask is decided on 16 bits of
the hash, which skips the one step that only the low bits need (``jaxreg.masks``).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax

from benchmarks import dropout_bench
from benchmarks import implementations
from benchmarks import report
from benchmarks import targets
from benchmarks import timing

SIZE = targets.SIZE
SHAPE = (SIZE // 1024, 1024)
RATES = (0.1, 0.5)
DTYPES = ("float32", "bfloat16", "float16")
HALF_DTYPES = DTYPES[1:]
BOUND = 1.0  # 16-bit dropout / float32 dropout of the same shape.
FULL = timing.Budget(6.0, 10, 200)
QUICK = timing.Budget(0.5, 3, 10)


@dataclasses.dataclass(frozen=True)
class Row:
  rate: float
  pass_: str
  dropout: dict[str, float]
  """Median seconds of jaxreg's dropout, by dtype."""
  copy: dict[str, float]
  """Median seconds of the copy floor ``x * 2``, by dtype."""

  def over_float32(self, dtype: str) -> float:
    return self.dropout[dtype] / self.dropout["float32"]

  def over_copy(self, dtype: str) -> float:
    return self.dropout[dtype] / self.copy[dtype]


@dataclasses.dataclass(frozen=True)
class Result:
  rows: list[Row]

  def section(self) -> list[str]:
    body = [[f"{row.rate}", row.pass_, dtype, f"{row.dropout[dtype] * 1e3:.3f}",
             f"{row.over_float32(dtype):.2f}×", f"{row.over_copy(dtype):.2f}×"]
            for row in self.rows for dtype in DTYPES]
    return [
        "## 16-bit dropout against float32, side by side", "",
        f"jaxreg's dropout at 2^{SIZE.bit_length() - 1} elements `{SHAPE}`: float32, "
        "bfloat16 and float16 timed in one interleaved comparison with the copy floor "
        "of each dtype, so that the ratios compare the same moments of the machine. "
        "16-bit masks are decided on 16 bits of the same hash, float32 masks on 24; a "
        "16-bit `x·(1/q)` is taken in float32 and rounded once.", "",
        *report._table(["rate", "pass", "dtype", "ms", "over float32 dropout",
                        "over the dtype's copy floor"], body), "",
    ]

  def targets(self) -> list[targets.Target]:
    return [targets.Target(
        f"forward dropout, 2^22 {dtype}, rate {row.rate}: jaxreg {dtype} / jaxreg "
        f"float32 = {row.over_float32(dtype):.2f}× (target ≤ {BOUND}×); {dtype} jaxreg "
        f"/ {dtype} copy floor = {row.over_copy(dtype):.2f}×",
        row.over_float32(dtype) <= BOUND)
        for row in self.rows if row.pass_ == "forward" for dtype in HALF_DTYPES]


def _compare(rate: float, pass_: str, budget: timing.Budget) -> Row:
  build = dropout_bench.BUILDERS[pass_]
  key = jax.random.key(0)
  cases = {}
  for dtype in DTYPES:
    x = jax.random.normal(jax.random.key(1), SHAPE, dtype)
    g = jax.random.normal(jax.random.key(2), SHAPE, dtype)
    cases[f"jaxreg {dtype}"] = (build(implementations.jaxreg_default, rate), (key, x, g))
    cases[f"copy {dtype}"] = (build(implementations.copy_floor, rate), (key, x, g))
  seconds = timing.compare(cases, budget)
  return Row(rate, pass_, {d: seconds[f"jaxreg {d}"] for d in DTYPES},
             {d: seconds[f"copy {d}"] for d in DTYPES})


def run(quick: bool, log) -> Result:
  budget = QUICK if quick else FULL
  rows = []
  for rate, pass_ in itertools.product(RATES, dropout_bench.PASSES):
    rows.append(_compare(rate, pass_, budget))
    log(f"  16-bit against float32, rate={rate} {pass_}: done")
  return Result(rows)


if __name__ == "__main__":
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer rounds")
  timing.reuse_freed_memory()
  result = run(parser.parse_args().quick, print)
  print("\n".join(result.section() + [t.line() for t in result.targets()]))
