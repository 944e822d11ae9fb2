"""Training on several devices: what jaxreg keeps identical, and what it never gathers.

The device count is fixed when JAX starts, so the checks run in one subprocess with 8
emulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``): this
file is that subprocess's script, and each test asserts that one check passed there.

* Training with dropout and ``prox_adam`` + L1 on a data-parallel mesh and on an FSDP
  mesh gives the losses and parameters of one device, to float tolerance (the batch sum
  of the gradient is reduced in another order), with the same exact zeros.
* Penalty values, gradients, proxes and every transform keep the parameters' shardings,
  and their compiled HLO gathers no parameter: the value needs one all-reduce of
  scalars, the rest no communication at all.
* Inside ``shard_map``: ``jr.dropout(..., global_shape=, start=)`` draws each shard's
  block of the unsharded mask, bit for bit; a key folded with the axis index draws
  independent masks per shard instead.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

import cpu_devices
import jaxreg as jr
from jaxreg import transforms

DEVICES = 8
CHECKS = {}


def check(fn):
  CHECKS[fn.__name__] = fn
  return fn


def _mesh(shape, names) -> Mesh:
  grid = np.asarray(jax.devices()[:int(np.prod(shape))]).reshape(shape)
  return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


# A 64-128-10 MLP. Specs for FSDP over the 'fsdp' axis: each kernel and bias split
# along a dim that the axis divides, the 10-wide output bias replicated.
_SIZES = (64, 128, 10)
_FSDP_SPECS = [{"kernel": P(None, "fsdp"), "bias": P("fsdp")},
               {"kernel": P("fsdp", None), "bias": P()}]
_REG = jr.L1(1e-3, where=jr.select.kernels()) + jr.L2(1e-4)
_LR = 1e-2


def _init(seed):
  # numpy, not jax.random: every eager JAX op would compile on its own.
  rng = np.random.default_rng(seed)
  return [{"kernel": (rng.standard_normal((n_in, n_out)) * n_in**-0.5).astype(np.float32),
           "bias": np.full((n_out,), 0.01, np.float32)}
          for n_in, n_out in zip(_SIZES, _SIZES[1:])]


def _loss(params, x, y, key):
  for i, layer in enumerate(params[:-1]):
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
    x = jr.dropout(jax.random.fold_in(key, i), x, 0.3)
  logits = x @ params[-1]["kernel"] + params[-1]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _data(steps, batch):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((steps * batch, _SIZES[0])).astype(np.float32)
  x[:, :4] = 0.0  # Dead inputs, as the digits' border pixels: their rows go to 0.
  return x, rng.integers(0, _SIZES[-1], steps * batch).astype(np.int32)


def _train(param_shardings, batch_sharding, steps=4, batch=64):
  """``steps`` of prox_adam; params and batches placed as given (None: one device).

  Adam divides each gradient by its own size plus ``eps``, so a gradient near 0 carries
  its rounding (another summation order across devices) into a step of up to
  ``lr·rounding/eps``: with the default ``eps=1e-8`` that is ``1e-5`` here. ``eps=1e-3``
  bounds it, so that parameters can be compared to 1e-6.
  """
  tx = transforms.prox_adam(_LR, _REG, eps=1e-3)
  params = jax.device_put(_init(1), param_shardings)
  state = jax.jit(tx.init)(params)

  @jax.jit
  def step(params, state, x, y, i):
    key = jax.random.fold_in(jax.random.key(2), i)
    loss, grads = jax.value_and_grad(_loss)(params, x, y, key)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss + _REG(params)

  xs, ys = _data(steps, batch)
  losses = []
  for i in range(steps):
    x, y = xs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch]
    if batch_sharding is not None:
      x, y = jax.device_put((x, y), batch_sharding)
    params, state, loss = step(params, state, x, y, i)
    losses.append(loss)
  return np.asarray(losses), params, state


def _same_shardings(tree, shardings):
  for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)


@check
def training_on_data_parallel_and_fsdp_meshes_matches_one_device():
  losses_1, params_1, _ = _train(None, None)
  zeros_1 = [np.asarray(w) == 0 for w in jax.tree.leaves(params_1)]
  assert sum(z.sum() for z in zeros_1) > 100, "the run must make exact zeros to compare"
  dp = _mesh((DEVICES,), ("data",))
  fsdp = _mesh((2, 4), ("data", "fsdp"))
  meshes = {
      "data parallel": (jax.tree.map(lambda _: NamedSharding(dp, P()), params_1),
                        NamedSharding(dp, P("data"))),
      "fsdp": (jax.tree.map(lambda spec: NamedSharding(fsdp, spec), _FSDP_SPECS,
                            is_leaf=lambda s: isinstance(s, P)),
               NamedSharding(fsdp, P(("data", "fsdp")))),
  }
  for name, (param_shardings, batch_sharding) in meshes.items():
    losses, params, state = _train(param_shardings, batch_sharding)
    np.testing.assert_allclose(losses, losses_1, rtol=1e-6, err_msg=name)
    for w, w_1, z_1 in zip(jax.tree.leaves(params), jax.tree.leaves(params_1), zeros_1):
      np.testing.assert_allclose(w, w_1, rtol=0, atol=1e-6, err_msg=name)
      np.testing.assert_array_equal(np.asarray(w) == 0, z_1, err_msg=name)
    _same_shardings(params, param_shardings)
    _same_shardings(state.mu, param_shardings)
    _same_shardings(state.nu, param_shardings)


# Collectives in compiled HLO: "%name = <shape> <op>(" or "<op>-start(" when async.
_COLLECTIVE = re.compile(
    r"= (\(.*?\)|\S+) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute|"
    r"collective-broadcast|ragged-all-to-all)(?:-start)?\(")


def _compile(fn, *args):
  """``fn`` compiled for ``args``, and ``(op, result shape)`` of every collective in
  its HLO."""
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, [(op, shape) for shape, op in _COLLECTIVE.findall(compiled.as_text())]


def _scalars_only(shape: str) -> bool:
  return all(dims == "" for dims in re.findall(r"\w+\[([^\]]*)\]", shape))


def _fsdp_params():
  mesh = _mesh((2, 4), ("data", "fsdp"))
  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), _FSDP_SPECS,
                           is_leaf=lambda s: isinstance(s, P))
  params = jax.device_put(_init(3))
  return params, jax.device_put(params, shardings), shardings


_REGULARIZERS = {
    "L1(kernels) + L2": _REG,
    "ElasticNet": jr.ElasticNet(1e-3, 1e-4),
}


@check
def penalty_value_needs_one_all_reduce_of_scalars():
  params, sharded, _ = _fsdp_params()
  for name, reg in _REGULARIZERS.items():
    value, ops = _compile(reg, sharded)
    assert [op for op, _ in ops] == ["all-reduce"], (name, ops)
    assert _scalars_only(ops[0][1]), (name, ops)
    np.testing.assert_allclose(value(sharded), jax.jit(reg)(params), rtol=1e-6, err_msg=name)


@check
def hlo_reader_sees_a_gather_where_there_is_one():
  # The control for the checks that find no collective: replicating the parameters
  # gathers every split one.
  _, sharded, shardings = _fsdp_params()
  replicated = NamedSharding(jax.tree.leaves(shardings)[0].mesh, P())
  _, ops = _compile(lambda p: jax.lax.with_sharding_constraint(p, replicated), sharded)
  assert "all-gather" in [op for op, _ in ops], ops


@check
def gradient_and_prox_keep_shardings_and_move_no_data():
  params, sharded, shardings = _fsdp_params()
  for name, reg in _REGULARIZERS.items():
    for what, fn in {"grad": jax.grad(reg), "prox": lambda p, reg=reg: reg.prox(p, 0.5)}.items():
      compiled, ops = _compile(fn, sharded)
      assert ops == [], (name, what, ops)
      out = compiled(sharded)
      _same_shardings(out, shardings)
      # Elementwise maps: bit for bit what the same program computes on one device.
      jax.tree.map(np.testing.assert_array_equal, out, jax.jit(fn)(params))


def _transforms():
  """Every transform of jaxreg.transforms, as a (name, GradientTransformation)."""
  return {
      "add_gradient": optax.chain(transforms.add_gradient(_REG), optax.sgd(_LR)),
      "proximal": optax.chain(optax.adam(_LR), transforms.proximal(_LR, _REG)),
      "prox_sgd": transforms.prox_sgd(_LR, _REG, momentum=0.9),
      "prox_sgd(accelerated)": transforms.prox_sgd(_LR, _REG, accelerated=True),
      "prox_adam": transforms.prox_adam(_LR, _REG),
      "prox_adagrad": transforms.prox_adagrad(_LR, _REG),
      "ftrl": transforms.ftrl(_LR, l1=1e-3, l2=1e-4, l2_shrinkage=1e-4),
  }


@check
def every_transform_keeps_shardings_and_moves_no_data():
  params, sharded, shardings = _fsdp_params()
  grads = jax.device_put(jax.tree.map(lambda w: np.cos(w) * 0.1, _init(4)), shardings)
  by_shape = {w.shape: s for w, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings))}

  for name, tx in _transforms().items():
    def step(grads, state, params, tx=tx):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    state = jax.jit(tx.init)(sharded)
    compiled, ops = _compile(step, grads, state, sharded)
    assert ops == [], (name, ops)
    new_params, new_state = compiled(grads, state, sharded)
    _same_shardings(new_params, shardings)
    for leaf in jax.tree.leaves(new_state):  # Moments, traces, FISTA's iterate.
      if leaf.ndim:
        assert leaf.sharding.is_equivalent_to(by_shape[leaf.shape], leaf.ndim), (name, leaf)
    expected, _ = jax.jit(step)(jax.device_get(grads), jax.jit(tx.init)(params), params)
    jax.tree.map(np.testing.assert_array_equal, new_params, expected)


@check
def group_norms_gather_no_parameter():
  # A group's norm reduces across the shards of the group: an all-reduce of one norm
  # per group, never a gather of the weights. So for the max-norm projection.
  params, sharded, shardings = _fsdp_params()
  group_lasso = jr.GroupLasso(1e-2, axis=0, where=jr.select.kernels())
  max_norm = jr.MaxNorm(0.5, axis=0, where=jr.select.kernels())
  functions = {"GroupLasso value": group_lasso, "GroupLasso grad": jax.grad(group_lasso),
               "GroupLasso prox": lambda p: group_lasso.prox(p, 0.5),
               "MaxNorm prox": lambda p: max_norm.prox(p, 1.0)}
  for what, fn in functions.items():
    compiled, ops = _compile(fn, sharded)
    assert ops and {op for op, _ in ops} == {"all-reduce"}, (what, ops)
    if what.endswith("prox"):
      out = compiled(sharded)
      _same_shardings(out, shardings)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                   out, jax.jit(fn)(params))


def _shard_mapped(fn, mesh, spec):
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), spec), out_specs=spec))


def _unsharded_dropout(key, x, **kwargs):
  return jax.jit(functools.partial(jr.dropout, rate=0.3, **kwargs))(key, x)


_X = np.random.default_rng(8).standard_normal((64, 96)).astype(np.float32)


@check
def shard_map_global_block_equals_the_unsharded_mask():
  key, x = jax.random.key(7), _X
  cases = {
      "rows over 8": (_mesh((8,), ("d",)), P("d", None), {}),
      "2-d blocks": (_mesh((2, 4), ("a", "b")), P("a", "b"), {}),
      "broadcast along the sharded dim": (_mesh((2, 4), ("a", "b")), P("a", "b"),
                                          {"broadcast_dims": (1,)}),
      "exact": (_mesh((8,), ("d",)), P("d", None), {"exact": True}),
  }
  for name, (mesh, spec, kwargs) in cases.items():
    def block(key, x_local, spec=spec, mesh=mesh, kwargs=kwargs):
      start = tuple(0 if axis is None else jax.lax.axis_index(axis) * n
                    for axis, n in zip(spec, x_local.shape))
      return jr.dropout(key, x_local, 0.3, global_shape=x.shape, start=start, **kwargs)

    f, ops = _compile(_shard_mapped(block, mesh, spec), key, x)
    assert ops == [], (name, ops)
    np.testing.assert_array_equal(f(key, x), _unsharded_dropout(key, x, **kwargs),
                                  err_msg=name)
    if name == "rows over 8":  # The backward pass draws the same block again.
      grad = _shard_mapped(lambda k, x: jax.grad(lambda x: jnp.sum(block(k, x) ** 2))(x),
                           mesh, spec)
      expected = jax.jit(jax.grad(lambda x, k: jnp.sum(jr.dropout(k, x, 0.3) ** 2)))(x, key)
      np.testing.assert_array_equal(grad(key, x), expected)


@check
def shard_map_folded_keys_draw_independent_masks_per_shard():
  key, x = jax.random.key(7), _X
  mesh = _mesh((8,), ("d",))
  folded = jax.jit(lambda key, x, i: jr.dropout(jax.random.fold_in(key, i), x, 0.3))

  def independent(key, x_local):
    return jr.dropout(jax.random.fold_in(key, jax.lax.axis_index("d")), x_local, 0.3)

  kept = np.asarray(_shard_mapped(independent, mesh, P("d", None))(key, x)) != 0
  blocks = kept.reshape(8, 8, 96)
  global_blocks = (np.asarray(_unsharded_dropout(key, x)) != 0).reshape(8, 8, 96)
  for i in range(8):
    own = np.asarray(folded(key, x[8 * i:8 * (i + 1)], i)) != 0
    np.testing.assert_array_equal(blocks[i], own)
    assert not np.array_equal(blocks[i], global_blocks[i]), i
    for j in range(i):
      assert not np.array_equal(blocks[i], blocks[j]), (i, j)


def _main() -> None:
  assert jax.device_count() == DEVICES, jax.devices()
  for name, fn in CHECKS.items():
    try:
      fn()
      print(f"{name}: ok", flush=True)
    except Exception:  # Reported to the test of this check, and the next one runs.
      print(f"{name}: FAILED\n{traceback.format_exc()}", flush=True)


def _run_every_check() -> str:
  result = subprocess.run([sys.executable, __file__], env=cpu_devices.environment(DEVICES),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout


@pytest.fixture(scope="session")
def eight_devices(once_per_session) -> str:
  return once_per_session("eight devices", _run_every_check)


@pytest.mark.parametrize("name", list(CHECKS))
def test_on_eight_devices(eight_devices, name):
  assert f"{name}: ok" in eight_devices, eight_devices


def test_global_shape_and_start_go_together():
  x = jnp.ones((4, 6))
  with pytest.raises(ValueError, match="global_shape and start"):
    jr.dropout(jax.random.key(0), x, 0.5, global_shape=(8, 6))
  with pytest.raises(ValueError, match="global_shape and start"):
    jr.dropout(jax.random.key(0), x, 0.5, start=(4, 0))


def test_global_block_outside_the_array_raises():
  with pytest.raises(ValueError, match="outside"):
    jr.dropout(jax.random.key(0), jnp.ones((4, 6)), 0.5, global_shape=(8, 6), start=(6, 0))


def test_global_block_equals_slice_of_whole_mask_on_one_device():
  key, x = jax.random.key(0), _X[:8, :6]

  @jax.jit
  def whole_and_part(key, x):
    part = jr.dropout(key, x[4:, 2:5], 0.5, global_shape=x.shape, start=(4, 2))
    return jr.dropout(key, x, 0.5)[4:, 2:5], part

  whole, part = whole_and_part(key, x)
  np.testing.assert_array_equal(part, whole)
  assert 0 < int(jnp.sum(part == 0)) < part.size  # Some dropped, some kept.


if __name__ == "__main__":
  _main()
