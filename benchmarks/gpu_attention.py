"""Attention with dropout on an NVIDIA GPU: jaxreg's Pallas kernel against the fused
kernels without dropout and the dense paths with it.

Batch 4, 16 heads, head depth 64 and 128, bfloat16, lengths T from 512 to 16,384,
forward and forward + backward (``jax.vjp`` and the pullback of a fixed cotangent).
Contestants:

* jaxreg ``implementation="pallas"`` with dropout 0.1, and with 0.0 (the kernel's
  own cost of dropout is the difference);
* ``jax.nn.dot_product_attention(implementation="cudnn")``, no dropout;
* JAX's Pallas reference attention (``jax.experimental.pallas.ops.gpu.attention.mha``),
  no dropout;
* Flax's ``dot_product_attention`` with dropout 0.1;
* jaxreg ``"dense"`` and ``"blockwise"`` with dropout 0.1.

Each function is compiled ahead of the clock; the contestants of one row are called
in turns, round after round, and the median is reported. Memory is XLA's
``memory_analysis()`` of the compiled program (temporaries, nothing run). A
contestant that does not compile or run (out of memory) is reported as such.

Targets: with dropout 0.1, forward + backward within 1.25× of the fastest
no-dropout fused kernel at T ≥ 2048; at least 3× faster than Flax's attention with
dropout at T = 2048; memory linear in T.

Run ``python -m benchmarks.gpu_attention`` on a machine with an NVIDIA GPU: it writes
``benchmarks/results/gpu_attention.md``. Without a GPU it exits with a message;
``--cpu-smoke`` runs a tiny configuration in Pallas interpret mode instead (no file
written), to check the script itself.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import sys
import time

import flax.linen as nn
import jax
from jax.experimental.pallas.ops.gpu import attention as pallas_reference
import jax.numpy as jnp

from jaxreg import attention

BATCH, HEADS = 4, 16
DEPTHS = (64, 128)
LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
RATE = 0.1
ROUNDS = 10
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "gpu_attention.md"
FUSED = ("cuDNN", "JAX Pallas")  # The no-dropout fused kernels the targets compare with.


def contestants(block_size: int, interpret: bool) -> dict:
  """name -> ``attend(q, k, v, key)``, each ``[batch, length, heads, depth]``."""
  def jaxreg(implementation, rate):
    return lambda q, k, v, key: attention.dot_product_attention(
        q, k, v, dropout_rng=key, dropout_rate=rate, implementation=implementation,
        block_size=block_size)

  def reference(q, k, v, key):
    del key
    return pallas_reference.mha(q, k, v, None, sm_scale=q.shape[-1] ** -0.5,
                                interpret=interpret)

  def cudnn(q, k, v, key):
    del key
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")

  def flax(q, k, v, key):
    return nn.dot_product_attention(q, k, v, dropout_rng=key, dropout_rate=RATE,
                                    deterministic=False)

  return {
      "jaxreg pallas, p=0.1": jaxreg("pallas", RATE),
      "jaxreg pallas, p=0": jaxreg("pallas", 0.0),
      **({} if interpret else {"cuDNN": cudnn}),
      "JAX Pallas": reference,
      "Flax, p=0.1": flax,
      "jaxreg dense, p=0.1": jaxreg("dense", RATE),
      "jaxreg blockwise, p=0.1": jaxreg("blockwise", RATE),
  }


def program(attend, backward: bool):
  """The forward, or the output and gradients of a vjp with a fixed cotangent."""
  if not backward:
    return attend

  def forward_backward(q, k, v, key):
    out, pullback = jax.vjp(lambda q, k, v: attend(q, k, v, key), q, k, v)
    return out, pullback(jnp.ones_like(out))
  return forward_backward


def compile_all(fns: dict, args) -> dict:
  """name -> the compiled program and its temporary bytes, or the reason it has none."""
  out = {}
  for name, fn in fns.items():
    try:
      compiled = jax.jit(fn).lower(*args).compile()
      jax.block_until_ready(compiled(*args))  # Runs once: out of memory shows here.
      out[name] = (compiled, compiled.memory_analysis().temp_size_in_bytes)
    except Exception as error:  # pylint: disable=broad-except
      reason = "out of memory" if "RESOURCE_EXHAUSTED" in str(error) or (
          "memory" in str(error).lower()) else type(error).__name__
      out[name] = reason
  return out


def time_all(compiled: dict, args, rounds: int) -> dict[str, float]:
  """Median seconds per call, the runnable contestants called in turns."""
  runnable = {name: c[0] for name, c in compiled.items() if isinstance(c, tuple)}
  samples = {name: [] for name in runnable}
  for _ in range(rounds):
    for name, fn in runnable.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      samples[name].append(time.perf_counter() - start)
  return {name: statistics.median(s) for name, s in samples.items()}


def run(depths, lengths, batch, heads, block_size, rounds, interpret, log=print):
  """Rows ``(depth, length, pass, name, seconds or reason, temp bytes or None)``."""
  rows = []
  fns = contestants(block_size, interpret)
  for depth in depths:
    for length in lengths:
      keys = jax.random.split(jax.random.key(length + depth), 4)
      q, k, v = (jax.random.normal(key, (batch, length, heads, depth), jnp.bfloat16)
                 for key in keys[:3])
      args = (q, k, v, keys[3])
      for backward in (False, True):
        pass_ = "forward + backward" if backward else "forward"
        compiled = compile_all({n: program(f, backward) for n, f in fns.items()}, args)
        times = time_all(compiled, args, rounds)
        for name, result in compiled.items():
          seconds = times.get(name, result)
          memory = result[1] if isinstance(result, tuple) else None
          rows.append((depth, length, pass_, name, seconds, memory))
          log(f"depth {depth}, T {length}, {pass_}, {name}: "
              f"{_ms(seconds)} ms, {_mib(memory)} MiB")
  return rows


def _ms(seconds) -> str:
  return f"{seconds * 1e3:.3f}" if isinstance(seconds, float) else str(seconds)


def _mib(nbytes) -> str:
  return "—" if nbytes is None else f"{nbytes / 2**20:.1f}"


def targets(rows) -> list[str]:
  """The three targets, from the forward + backward rows."""
  table = {(d, t, n): (s, m) for d, t, p, n, s, m in rows if p == "forward + backward"}
  lines = []
  for depth in sorted({d for d, *_ in rows}):
    lengths = sorted({t for d, t, *_ in rows if d == depth})
    for length in lengths:
      ours = table.get((depth, length, "jaxreg pallas, p=0.1"), (None,))[0]
      fused = [table.get((depth, length, n), (None,))[0] for n in FUSED]
      fused = [s for s in fused if isinstance(s, float)]
      flax = table.get((depth, length, "Flax, p=0.1"), (None,))[0]
      if not isinstance(ours, float):
        continue
      if length >= 2048 and fused:
        ratio = ours / min(fused)
        lines.append(f"- depth {depth}, T {length}: pallas p=0.1 / fastest fused without "
                     f"dropout = {ratio:.2f} (target ≤ 1.25: "
                     f"{'met' if ratio <= 1.25 else 'missed'})")
      if length == 2048 and isinstance(flax, float):
        speedup = flax / ours
        lines.append(f"- depth {depth}, T 2048: Flax p=0.1 / pallas p=0.1 = {speedup:.2f} "
                     f"(target ≥ 3: {'met' if speedup >= 3 else 'missed'})")
    memory = [(t, table[(depth, t, "jaxreg pallas, p=0.1")][1]) for t in lengths
              if table.get((depth, t, "jaxreg pallas, p=0.1"), (None, None))[1]]
    if len(memory) > 1:
      growth = max(m2 / m1 * t1 / t2 for (t1, m1), (t2, m2) in zip(memory, memory[1:]))
      lines.append(f"- depth {depth}: pallas p=0.1 temporary memory per unit of T grows "
                   f"by at most {growth:.2f}× per step in T (linear: 1.00; target "
                   f"linear: {'met' if growth <= 1.1 else 'missed'})")
  return lines


def report(rows, device: str, batch: int = BATCH, heads: int = HEADS) -> str:
  lines = ["# Attention with dropout on a GPU", "",
           f"`python -m benchmarks.gpu_attention` on {device}, jax {jax.__version__}: "
           f"batch {batch}, {heads} heads, bfloat16; median ms per call; temporary "
           "memory (MiB) from `memory_analysis()`.", ""]
  names = list(dict.fromkeys(n for *_, n, _, _ in rows))
  for depth in sorted({d for d, *_ in rows}):
    for pass_ in ("forward", "forward + backward"):
      lines += [f"## Depth {depth}, {pass_}", "",
                "| T | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
      for length in sorted({t for d, t, *_ in rows if d == depth}):
        cells = {n: (s, m) for d, t, p, n, s, m in rows
                 if (d, t, p) == (depth, length, pass_)}
        lines.append(f"| {length} | " + " | ".join(
            f"{_ms(cells[n][0])} ({_mib(cells[n][1])})" if n in cells else "—"
            for n in names) + " |")
      lines.append("")
  return "\n".join(lines + ["## Targets", ""] + targets(rows)) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cpu-smoke", action="store_true",
                      help="a tiny configuration in Pallas interpret mode; writes nothing")
  parser.add_argument("--block-size", type=int, default=64,
                      help="jaxreg's block length (pallas and blockwise)")
  args = parser.parse_args(argv)
  if args.cpu_smoke:
    rows = run((16,), (32, 64), 1, 2, 16, 2, interpret=True)
    print(report(rows, "CPU (interpret mode, smoke run)", batch=1, heads=2))
    return 0
  gpus = [d for d in jax.devices() if d.platform == "gpu"]  # cuda (or rocm)
  if not gpus or "nvidia" not in gpus[0].device_kind.lower():
    print("benchmarks/gpu_attention.py needs an NVIDIA GPU (jax.devices() has "
          f"{[d.device_kind for d in jax.devices()]}); --cpu-smoke runs a tiny "
          "configuration in interpret mode instead", file=sys.stderr)
    return 1
  rows = run(DEPTHS, LENGTHS, BATCH, HEADS, args.block_size, ROUNDS, interpret=False)
  RESULTS.parent.mkdir(exist_ok=True)
  RESULTS.write_text(report(rows, gpus[0].device_kind))
  print(f"wrote {RESULTS}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
