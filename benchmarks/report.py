"""The Markdown report of one run: machine facts, one table per benchmark, targets."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import jax

from benchmarks import dropout_bench
from benchmarks import implementations
from benchmarks import memory_bench
from benchmarks import penalty_bench
from benchmarks import training_bench

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "jaxopt")


def _ms(seconds: float) -> str:
  return f"{seconds * 1e3:.3g}"


def _table(header, rows) -> list[str]:
  return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
          *(f"| {' | '.join(row)} |" for row in rows)]


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine(load_before, load_after, reuses_memory: bool) -> list[str]:
  versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in _PACKAGES)
  device = jax.devices()[0]
  return [
      f"- backend: {jax.default_backend()}, device: {device.device_kind} "
      f"(x{jax.device_count()})",
      f"- CPU: {_cpu_model()}, {os.cpu_count()} logical cores; {platform.platform()}",
      f"- Python {platform.python_version()}; {versions}",
      f"- load average (1 min) before / after the run: {load_before:.2f} / "
      f"{load_after:.2f}: other work on the machine slows every contestant of a "
      "comparison alike (calls are interleaved), so ratios hold better than times",
      "- allocator: " + ("glibc keeps freed memory for reuse (`timing.reuse_freed_memory`)"
                         if reuses_memory else "as the platform sets it"),
  ]


def _dropout_table(rows, pass_) -> list[str]:
  names = list(implementations.SPEED)
  header = ["size", "rate", "dtype", *(f"{n} (ms)" for n in names),
            "linen / jaxreg", "nnx / jaxreg", "jaxreg / copy"]
  body = []
  for row in rows:
    if row.pass_ != pass_:
      continue
    s = row.seconds
    body.append([f"2^{row.size.bit_length() - 1}", f"{row.rate}", row.dtype,
                 *(_ms(s[n]) for n in names),
                 f"{s['flax.linen'] / s['jaxreg']:.1f}×",
                 f"{s['flax.nnx'] / s['jaxreg']:.1f}×",
                 f"{s['jaxreg'] / s['copy x*2']:.2f}×"])
  return _table(header, body)


def dropout_section(rows: list[dropout_bench.Row]) -> list[str]:
  return [
      "## Dropout speed", "",
      "Median milliseconds per call, compile excluded, on `(size/1024, 1024)` arrays. "
      "`copy x*2` is the floor: one read and one write of the array.", "",
      "### Forward", "", *_dropout_table(rows, "forward"), "",
      "### Forward + backward (`jax.vjp`, then the pullback of a fixed cotangent)", "",
      *_dropout_table(rows, "forward+backward"), "",
  ]


def memory_section(result: memory_bench.Result) -> list[str]:
  rows = [[name, f"{result.single[name]:.3f}", f"{result.mlp[name]:.3f}"]
          for name in implementations.RESIDUAL]
  return [
      "## Backward memory", "",
      "Extra `temp_size_in_bytes` of `jit(grad(loss))` from `memory_analysis()`, per "
      f"dropped element, rate {memory_bench.RATE}, float32. *One dropout*: the slope "
      f"between {memory_bench.SINGLE_SHAPES[0]} and {memory_bench.SINGLE_SHAPES[1]} "
      f"arrays. *MLP*: {memory_bench.MLP_LAYERS} tanh layers {memory_bench.MLP_WIDTH} "
      f"wide, batch {memory_bench.MLP_BATCH}, dropout after each; it includes each "
      "dropout's output, which the next layer's weight gradient needs.", "",
      *_table(["implementation", "one dropout (B/element)", "MLP (B/dropped element)"],
              rows), "",
  ]


def penalty_section(result: penalty_bench.Result) -> list[str]:
  rows = [[r.operation, _ms(r.jaxreg), r.peer, _ms(r.peer_seconds),
           f"{r.peer_seconds / r.jaxreg:.2f}×", _ms(r.floor), f"{r.jaxreg / r.floor:.2f}×",
           f"{r.jaxreg / result.vdot:.2f}×"]
          for r in result.rows]
  return [
      f"## Penalties over a {result.parameters / 1e6:.1f}M-parameter tree", "",
      f"Float32 Dense kernels and biases {penalty_bench.LAYERS}. *Fused pass*: the same "
      "arithmetic on one preflattened vector of all parameters; *vdot*: "
      f"`jnp.vdot(v, v)` of that vector, one read, {_ms(result.vdot)} ms.", "",
      *_table(["operation", "jaxreg (ms)", "peer", "peer (ms)", "peer / jaxreg",
               "fused pass (ms)", "jaxreg / fused", "jaxreg / vdot"], rows), "",
  ]


def training_section(result: training_bench.Result) -> list[str]:
  base = result.step[training_bench.BASELINE]
  steps = [[name, _ms(s), f"{s / base:.2f}×"] for name, s in result.step.items()]
  adam = result.update["optax.adam"]
  updates = [[name, _ms(s), f"{s / adam:.2f}×"] for name, s in result.update.items()]
  widths = " → ".join(map(str, training_bench.WIDTHS))
  return [
      "## Training step", "",
      f"Jitted Adam step of a ReLU MLP {widths}, batch {training_bench.BATCH}; dropout "
      f"rate {training_bench.RATE} after each hidden layer, L2 strength "
      f"{training_bench.STRENGTH}.", "",
      *_table(["variant", "ms / step", "× no regularization"], steps), "",
      "Optimizer update alone (same parameters):", "",
      *_table(["optimizer", "ms / update", "× optax.adam"], updates), "",
  ]


def targets_section(targets) -> list[str]:
  return ["## Targets", "", *(t.line() for t in targets), ""]
