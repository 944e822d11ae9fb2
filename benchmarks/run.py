"""``make bench``: every benchmark in one run, a printed report, and its files.

``python -m benchmarks.run`` writes ``benchmarks/results/<backend>.md`` and ``.png``;
``--quick`` is a smoke run with fewer sizes and repeats, which writes files only when
given ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import time

import jax

from benchmarks import attention_bench
from benchmarks import cv_bench
from benchmarks import dropout_bench
from benchmarks import half_bench
from benchmarks import memory_bench
from benchmarks import paths_bench
from benchmarks import penalty_bench
from benchmarks import plot
from benchmarks import report
from benchmarks import sharding_bench
from benchmarks import targets
from benchmarks import timing
from benchmarks import training_bench

RESULTS = pathlib.Path(__file__).parent / "results"

# Benchmarks with a table of their own: each module has ``run(quick: bool, log) ->
# result`` and ``result.section() -> list[str]`` (Markdown lines) and
# ``result.targets() -> list[targets.Target]``. They run after the core tables, in order.
SUITES = (half_bench, sharding_bench, cv_bench, attention_bench, paths_bench)


@dataclasses.dataclass(frozen=True)
class Settings:
  name: str
  sizes: tuple[int, ...]
  dropout_budget: timing.Budget
  """For each dropout comparison (all the implementations of one table row)."""
  budget: timing.Budget
  """For the penalty and training comparisons: fewer, cheaper calls, so more rounds."""


FULL = Settings("full", (2**16, 2**18, 2**20, 2**22, 2**24),
                dropout_budget=timing.Budget(3.0, 5, 100), budget=timing.Budget(10.0, 10, 200))
QUICK = Settings("quick", (2**16, 2**22),
                 dropout_budget=timing.Budget(0.3, 3, 10), budget=timing.Budget(0.5, 3, 10))
RATES = (0.1, 0.5)
DTYPES = ("float32", "bfloat16", "float16")


def _log(message: str) -> None:
  print(message, flush=True)


@dataclasses.dataclass(frozen=True)
class Measurements:
  dropout: list[dropout_bench.Row]
  memory: memory_bench.Result
  penalties: penalty_bench.Result
  training: training_bench.Result
  suites: list
  """One result per module of ``SUITES``."""
  minutes: float
  load: tuple[float, float]
  """1-minute load average before and after."""


def measure(settings: Settings) -> Measurements:
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  _log("dropout speed ...")
  dropout = dropout_bench.run(settings.sizes, RATES, DTYPES, settings.dropout_budget, _log)
  _log("backward memory ...")
  memory = memory_bench.run()
  _log("penalties ...")
  penalties = penalty_bench.run(settings.budget)
  _log("training step ...")
  training = training_bench.run(settings.budget)
  suites = []
  for suite in SUITES:
    _log(f"{suite.__name__.rsplit('.', 1)[-1]} ...")
    suites.append(suite.run(settings is QUICK, _log))
  return Measurements(dropout, memory, penalties, training, suites,
                      (time.perf_counter() - start) / 60, (load_before, os.getloadavg()[0]))


def render(settings: Settings, m: Measurements, reuses_memory: bool) -> str:
  date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  return "\n".join([
      f"# jaxreg benchmarks: {jax.default_backend()}", "",
      f"`make bench` ({settings.name} run), {date}, {m.minutes:.1f} min in all. Each "
      "figure is a median over interleaved rounds (at least "
      f"{settings.dropout_budget.min_rounds} per dropout row, {settings.budget.min_rounds} "
      "elsewhere), compile excluded. Written by `benchmarks/run.py`; do not edit by hand.",
      "",
      *report.machine(*m.load, reuses_memory), "",
      *report.dropout_section(m.dropout),
      *report.memory_section(m.memory),
      *report.penalty_section(m.penalties),
      *report.training_section(m.training),
      *(line for result in m.suites for line in result.section()),
      *report.targets_section(targets.check(m.dropout, m.memory, m.penalties)
                              + [t for result in m.suites for t in result.targets()]),
  ])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
  parser.add_argument("--out", type=pathlib.Path,
                      help=f"where to write the report (default: {RESULTS}, full runs only)")
  args = parser.parse_args()
  settings = QUICK if args.quick else FULL
  out = args.out or (None if args.quick else RESULTS)

  reuses_memory = timing.reuse_freed_memory()
  measurements = measure(settings)
  text = render(settings, measurements, reuses_memory)
  print(text)
  if out is not None:
    backend = jax.default_backend()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{backend}.md").write_text(text + "\n")
    plot.save(measurements.dropout, out / f"{backend}.png", f"jaxreg dropout on {backend}")
    _log(f"wrote {out / f'{backend}.md'} and {out / f'{backend}.png'}")


if __name__ == "__main__":
  main()
