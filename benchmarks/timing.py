"""Wall-clock timing of compiled functions, side by side.

Every function is compiled ahead of the clock (``jit(...).lower(...).compile()``), called
twice to warm up, and then all the functions of one comparison are called in turns,
round after round. Interleaving matters more than the repeat count: whatever else the
machine is doing slows every contestant alike, so the ratios stay fair even when the
absolute times drift. The figure reported is the median over rounds.
"""

from __future__ import annotations

import ctypes
import dataclasses
import platform
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import jax

_WARMUP_CALLS = 2  # The first call after compiling also pays for allocator growth.
# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


@dataclasses.dataclass(frozen=True)
class Budget:
  """How long to time one comparison: rounds are added until ``seconds`` is spent,
  within ``[min_rounds, max_rounds]``."""
  seconds: float
  min_rounds: int
  max_rounds: int

  def rounds(self, seconds_per_round: float) -> int:
    wanted = int(self.seconds / max(seconds_per_round, 1e-9))
    return max(self.min_rounds, min(self.max_rounds, wanted))


def reuse_freed_memory() -> bool:
  """Makes glibc's allocator keep freed memory for reuse; False where there is no glibc.

  By default glibc maps every block over 32 MB afresh from the OS and unmaps it when
  freed, and gives back the free tops of the per-thread heaps that XLA's worker threads
  allocate from, so a call that writes a large output pays a page fault per page: for
  a 40 MB output about as long as the kernel itself. A training loop that reuses its
  buffers does not pay that, and it would blur every ratio against a floor whose one
  flat output is larger than the peers' per-leaf outputs. With no mapped blocks, one
  shared heap and no trimming, a freed block is found again by the next call.
  """
  if platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(None)
  return all(libc.mallopt(option, value) for option, value in (
      (_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, 2**31 - 1)))


Case = tuple[Callable[..., Any], Sequence[Any]]
"""A function and the arguments it is timed on."""


def _call_seconds(compiled, args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  return time.perf_counter() - start


def compare(cases: Mapping[str, Case], budget: Budget) -> dict[str, float]:
  """Median seconds per call of each case, measured in interleaved rounds."""
  compiled = {name: (jax.jit(fn).lower(*args).compile(), args)
              for name, (fn, args) in cases.items()}
  per_round = 0.0
  for fn, args in compiled.values():
    for _ in range(_WARMUP_CALLS):
      seconds = _call_seconds(fn, args)
    per_round += seconds
  samples = {name: [] for name in compiled}
  for _ in range(budget.rounds(per_round)):
    for name, (fn, args) in compiled.items():
      samples[name].append(_call_seconds(fn, args))
  return {name: statistics.median(times) for name, times in samples.items()}
