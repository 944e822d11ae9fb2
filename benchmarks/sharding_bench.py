"""The data-parallel example's training step on 8 emulated devices against 1.

``examples/data_parallel.py`` trains an NNX MLP with dropout and ``prox_adam`` + L1
over a ``(data, fsdp)`` mesh. Here its step is timed on one device, on 8 devices as
pure data parallelism, and on 8 devices with FSDP-sharded parameters, side by side.
The 8 devices are emulated on the CPU's cores (``--xla_force_host_platform_device_count``),
so they share those cores: the ratio shows what the partitioning costs, not a speed-up.

The point is communication: the collectives in each step's compiled HLO are counted,
with jaxreg's dropout and proximal L1 and for the same step without regularization
(plain Adam, no dropout). jaxreg's masks, penalty prox and ``prox_adam`` work
coordinate by coordinate, so they must add no collective beyond the scalar all-reduce
of the penalty's value.

The device count is fixed when JAX starts, so the measurement runs in a subprocess
(``python -m benchmarks.sharding_bench --child``) that prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

from benchmarks import targets
from benchmarks import timing

DEVICES = 8
_ROOT = pathlib.Path(__file__).resolve().parent.parent
_EXAMPLE = _ROOT / "examples" / "data_parallel.py"
_ONE = "1 device"
_KINDS = ("jaxreg", "plain")
_COLLECTIVE = re.compile(r"\s(all-gather|all-reduce|reduce-scatter|all-to-all|"
                         r"collective-permute)(?:-start)?\(")
BUDGETS = {True: timing.Budget(2.0, 3, 20), False: timing.Budget(20.0, 10, 300)}


@dataclasses.dataclass(frozen=True)
class Result:
  seconds: dict[str, dict[str, float]]
  """Median seconds per step, by mesh (:data:`_ONE` is the reference), then
  ``"jaxreg"`` or ``"plain"``."""
  collectives: dict[str, dict[str, dict[str, int]]]
  """By mesh, ``{"jaxreg": counts, "plain": counts}``: collective ops in the HLO."""
  settings: str

  def section(self) -> list[str]:
    one = self.seconds[_ONE]
    rows = []
    for mesh, seconds in self.seconds.items():
      ops = self.collectives.get(mesh, {})
      cells = [f"{seconds[kind] * 1e3:.3g} | {seconds[kind] / one[kind]:.2f}×"
               for kind in _KINDS]
      rows.append(f"| {mesh} | {' | '.join(cells)} | "
                  f"{' | '.join(_counts(ops.get(kind, {})) for kind in _KINDS)} |")
    return [
        f"## Data parallelism and FSDP on {DEVICES} emulated devices", "",
        f"The training step of `examples/data_parallel.py` ({self.settings}): dropout, "
        "`prox_adam` with `jr.L1` on the kernels. The emulated devices share the CPU's "
        "cores, so the ratio is the cost of partitioning, not a speed-up; the same "
        "step without regularization (Adam, no dropout) is timed beside it. "
        "Collectives are counted in the compiled HLO of each step.", "",
        "| mesh | jaxreg step (ms) | × 1 device | unregularized step (ms) | × 1 device "
        "| collectives, jaxreg step | collectives, unregularized step |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
    ]

  def targets(self) -> list[targets.Target]:
    found = []
    for mesh, ops in self.collectives.items():
      added = {op: n - ops["plain"].get(op, 0) for op, n in ops["jaxreg"].items()}
      extra = {op: n for op, n in added.items() if n > 0}
      # The penalty's value is one scalar all-reduce; nothing else may be added.
      met = set(extra) <= {"all-reduce"} and extra.get("all-reduce", 0) <= 1
      found.append(targets.Target(
          f"collectives jaxreg adds to the step on {mesh}: {_counts(extra)} "
          "(target: at most the penalty's one all-reduce)", met))
    return found


def _counts(counts: dict[str, int]) -> str:
  return ", ".join(f"{n} {op}" for op, n in sorted(counts.items()) if n) or "none"


def run(quick: bool, log) -> Result:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
             JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "benchmarks.sharding_bench", "--child"]
  if quick:
    command.append("--quick")
  log(f"  subprocess with {DEVICES} emulated devices ...")
  result = subprocess.run(command, env=env, cwd=_ROOT, capture_output=True, text=True,
                          timeout=900)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  return Result(figures["seconds"], figures["collectives"], figures["settings"])


def _load_example():
  spec = importlib.util.spec_from_file_location("data_parallel", _EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # Its dataclasses (linen modules) look it up there.
  spec.loader.exec_module(module)
  return module


def _child(quick: bool) -> None:
  import jax
  import numpy as np
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P

  example = _load_example()
  assert jax.device_count() == DEVICES, jax.devices()
  args = example.parse_args([])
  x_all, y_all = example.load_digits()
  apply, params = example.nnx_model(args)
  reg, tx = example.regularized(args)
  plain_args = example.parse_args(["--rate", "0"])
  plain_apply, _ = example.nnx_model(plain_args)
  plain_tx = optax.adam(args.lr)
  steps = {"jaxreg": (example.make_step(apply, tx, reg), tx),
           "plain": (example.make_step(plain_apply, plain_tx, lambda p: 0.0), plain_tx)}
  devices = jax.devices()
  meshes = {
      _ONE: example.make_mesh(devices[:1], 1),
      f"{DEVICES} devices, data parallel": example.make_mesh(devices, 1),
      f"{DEVICES} devices, FSDP (data=2, fsdp=4)": example.make_mesh(devices, 4),
  }
  cases, collectives = {}, {}
  for name, mesh in meshes.items():
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    x = example.global_batch(x_all[:args.batch], batch)
    y = example.global_batch(y_all[:args.batch], batch)
    placed = example.place(params, mesh)
    inputs = {kind: (placed, jax.jit(opt.init)(placed), x, y, jax.random.key(0))
              for kind, (_, opt) in steps.items()}
    for kind, (step, _) in steps.items():
      cases[f"{kind} on {name}"] = (step, inputs[kind])
    if mesh.devices.size > 1:
      collectives[name] = {
          kind: dict(collections.Counter(_COLLECTIVE.findall(
              step.lower(*inputs[kind]).compile().as_text())))
          for kind, (step, _) in steps.items()}
  timed = timing.compare(cases, BUDGETS[quick])
  seconds = {name: {kind: timed[f"{kind} on {name}"] for kind in steps} for name in meshes}
  settings = (f"MLP 64 → {args.hidden} → {args.hidden} → 10 on digits, batch {args.batch}, "
              f"dropout {args.rate}")
  print(json.dumps({"seconds": seconds, "collectives": collectives, "settings": settings}))


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--child", action="store_true",
                      help="measure (needs XLA_FLAGS with 8 host devices) and print JSON")
  parser.add_argument("--quick", action="store_true", help="fewer rounds")
  options = parser.parse_args()
  if options.child:
    _child(options.quick)
  else:
    outcome = run(options.quick, print)
    print("\n".join(outcome.section()))
    print("\n".join(t.line() for t in outcome.targets()))
