"""Data parallelism and FSDP over a device mesh, with dropout and proximal L1.

A Flax NNX MLP on scikit-learn's digits is trained on a ``jax.sharding.Mesh`` with two
axes, ``data`` and ``fsdp``: every batch is split over all the devices (data
parallelism), and every parameter and its Adam moments are split over ``fsdp`` along
their largest dim that it divides, replicated over ``data`` (fully sharded data
parallelism). The model, the loss and the optimizer never mention devices: ``jax.jit``
and XLA's partitioner place the work from the shardings of the inputs alone. The model
has dropout (``jaxreg.nnx.Dropout``), and ``prox_adam`` with ``jr.L1`` on the kernels
makes exact zeros.

The same steps with the same keys on one device give the same run up to rounding:
the dropout masks are bit-identical under any sharding, and the penalty's prox and
``prox_adam`` act coordinate by coordinate, with no communication, but the gradient's
sum over the batch is added up in another order across devices, and the two runs
drift apart by that rounding, slowly. The script checks what holds at its defaults
and prints it: the losses agree to a relative ``1e-3`` at every step, and the exact
zeros are the same except for coordinates that the other run leaves within one step of
zero (``|w| <= lr``). Longer runs (``--steps`` above 60) drift further apart and are
compared, not checked. A short linen section does the same with a linen model.

On a CPU, the script emulates ``--devices`` devices: it sets
``XLA_FLAGS=--xla_force_host_platform_device_count`` before importing jax (the flag
affects the CPU platform only). On a GPU node or a TPU slice it uses the real devices;
on several hosts, start one process per host with ``--distributed``, which calls
``jax.distributed.initialize()`` first (``--coordinator``, ``--num-processes`` and
``--process-id`` where it cannot find its peers by itself; docs/sharding.md runs two
processes on one CPU this way).

  python examples/data_parallel.py                     # 8 devices, mesh data=2 x fsdp=4
  python examples/data_parallel.py --fsdp 1            # pure data parallelism
  python examples/data_parallel.py --steps 3 --hidden 32 --linen-steps 2   # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, default=8,
                      help="devices to emulate when running on a CPU (default 8)")
  parser.add_argument("--fsdp", type=int, default=4,
                      help="size of the mesh's fsdp axis; data = devices / fsdp (default 4)")
  parser.add_argument("--steps", type=int, default=60, help="NNX training steps (default 60)")
  parser.add_argument("--linen-steps", type=int, default=10,
                      help="steps of the linen section (default 10)")
  parser.add_argument("--batch", type=int, default=128,
                      help="global batch size, a multiple of the device count (default 128)")
  parser.add_argument("--hidden", type=int, default=256, help="hidden width (default 256)")
  parser.add_argument("--rate", type=float, default=0.2, help="dropout rate (default 0.2)")
  parser.add_argument("--l1", type=float, default=1e-4,
                      help="L1 strength on the kernels (default 1e-4)")
  parser.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
  parser.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() (one process per host); "
                      "on Cloud TPU, SLURM and Open MPI it finds its peers by itself")
  parser.add_argument("--coordinator", help="with --distributed elsewhere: host:port of process 0")
  parser.add_argument("--num-processes", type=int, help="with --coordinator: how many processes")
  parser.add_argument("--process-id", type=int, help="with --coordinator: this process's index")
  return parser.parse_args(argv)


def emulate_cpu_devices(count: int) -> None:
  """Asks XLA for ``count`` CPU devices; only works before jax is imported."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}"


if __name__ == "__main__":
  ARGS = parse_args()
  emulate_cpu_devices(ARGS.devices)

# jax reads XLA_FLAGS when it is imported, hence the imports after the arguments.
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P  # noqa: E402
from sklearn import datasets  # noqa: E402

import jaxreg as jr  # noqa: E402
from jaxreg import linen as jl  # noqa: E402
from jaxreg import nnx as jn  # noqa: E402


class MLP(nnx.Module):
  """Two hidden ReLU layers, each followed by dropout; ``rngs`` is the dropout key."""

  def __init__(self, hidden: int, rate: float, *, rngs: nnx.Rngs):
    self.hidden1 = nnx.Linear(64, hidden, rngs=rngs)
    self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.dropout = jn.Dropout(rate)
    self.out = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x, *, rngs=None):
    # One key per dropout call: the same key on two arrays of one shape would draw
    # the same mask twice.
    keys = jax.random.split(rngs) if rngs is not None else (None, None)
    x = self.dropout(nnx.relu(self.hidden1(x)), rngs=keys[0])
    x = self.dropout(nnx.relu(self.hidden2(x)), rngs=keys[1])
    return self.out(x)


class LinenMLP(nn.Module):
  """The same network in linen; dropout draws from the ``'dropout'`` rng stream."""
  hidden: int
  rate: float

  @nn.compact
  def __call__(self, x, train: bool = True):
    for _ in range(2):
      x = jl.Dropout(self.rate, deterministic=not train)(nn.relu(nn.Dense(self.hidden)(x)))
    return nn.Dense(10)(x)


def make_mesh(devices, fsdp: int) -> Mesh:
  """A ``(data, fsdp)`` mesh over ``devices``. Auto axes: XLA's partitioner places
  every intermediate, so the model code needs no sharding annotations."""
  if len(devices) % fsdp:
    raise ValueError(f"--fsdp {fsdp} does not divide the {len(devices)} devices")
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))


def fsdp_sharding(mesh: Mesh, leaf) -> NamedSharding:
  """Splits ``leaf`` over ``fsdp`` along its largest dim that the axis divides, and
  replicates it over ``data``; a leaf with no such dim is replicated."""
  size = mesh.shape["fsdp"]
  dims = [d for d in np.argsort(leaf.shape)[::-1] if leaf.shape[d] % size == 0]
  spec = [None] * leaf.ndim
  if dims and size > 1:
    spec[dims[0]] = "fsdp"
  return NamedSharding(mesh, P(*spec))


def global_batch(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from the same host array on every process: each process hands
  over the rows of its own devices, so this works on one host or many."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def place(params, mesh: Mesh):
  """``params`` split over the mesh's ``fsdp`` axis as :func:`fsdp_sharding` says."""
  return jax.device_put(params, jax.tree.map(lambda p: fsdp_sharding(mesh, p), params))


def make_step(apply, tx, reg):
  """The jitted training step: ``(params, opt_state, x, y, key) -> (params, opt_state,
  objective)``, where ``apply(params, x, key)`` gives the logits. Nothing in it names a
  device: the shardings of its arguments decide where everything runs."""

  @jax.jit
  def step(params, opt_state, x, y, key):
    def loss_fn(params):
      logits = apply(params, x, key)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    # The objective that prox_adam minimizes; the penalty costs one scalar all-reduce.
    return optax.apply_updates(params, updates), opt_state, loss + reg(params)

  return step


def regularized(args):
  """The penalty (L1 on the kernels, selected explicitly) and its proximal Adam."""
  reg = jr.L1(args.l1, where=jr.select.kernels())
  return reg, jr.transforms.prox_adam(args.lr, reg)


def train(apply, params, data, mesh: Mesh, args, steps: int):
  """``steps`` of prox_adam with L1 on the kernels; returns (losses, final params).

  Batches and dropout keys depend on the step only, so every mesh sees the same ones.
  """
  x_all, y_all = data
  reg, tx = regularized(args)
  step = make_step(apply, tx, reg)
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  params = place(params, mesh)
  opt_state = jax.jit(tx.init)(params)  # Moments take the params' shardings.
  order = np.random.default_rng(0).permutation(len(x_all))
  key = jax.random.key(1)
  losses = []
  for i in range(steps):
    rows = np.take(order, np.arange(i * args.batch, (i + 1) * args.batch), mode="wrap")
    x = global_batch(x_all[rows], batch_sharding)
    y = global_batch(y_all[rows], batch_sharding)
    params, opt_state, loss = step(params, opt_state, x, y, jax.random.fold_in(key, i))
    losses.append(loss)
  return np.asarray(jax.device_get(losses)), params


def host(tree):
  """Every leaf as a whole numpy array, also when other hosts hold some of it."""
  def fetch(leaf):
    if leaf.is_fully_addressable:  # All of it is here (a one-device run, for one).
      return np.asarray(leaf)
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return jax.tree.map(fetch, tree)


def shardings_kept(before, after) -> bool:
  return all(a.sharding.is_equivalent_to(b.sharding, a.ndim)
             for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))


# What a sharded run and a one-device run share. The gradient's batch sum is added up
# in another order across devices, so the runs drift apart by rounding, step after
# step, as any two reductions of one model do: slowly, not bit for bit.
LOSS_RTOL = 1e-3  # the objective at every step (seen: up to 3e-4 at the defaults)
CHECKED_STEPS = 60  # how long the agreement is checked: the drift grows with the steps


def differing_zeros(final_1, final_n):
  """``(count, largest |w|)`` over the coordinates that are exactly 0 in one run and
  not in the other, the largest taken in the run where they are not 0."""
  count, largest = 0, 0.0
  for a, b in zip(jax.tree.leaves(final_1), jax.tree.leaves(final_n)):
    differ = (a == 0) != (b == 0)
    count += int(differ.sum())
    if differ.any():
      largest = max(largest, float(np.max(np.abs(np.where(a == 0, b, a))[differ])))
  return count, largest


def compare(name, apply, params, data, mesh, args, steps, say) -> bool:
  """Trains on one device and on ``mesh`` from the same start; prints both and says
  whether they agree as stated above over the first ``CHECKED_STEPS`` steps: the
  losses to ``LOSS_RTOL`` at every step, and the exact zeros at the end, except
  coordinates that the other run leaves within one step of zero (``|w| <= lr``: an
  Adam step moves a weight by about ``lr``, so a coordinate near its threshold can be
  zeroed in one run and be one step short of it in the other). A longer run is
  compared, not checked: the two keep drifting apart, as rounding compounds."""
  one = make_mesh(jax.local_devices()[:1], 1)
  losses_1, final_1 = train(apply, params, data, one, args, steps)
  losses_n, final_n = train(apply, params, data, mesh, args, steps)
  placed = place(params, mesh)
  n = mesh.devices.size
  say(f"\n{name}: {steps} steps, {n} devices as {dict(mesh.shape)} against 1 device")
  say(f"{'step':>5}{'loss, 1 device':>18}{f'loss, {n} devices':>20}{'|difference|':>15}")
  for i in range(0, steps, max(1, steps // 10)):
    say(f"{i:>5}{losses_1[i]:>18.7f}{losses_n[i]:>20.7f}"
        f"{abs(losses_1[i] - losses_n[i]):>15.2e}")
  kept = shardings_kept(placed, final_n)
  final_1, final_n = host(final_1), host(final_n)
  zeros_1 = sum(int((w == 0).sum()) for w in jax.tree.leaves(final_1))
  size = sum(w.size for w in jax.tree.leaves(final_1))
  largest = max(float(np.max(np.abs(a - b)))
                for a, b in zip(jax.tree.leaves(final_1), jax.tree.leaves(final_n)))
  checked = slice(0, CHECKED_STEPS)
  worst = float(np.max(np.abs(losses_1 - losses_n)[checked] / np.abs(losses_1[checked])))
  losses_match = worst <= LOSS_RTOL
  differ, near = differing_zeros(final_1, final_n)
  zeros_match = near <= args.lr or steps > CHECKED_STEPS
  say(f"losses agree to rtol {LOSS_RTOL:g} at each of the first "
      f"{min(steps, CHECKED_STEPS)} steps: {losses_match} (largest relative difference "
      f"{worst:.1e}); largest parameter difference {largest:.1e}")
  verdict = (f"{zeros_match}" if steps <= CHECKED_STEPS
             else f"not checked after {steps} > {CHECKED_STEPS} steps")
  say(f"exact zeros: {zeros_1} of {size} parameters; {differ} are zero in one run only, "
      f"and at most {near:.1e} in the other, within one step of zero (lr = {args.lr:g}): "
      f"{verdict}; parameter shardings kept: {kept}")
  return losses_match and zeros_match and kept


def nnx_model(args):
  """``(apply, params)`` of the NNX MLP, by NNX's functional API: ``merge`` rebuilds
  the model from its parameters inside the jitted step."""
  graphdef, params = nnx.split(MLP(args.hidden, args.rate, rngs=nnx.Rngs(0)))
  return (lambda params, x, key: nnx.merge(graphdef, params)(x, rngs=key)), params


def load_digits():
  x, y = datasets.load_digits(return_X_y=True)
  return (x / 16.0).astype(np.float32), y.astype(np.int32)


def main(args) -> None:
  if args.distributed:
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  say = print if jax.process_index() == 0 else (lambda *_: None)
  devices = jax.devices()
  if args.batch % len(devices):
    raise SystemExit(f"--batch {args.batch} is not a multiple of the {len(devices)} devices")
  mesh = make_mesh(devices, args.fsdp)
  say(f"{len(devices)} {jax.default_backend()} devices, mesh {dict(mesh.shape)}")
  data = load_digits()

  apply, params = nnx_model(args)
  ok = compare("NNX", apply, params, data, mesh, args, args.steps, say)

  # linen: the same, with the params collection and the 'dropout' rng stream.
  model = LinenMLP(args.hidden, args.rate)
  params = model.init(jax.random.key(0), data[0][:1], train=False)["params"]
  apply = lambda params, x, key: model.apply({"params": params}, x, rngs={"dropout": key})
  ok &= compare("linen", apply, params, data, mesh, args, args.linen_steps, say)
  if not ok:
    raise SystemExit("the sharded run differs from the one-device run")


if __name__ == "__main__":
  main(ARGS)
