"""Every public name of jaxreg, across the dimensions it promises to work along.

The table is ``tests/conformance.py``: one :class:`conformance.Op` per public operation
(and per variant worth its own row), and a check for each name with nothing to run on
its own. For every op, where it applies (``Op.skip`` says why it does not):

* dtypes: float32, bfloat16, float16 keep their dtype (or follow the op's rule, e.g.
  penalties accumulate in float32), and a 16-bit result equals the op computed in
  float32 from the same draws and rounded once;
* x64: a float64 input stays float64 all the way, not through float32;
* transformations, in one compiled program: ``jit`` with the rate/strength traced
  (equal to it known while tracing), ``vmap`` over keys and the rate/strength at once
  (equal to the unbatched calls of ``lax.scan``), ``grad`` (consistent with ``jvp``),
  ``jax.checkpoint``;
* edge shapes: odd, empty and scalar (or the clear ``ValueError`` the op owes them);
* keys: typed threefry, rbg and unsafe_rbg keys, and the raw ``uint32`` data of each
  (under that default implementation): two keys give two draws, and raw data draws
  what its typed key draws;
* meshes (``test_every_op_on_explicit_and_auto_meshes``, 4 emulated devices in one
  subprocess, the unsharded run computed once for both kinds of mesh): batch-
  and parameter-sharded inputs under ``AxisType.Explicit`` (what
  ``jax.make_mesh`` makes by default) and ``AxisType.Auto``, equal to the unsharded run;
* lowering: ``jax.export`` of the op and of its gradient, in float32 and bfloat16, for
  ``cuda``, ``rocm`` and ``tpu`` at once, with no custom call.
"""

from __future__ import annotations

import functools
import importlib
import pathlib
import re
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conformance
import cpu_devices
from conformance import OPS

# Programs run once on tiny arrays: LLVM's optimizations would cost more than they save.
jit_once = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
KEYS = jax.random.split(jax.random.key(42), 2)


def ops_for(dimension):
  return [pytest.param(op, id=op.name) for op in OPS.values() if dimension not in op.skip]


def data(shape, dtype=jnp.float32, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def hyper(op, i=0):
  return None if op.hyper is None else op.hyper[i]


def key_for(op, key=KEYS[0]):
  return key if op.keyed else None


def expected_dtypes(op, out, dtype):
  rules = op.out_dtype
  if callable(rules):
    return jax.tree.map(lambda _: jnp.dtype(rules(dtype)), out)
  return jax.tree.map(lambda rule, leaf: jax.tree.map(lambda _: jnp.dtype(rule(dtype)), leaf),
                      tuple(rules), tuple(out), is_leaf=callable)


def assert_dtypes(op, out, dtype):
  actual = jax.tree.map(lambda leaf: jnp.dtype(leaf.dtype), out)
  assert actual == expected_dtypes(op, out, dtype), (op.name, jnp.dtype(dtype).name, actual)


def assert_finite(out, label):
  for leaf in conformance.floating_leaves(out):
    assert bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32)))), (label, leaf)


def assert_trees_close(actual, expected, rtol, label):
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    if rtol == 0 or not np.issubdtype(a.dtype, np.floating):
      np.testing.assert_array_equal(a, b, err_msg=label)
    else:
      np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=label)


# The table covers the public API ------------------------------------------------------

def _resolve(dotted: str):
  """The object a table name stands for: ``jaxreg.transforms.prox_sgd`` -> the function."""
  module, _, name = dotted.rpartition(".")
  return getattr(importlib.import_module(module), name)


def _defined_here(module, name) -> bool:
  value = getattr(module, name)
  if isinstance(value, types.ModuleType):
    return False
  origin = getattr(value, "__module__", None)
  if origin is None:  # a constant: public if named in capitals
    return name.isupper()
  # A package's names are defined in its private modules (jaxreg.transforms._sgd).
  return (origin == module.__name__ or str(origin).startswith(module.__name__ + ".")
          or (module.__name__ == "jaxreg" and str(origin).startswith("jaxreg")))


@pytest.mark.parametrize("module_name", conformance.MODULES)
def test_every_public_name_is_in_all_and_in_the_table(module_name):
  module = importlib.import_module(module_name)
  public = {name for name in vars(module) if not name.startswith("_")
            and _defined_here(module, name)}
  unlisted = public - set(module.__all__)
  assert not unlisted, f"add to {module_name}.__all__: {sorted(unlisted)}"
  in_table = {name for op in OPS.values() for name in op.names} | set(conformance.COVERED)
  # A name re-exported from another public module (jaxreg.stochastic.dropout is
  # jaxreg.dropout) is covered by that module's row.
  covered = [_resolve(name) for name in in_table]
  missing = {f"{module_name}.{name}" for name in module.__all__
             if f"{module_name}.{name}" not in in_table
             and not any(getattr(module, name) is value for value in covered)}
  assert not missing, f"add to tests/conformance.py: {sorted(missing)}"


def test_every_skip_names_a_dimension_and_a_reason():
  for op in OPS.values():
    assert set(op.skip) <= set(conformance.DIMENSIONS), (op.name, op.skip)
    assert all(isinstance(reason, str) and reason for reason in op.skip.values()), op.name
    assert set(op.shapes) == {"odd", "empty", "scalar"}, (op.name, op.shapes)


@pytest.mark.parametrize("check", sorted(set(conformance.COVERED.values()),
                                         key=lambda f: f.__name__), ids=lambda f: f.__name__)
def test_names_without_an_op_of_their_own(check):
  check()


# dtypes ----------------------------------------------------------------------------------

_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


@pytest.mark.parametrize("op", ops_for("dtypes"))
def test_dtypes_are_kept_and_16_bit_results_rounded_once(op):
  xs = [data(op.shape, dtype) for dtype in _DTYPES]
  outs = jit_once(lambda key, xs, h: [op.run(key, x, h) for x in xs])(key_for(op), xs,
                                                                       hyper(op))
  for dtype, x, out in zip(_DTYPES, xs, outs):
    assert_dtypes(op, out, dtype)
    assert_finite(out, (op.name, dtype))
    if op.reference is not None and dtype != jnp.float32:
      expected = op.reference(key_for(op), x, hyper(op))
      for leaf, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
        # 16-bit outputs bit for bit; float32 sums (penalty values) to their rounding.
        rtol = 0 if leaf.dtype == dtype else 1e-6
        assert_trees_close(leaf, want, rtol, f"{op.name} {jnp.dtype(dtype).name}: not rounded once")


@pytest.mark.parametrize("op", ops_for("x64"))
def test_float64_stays_float64(op):
  with jax.enable_x64(True):
    x = data(op.shape, jnp.float64)
    out = jit_once(op.run)(key_for(op), x, hyper(op))
    assert_dtypes(op, out, jnp.float64)
    assert_finite(out, op.name)
    # Through float32 anywhere, every value would lie on float32's grid.
    for leaf in conformance.floating_leaves(out):
      if leaf.dtype == jnp.float64 and leaf.size and bool(jnp.any(leaf != 0)):
        on_grid = leaf.astype(jnp.float32).astype(jnp.float64) == leaf
        assert not bool(jnp.all(on_grid)), (op.name, "went through float32")


# transformations -------------------------------------------------------------------------

def _transformations(op):
  """One program: the op with its hyper traced and known; vmapped over (key, hyper)
  pairs, both batched; scanned over the same pairs (unbatched calls); its gradient,
  plain and under jax.checkpoint; its jvp."""
  skip = op.skip

  def call(key, x, h):
    return op.run(key if op.keyed else None, x, None if op.hyper is None else h)

  def program(keys, x, hypers, tangent):
    out = {"base": call(keys[0], x, hypers[0]),
           "known": call(keys[0], x, hyper(op)),  # a Python float, known while tracing
           "vmap": jax.vmap(lambda k, h: call(k, x, h))(keys, hypers)}
    if "scan" not in skip:
      out["scan"] = jax.lax.scan(lambda c, kh: (c, call(kh[0], x, kh[1])), None,
                                 (keys, hypers))[1]
    loss = lambda x: conformance.total(call(keys[0], x, hypers[0]))
    if "grad" not in skip:
      out["grad"] = jax.grad(loss)(x)
    if "checkpoint" not in skip:
      out["remat_grad"] = jax.grad(jax.checkpoint(loss))(x)
    if "jvp" not in skip:
      out["jvp"] = jax.jvp(loss, (x,), (tangent,))[1]
    return out

  return program


@pytest.mark.parametrize("op", ops_for("jit"))
def test_transformations(op):
  x = data(op.shape)
  hypers = jnp.asarray(op.hyper if op.hyper is not None else (0.0, 0.0), jnp.float32)
  tangent = data(op.shape, seed=1)
  out = jit_once(_transformations(op))(KEYS, x, hypers, tangent)
  # A traced rate or strength gives what a known one does (the hyper values are exact
  # in float32), a vmapped call what the unbatched one does.
  assert_trees_close(out["base"], out["known"], 1e-6, f"{op.name}: traced vs known hyper")
  assert_trees_close(out["base"], jax.tree.map(lambda leaf: leaf[0], out["vmap"]), 1e-6,
                     f"{op.name}: unbatched vs vmap")
  if "scan" in out:
    assert_trees_close(out["scan"], out["vmap"], 1e-6, f"{op.name}: scan vs vmap")
  if op.keyed and "vmap_keys" not in op.skip:
    assert any(not np.array_equal(leaf[0], leaf[1]) for leaf in jax.tree.leaves(out["vmap"])), (
        f"{op.name}: two keys in one vmap, one draw")
  if "grad" in out:
    assert_finite(out["grad"], op.name)
    if "jvp" in out:
      directional = float(jnp.sum(out["grad"] * tangent))
      np.testing.assert_allclose(directional, float(out["jvp"]), rtol=op.grad_rtol,
                                 atol=op.grad_rtol, err_msg=f"{op.name}: grad vs jvp")
    if "remat_grad" in out:
      assert_trees_close(out["remat_grad"], out["grad"], 1e-6, f"{op.name}: checkpoint")


# edge shapes -----------------------------------------------------------------------------

@pytest.mark.parametrize("op", ops_for("shapes"))
def test_edge_shapes(op):
  taken = {}
  for kind, shape in op.shapes.items():
    if isinstance(shape, conformance.Raises):
      with pytest.raises(shape.error, match=shape.match):
        op.run(key_for(op), data(shape.shape), hyper(op))
    elif not isinstance(shape, str):  # a str says why this kind does not apply
      taken[kind] = data(shape)
  outs = jit_once(lambda key, xs, h: {kind: op.run(key, x, h) for kind, x in xs.items()})(
      key_for(op), taken, hyper(op))
  for kind, out in outs.items():
    assert_dtypes(op, out, jnp.float32)
    assert_finite(out, (op.name, kind))


# keys --------------------------------------------------------------------------------------

def _keys(seed):
  """Every kind of key for ``seed``: typed threefry, rbg and unsafe_rbg keys, and the
  raw ``uint32`` data of a threefry key (the default implementation)."""
  return {"threefry": jax.random.key(seed), "rbg": jax.random.key(seed, impl="rbg"),
          "unsafe_rbg": jax.random.key(seed, impl="unsafe_rbg"),
          "raw threefry": jax.random.PRNGKey(seed)}


@pytest.mark.parametrize("op", [p for p in ops_for("keys") if p.values[0].keyed])
def test_every_key_kind(op):
  x = data(op.shape)

  def program(keys, raw, x, h):
    out = {kind: [op.run(key, x, h) for key in pair] for kind, pair in keys.items()}
    for impl, pair in raw.items():
      with jax.default_prng_impl(impl):  # raw data, under the default made so
        out[f"raw {impl}"] = [op.run(key, x, h) for key in pair]
    return out

  keys = {kind: (a, b) for (kind, a), b in zip(_keys(1).items(), _keys(2).values())}
  raw = {}
  for impl in ("rbg", "unsafe_rbg"):
    with jax.default_prng_impl(impl):
      raw[impl] = (jax.random.PRNGKey(1), jax.random.PRNGKey(2))
  out = jit_once(program)(keys, raw, x, hyper(op))
  for kind, (first, second) in out.items():
    assert_dtypes(op, first, jnp.float32)
    assert_finite(first, (op.name, kind))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first),
                                                       jax.tree.leaves(second))), (
        f"{op.name}, {kind} keys: two keys, one draw")
  # Raw data is the same key as the typed one it came from.
  assert_trees_close(out["raw threefry"], out["threefry"], 0, f"{op.name}: raw threefry")
  assert_trees_close(out["raw rbg"], out["rbg"], 0, f"{op.name}: raw rbg")
  assert_trees_close(out["raw unsafe_rbg"], out["unsafe_rbg"], 0, f"{op.name}: raw unsafe_rbg")


# lowering for accelerators -----------------------------------------------------------------

_PLATFORMS = ("cuda", "rocm", "tpu")


@pytest.mark.parametrize("op", ops_for("lowering"))
def test_lowers_for_accelerators_with_no_custom_call(op):
  key = jax.random.key(0) if op.keyed else None
  h = hyper(op)
  forward = lambda x: op.run(key, x, h)
  gradient = jax.grad(lambda x: conformance.total(forward(x)))

  def program(x32, x16):  # forward and gradient, float32 and bfloat16, in one module
    return [(forward(x), None if "grad" in op.skip else gradient(x)) for x in (x32, x16)]

  exported = jax.export.export(jax.jit(program), platforms=_PLATFORMS)(
      data(op.shape), data(op.shape, jnp.bfloat16))
  assert exported.platforms == _PLATFORMS
  calls = sorted(set(re.findall(r"custom_call @(\w+)", exported.mlir_module())))
  assert not calls, (op.name, calls)


# meshes ------------------------------------------------------------------------------------

_MESH_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import conformance
    from test_conformance import data, assert_trees_close, key_for, hyper, jit_once

    assert jax.device_count() == 4, jax.devices()
    meshes = {{axis_type: jax.make_mesh((4,), ("d",), axis_types=(AxisType[axis_type],))
              for axis_type in ("Explicit", "Auto")}}
    failures = []
    for op in conformance.OPS.values():
      if "mesh" in op.skip:
        continue
      x = data(op.shape)
      run = jit_once(op.run)
      expected = run(key_for(op), x, hyper(op))  # Unsharded, once for both mesh kinds.
      param = [None] * x.ndim
      param[op.param_axis] = "d"
      specs = {{"batch": P("d"), "parameter": P(*param)}}
      for axis_type, mesh in meshes.items():
        for which, spec in specs.items():
          label = f"{{op.name}}: {{which}}-sharded on an {{axis_type}} mesh"
          try:
            with jax.set_mesh(mesh):
              out = run(key_for(op), jax.device_put(x, NamedSharding(mesh, spec)), hyper(op))
            assert_trees_close(out, expected, op.sharded_rtol, label)
          except Exception as error:  # report every failure, not the first
            failures.append(f"{{label}}: {{type(error).__name__}}: {{str(error)[:400]}}")
    print("\\n".join(failures) or "ALL OK")
    sys.exit(1 if failures else 0)
""")


def test_every_op_on_explicit_and_auto_meshes():
  tests = str(pathlib.Path(__file__).resolve().parent)
  script = _MESH_SCRIPT.format(tests=tests)
  result = subprocess.run([sys.executable, "-c", script], env=cpu_devices.environment(4),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
