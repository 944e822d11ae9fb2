"""The performance targets, checked against the measurements of one run.

Each target is a bound on a ratio or a byte count; :func:`check` reads the measured
figure from the results and says whether it is within the bound.
"""

from __future__ import annotations

import dataclasses

from benchmarks import dropout_bench
from benchmarks import memory_bench
from benchmarks import penalty_bench

SIZE = 2**22  # The array size the dropout targets are stated at.
PENALTY_BOUND = 1.5


@dataclasses.dataclass(frozen=True)
class Target:
  text: str
  """What is measured, with the measured figure and the bound."""
  met: bool

  def line(self) -> str:
    return f"- {'met' if self.met else 'NOT met'}: {self.text}"


def _row(rows, rate, pass_, dtype="float32") -> dropout_bench.Row:
  (row,) = [r for r in rows if (r.size, r.rate, r.dtype, r.pass_)
            == (SIZE, rate, dtype, pass_)]
  return row


def _speedup(rows, rate, pass_, bound) -> Target:
  seconds = _row(rows, rate, pass_).seconds
  ratio = seconds["flax.linen"] / seconds["jaxreg"]
  return Target(f"{pass_} dropout, 2^22 float32, rate {rate}: flax.linen / jaxreg = "
                f"{ratio:.1f}× (target ≥ {bound}×)", ratio >= bound)


def _near_copy(rows, rate, bound) -> Target:
  seconds = _row(rows, rate, "forward").seconds
  ratio = seconds["jaxreg"] / seconds["copy x*2"]
  return Target(f"forward dropout, 2^22 float32, rate {rate}: jaxreg / copy floor = "
                f"{ratio:.2f}× (target ≤ {bound}×)", ratio <= bound)


def _residual(memory: memory_bench.Result) -> list[Target]:
  flax = memory.single["flax.linen"]
  default = memory.single["jaxreg (default: recompute)"]
  packed = memory.single["jaxreg residual='packed'"]
  beside = f"; flax.linen: {flax:.3f} B/element"
  return [
      Target(f"backward residual of jr.dropout by default: {default:.3f} B/element "
             f"(target ≤ 0.125){beside}", default <= 0.125),
      Target(f"backward residual with regeneration (residual='recompute'): "
             f"{default:.3f} B/element (target 0){beside}", default == 0),
      Target(f"backward residual packed (residual='packed'): {packed:.3f} B/element "
             f"(target ≤ 0.125){beside}", packed <= 0.125),
  ]


def _penalties(penalties: penalty_bench.Result) -> list[Target]:
  targets = []
  for row in penalties.rows:
    ratio = row.jaxreg / row.floor
    targets.append(Target(
        f"{row.operation} over {penalties.parameters / 1e6:.1f}M parameters: "
        f"jaxreg / fused pass = {ratio:.2f}× (target ≤ {PENALTY_BOUND}×)",
        ratio <= PENALTY_BOUND))
  return targets


def check(dropout_rows, memory, penalties) -> list[Target]:
  return [
      _speedup(dropout_rows, 0.1, "forward", 5),
      _speedup(dropout_rows, 0.5, "forward", 10),
      _near_copy(dropout_rows, 0.5, 3),
      _speedup(dropout_rows, 0.1, "forward+backward", 4),
      *_residual(memory),
      *_penalties(penalties),
  ]
