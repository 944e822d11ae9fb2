r"""Regularizers: values, gradients and proximal maps against formulas written in numpy.

The expected values never come from jaxreg: each penalty, gradient and prox is written
here from its definition, and the leaves a ``where=`` selects are spelled out by hand.
"""

import importlib
import re
from typing import Callable, NamedTuple

import chex
import hypothesis
from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax
import pytest
from sklearn import linear_model

import jaxreg as jr
from jaxreg import prox
from jaxreg import select


def numpy_params(dtype=np.float32):
  """A nested tree (dicts, a list, a tuple, Flax's ``{'params': ...}``) with int leaves."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(dtype)
  kernel = normal(4, 3)
  kernel[:, 1] = 0.0   # a zero group for GroupLasso(axis=0), zeros for L1
  kernel[2, 0] = 0.0
  return {
      "params": {
          "Dense_0": {"kernel": kernel, "bias": normal(3)},
          "LayerNorm_0": {"scale": normal(3)},
          "blocks": [{"kernel": normal(3, 3)}, ({"kernel": normal(2, 3, 2)}, normal(2))],
      },
      "step": np.int32(7),
      "ids": np.arange(3, dtype=np.int32),
  }


def to_jax(tree):
  return jax.tree.map(jnp.asarray, tree)


def walk(tree, prefix=()):
  """``(path, leaf)`` pairs of a nested dict/list/tuple, the path joined with ``/``."""
  if isinstance(tree, dict):
    for key, child in tree.items():
      yield from walk(child, prefix + (str(key),))
  elif isinstance(tree, (list, tuple)):
    for i, child in enumerate(tree):
      yield from walk(child, prefix + (str(i),))
  else:
    yield "/".join(prefix), tree


def leaf(tree, path):
  for key in path.split("/"):
    tree = tree[int(key) if isinstance(tree, (list, tuple)) else key]
  return tree


FLOATING = {"params/Dense_0/kernel", "params/Dense_0/bias", "params/LayerNorm_0/scale",
            "params/blocks/0/kernel", "params/blocks/1/0/kernel", "params/blocks/1/1"}
KERNELS = {"params/Dense_0/kernel", "params/blocks/0/kernel", "params/blocks/1/0/kernel"}

# (id, where, the floating leaves it selects, by hand).
WHERE_FORMS = [
    ("none", None, FLOATING),
    ("bool_tree", {
        "params": {"Dense_0": {"kernel": True, "bias": False}, "LayerNorm_0": {"scale": True},
                   "blocks": [{"kernel": False}, ({"kernel": True}, False)]},
        "step": False, "ids": False},
     {"params/Dense_0/kernel", "params/LayerNorm_0/scale", "params/blocks/1/0/kernel"}),
    # True on the int leaves too (ndim 0 and 1): they must still be left out.
    ("callable", lambda path, w: w.ndim != 2,
     {"params/Dense_0/bias", "params/LayerNorm_0/scale", "params/blocks/1/0/kernel",
      "params/blocks/1/1"}),
    ("kernels", select.kernels(), KERNELS),
    ("by_path", select.by_path("blocks"),
     {"params/blocks/0/kernel", "params/blocks/1/0/kernel", "params/blocks/1/1"}),
    ("exclude_strings", select.exclude("bias", "scale"),
     FLOATING - {"params/Dense_0/bias", "params/LayerNorm_0/scale"}),
    ("exclude_selectors", select.exclude(select.kernels(), "blocks/1/1"),
     {"params/Dense_0/bias", "params/LayerNorm_0/scale"}),
]
WHERE_IDS = [form[0] for form in WHERE_FORMS]


def np_group_norms(w, axis, keepdims=False):
  return np.sqrt(np.sum(np.asarray(w, np.float64) ** 2, axis=axis, keepdims=keepdims))


def np_group_shrink(w, t, axis):
  norms = np_group_norms(w, axis, keepdims=True)
  return w * np.maximum(1 - t / np.where(norms > 0, norms, np.inf), 0)


def np_group_grad(w, axis):
  norms = np_group_norms(w, axis, keepdims=True)
  return np.where(norms > 0, w / np.where(norms > 0, norms, 1), 0)


def np_soft(w, t):
  return np.sign(w) * np.maximum(np.abs(w) - t, 0)


class Kind(NamedTuple):
  """One regularizer, and its value, gradient and prox of ``s·R`` per leaf, in numpy."""
  make: Callable
  value: Callable
  grad: Callable
  prox: Callable           # (w, s) -> prox_{sR}(w), numpy
  jaxreg_prox: Callable    # (w, s) -> the same through jaxreg.prox, thresholds scaled here


A, B, G = 0.3, 0.7, 0.5
KINDS = {
    "L1": Kind(lambda where=None: jr.L1(A, where=where),
               lambda w: A * np.sum(np.abs(w)),
               lambda w: A * np.sign(w),
               lambda w, s: np_soft(w, s * A),
               lambda w, s: prox.soft_threshold(w, s * A)),
    "L2": Kind(lambda where=None: jr.L2(B, where=where),
               lambda w: B * np.sum(w ** 2),
               lambda w: 2 * B * w,
               lambda w, s: w / (1 + 2 * s * B),
               lambda w, s: prox.ridge(w, s * B)),
    "ElasticNet": Kind(lambda where=None: jr.ElasticNet(A, B, where=where),
                       lambda w: A * np.sum(np.abs(w)) + B * np.sum(w ** 2),
                       lambda w: A * np.sign(w) + 2 * B * w,
                       lambda w, s: np_soft(w, s * A) / (1 + 2 * s * B),
                       lambda w, s: prox.elastic_net(w, s * A, s * B)),
    "GroupLasso_axis0": Kind(lambda where=None: jr.GroupLasso(G, axis=0, where=where),
                             lambda w: G * np.sum(np_group_norms(w, 0)),
                             lambda w: G * np_group_grad(w, 0),
                             lambda w, s: np_group_shrink(w, s * G, 0),
                             lambda w, s: prox.group_soft_threshold(w, s * G, 0)),
    "GroupLasso_last": Kind(lambda where=None: jr.GroupLasso(G, axis=-1, where=where),
                            lambda w: G * np.sum(np_group_norms(w, -1)),
                            lambda w: G * np_group_grad(w, -1),
                            lambda w, s: np_group_shrink(w, s * G, -1),
                            lambda w, s: prox.group_soft_threshold(w, s * G, -1)),
}
KIND_NAMES = list(KINDS)


def expected_value(kind, params, paths):
  return sum(kind.value(np.asarray(leaf(params, p), np.float64)) for p in paths)


# Values ------------------------------------------------------------------------------

@pytest.mark.parametrize("form", WHERE_FORMS, ids=WHERE_IDS)
@pytest.mark.parametrize("name", KIND_NAMES)
def test_value_is_the_hand_formula_over_the_selected_leaves(name, form):
  _, where, paths = form
  kind, params = KINDS[name], numpy_params()
  value = kind.make(where)(to_jax(params))
  assert value.shape == () and value.dtype == jnp.float32
  np.testing.assert_allclose(value, expected_value(kind, params, paths), rtol=1e-6)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_nothing_selected_raises_and_lists_the_paths(name):
  params = to_jax(numpy_params())
  reg = KINDS[name].make(select.by_path("no_such_leaf"))
  message = r"where=jr.select.by_path\('no_such_leaf'\) selects no floating-point parameter"
  with pytest.raises(ValueError, match=message) as error:
    reg(params)
  assert "params/Dense_0/kernel (4, 3)" in str(error.value)
  assert "params/step" not in str(error.value)       # only what could be selected
  with pytest.raises(ValueError, match=message):
    reg.prox(params, 0.1)
  with pytest.raises(ValueError, match="selects no floating-point parameter"):
    KINDS[name].make()({"n": jnp.arange(3)})


@pytest.mark.parametrize("name", KIND_NAMES)
def test_allow_empty_makes_an_empty_selection_zero(name):
  params = to_jax(numpy_params())
  reg = KINDS[name].make(select.allow_empty(select.by_path("no_such_leaf")))
  assert reg(params) == 0.0
  chex.assert_trees_all_equal(reg.prox(params, 0.1), params)
  # Not empty: the same as without allow_empty.
  full = KINDS[name].make(select.allow_empty(None))
  np.testing.assert_allclose(full(params), KINDS[name].make()(params), rtol=1e-6)


def test_a_renamed_layer_raises_instead_of_giving_zero():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Before(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(nn.relu(nn.Dense(3)(x)))

  class After(nn.Module):  # the layers were given names
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2, name="out")(nn.relu(nn.Dense(3, name="hidden")(x)))

  reg = jr.L1(1e-3, where=select.by_path("Dense_0/kernel"))
  x = jnp.ones((1, 4))
  before = Before().init(jax.random.key(0), x)
  assert reg(before) > 0
  assert reg.selected(before) == {"Dense_0/kernel": (3, 2)}   # built first: the output layer
  after = After().init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"by_path\('Dense_0/kernel'\) selects no .* The 4 "
                     r"parameters are: hidden/bias \(3,\), hidden/kernel \(4, 3\), "
                     r"out/bias \(2,\), out/kernel \(3, 2\)\. "):
    reg(after)


def test_empty_check_holds_under_jit_vmap_and_grad():
  params = {"w": jnp.ones(3)}
  reg = jr.L2(0.1, where=select.by_path("v"))
  with pytest.raises(ValueError, match="selects no floating-point parameter"):
    jax.jit(reg)(params)
  with pytest.raises(ValueError, match="selects no floating-point parameter"):
    jax.grad(reg)(params)
  with pytest.raises(ValueError, match="selects no floating-point parameter"):
    jax.vmap(lambda s: jr.L2(s, where=select.by_path("v"))(params))(jnp.ones(2))
  with pytest.raises(ValueError, match="selects no floating-point parameter"):
    (jr.L1(0.1) + reg).prox(params, 0.1)
  # Each term of a sum is checked on its own.
  with pytest.raises(ValueError, match=r"by_path\('v'\)"):
    (jr.L1(0.1) + reg)(params)
  # A regularization path scanned over strengths: checked once, at trace time.
  ok = lambda carry, s: (carry, jr.L2(s, where=select.by_path("w"))(params))
  np.testing.assert_allclose(jax.lax.scan(ok, 0.0, jnp.array([1.0, 2.0]))[1], [3.0, 6.0])
  empty = lambda carry, s: (carry, jr.L2(s, where=select.by_path("v"))(params))
  with pytest.raises(ValueError, match="selects no floating-point parameter"):
    jax.lax.scan(empty, 0.0, jnp.array([1.0, 2.0]))


def test_docstring_conventions():
  # λΣ|w| and λΣw² with no ½, on a tree small enough to check by eye.
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([3.0])}
  assert jr.L1(0.5)(params) == 3.0
  assert jr.L2(0.5)(params) == 7.0
  assert jr.ElasticNet(0.5, 0.5)(params) == 10.0
  assert jr.GroupLasso(1.0, axis=0)({"w": jnp.array([[3.0, 0.0], [4.0, 1.0]])}) == 6.0


# Proximal maps -----------------------------------------------------------------------

@pytest.mark.parametrize("form", WHERE_FORMS, ids=WHERE_IDS)
@pytest.mark.parametrize("name", KIND_NAMES)
def test_prox_is_the_exact_prox_on_selected_leaves_and_identity_elsewhere(name, form):
  _, where, paths = form
  kind, np_params = KINDS[name], numpy_params()
  params = to_jax(np_params)
  out = kind.make(where).prox(params, 0.8)
  assert jax.tree.structure(out) == jax.tree.structure(params)
  for path, w in walk(params):
    z = leaf(out, path)
    if path in paths:
      assert z.dtype == w.dtype and z.shape == w.shape
      np.testing.assert_allclose(z, kind.prox(np.asarray(leaf(np_params, path), np.float64), 0.8),
                                 rtol=1e-6, atol=1e-7, err_msg=path)
      np.testing.assert_allclose(z, kind.jaxreg_prox(w, 0.8), rtol=1e-6, atol=1e-7, err_msg=path)
    else:
      assert z is w, path


_jit_prox = jax.jit(lambda reg, params, step: reg.prox(params, step))


@hypothesis.settings(max_examples=15)
@given(strength=st.floats(0, 3), step=st.floats(0, 3), name=st.sampled_from(KIND_NAMES))
def test_prox_scales_with_step_and_strength(strength, step, name):
  # prox_{step·R} for R of any strength: the threshold is step·strength.
  make = {"L1": lambda s: jr.L1(s), "L2": lambda s: jr.L2(s),
          "ElasticNet": lambda s: jr.ElasticNet(s, s / 2),
          "GroupLasso_axis0": lambda s: jr.GroupLasso(s, axis=0),
          "GroupLasso_last": lambda s: jr.GroupLasso(s, axis=-1)}[name]
  reference = {"L1": lambda w, t: np_soft(w, t), "L2": lambda w, t: w / (1 + 2 * t),
               "ElasticNet": lambda w, t: np_soft(w, t) / (1 + t),
               "GroupLasso_axis0": lambda w, t: np_group_shrink(w, t, 0),
               "GroupLasso_last": lambda w, t: np_group_shrink(w, t, -1)}[name]
  w = numpy_params()["params"]["blocks"][1][0]["kernel"] * 3
  out = _jit_prox(make(strength), {"w": w}, step)["w"]
  np.testing.assert_allclose(out, reference(w.astype(np.float64), step * strength),
                             rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", ["L1", "L2", "ElasticNet"])
def test_prox_with_a_step_per_coordinate(name):
  kind, np_params = KINDS[name], numpy_params()
  steps = jax.tree.map(lambda w: np.linspace(0, 2, np.size(w)).reshape(np.shape(w)), np_params)
  out = kind.make().prox(to_jax(np_params), steps)
  for path in FLOATING:
    w, s = leaf(np_params, path).astype(np.float64), leaf(steps, path)
    np.testing.assert_allclose(leaf(out, path), kind.prox(w, s), rtol=1e-6, atol=1e-7, err_msg=path)
  np.testing.assert_array_equal(out["ids"], np_params["ids"])


@pytest.mark.parametrize("name", KIND_NAMES)
def test_prox_with_a_step_per_leaf(name):
  kind, np_params = KINDS[name], numpy_params()
  scalars = iter(np.linspace(0.1, 2.0, 8))
  steps = jax.tree.map(lambda w: float(next(scalars)), np_params)
  out = kind.make().prox(to_jax(np_params), steps)
  for path in FLOATING:
    w, s = leaf(np_params, path).astype(np.float64), leaf(steps, path)
    np.testing.assert_allclose(leaf(out, path), kind.prox(w, s), rtol=1e-6, atol=1e-7, err_msg=path)


def test_group_lasso_prox_needs_one_step_per_leaf():
  with pytest.raises(ValueError, match="GroupLasso.prox needs a scalar step per leaf"):
    jr.GroupLasso(0.1, axis=0).prox({"w": jnp.ones((2, 3))}, {"w": jnp.ones((2, 3))})


def test_step_zero_is_the_identity():
  params = to_jax(numpy_params())
  for kind in KINDS.values():
    chex.assert_trees_all_equal(kind.make().prox(params, 0.0), params)


# Group lasso ---------------------------------------------------------------------------

def test_group_lasso_zeroes_whole_columns_of_a_dense_kernel():
  # (in=4, out=5): columns are output units; those of norm <= 1 go, the others stay.
  rng = np.random.default_rng(3)
  kernel = rng.normal(size=(4, 5)).astype(np.float32)
  kernel /= np.linalg.norm(kernel, axis=0)
  kernel *= np.float32([0.5, 3.0, 0.9, 2.0, 1.5])
  out = np.asarray(jr.GroupLasso(1.0, axis=0).prox({"kernel": jnp.asarray(kernel)}, 1.0)["kernel"])
  np.testing.assert_array_equal(out[:, [0, 2]], 0.0)
  assert np.all(out[:, [1, 3, 4]] != 0)
  np.testing.assert_allclose(np.linalg.norm(out, axis=0), [0, 2.0, 0, 1.0, 0.5], atol=1e-6)


def test_group_lasso_axis_tuple_groups_conv_kernels_by_output_channel():
  # (h, w, in, out) reduced over (0, 1, 2): one group per output channel.
  rng = np.random.default_rng(4)
  kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
  kernel /= np.linalg.norm(kernel.reshape(-1, 4), axis=0)
  kernel *= np.float32([0.1, 2.0, 0.2, 5.0])
  reg = jr.GroupLasso(0.5, axis=(0, 1, 2))
  np.testing.assert_allclose(reg({"k": jnp.asarray(kernel)}), 0.5 * (0.1 + 2.0 + 0.2 + 5.0),
                             rtol=1e-6)
  out = np.asarray(reg.prox({"k": jnp.asarray(kernel)}, 1.0)["k"])
  np.testing.assert_array_equal(out[..., [0, 2]], 0.0)
  np.testing.assert_allclose(np.linalg.norm(out.reshape(-1, 4), axis=0), [0, 1.5, 0, 4.5],
                             rtol=1e-6)


@pytest.mark.parametrize("axis", [2, -3, (0, 2)])
def test_group_lasso_axis_out_of_range_is_a_clear_value_error(axis):
  reg = jr.GroupLasso(0.1, axis=axis)
  params = {"kernel": jnp.ones((4, 3))}
  message = f"GroupLasso axis={axis!r} is out of range for a selected leaf of shape (4, 3)"
  with pytest.raises(ValueError, match=re.escape(message)):
    reg(params)
  with pytest.raises(ValueError, match="out of range"):
    reg.prox(params, 0.1)


# Gradients -----------------------------------------------------------------------------

def float_params():
  tree = numpy_params()
  del tree["step"], tree["ids"]
  return tree


# Selection is a trace-time matter that the value tests cover form by form: here one
# form that selects everything and one that leaves some leaves out.
@pytest.mark.parametrize("form", [WHERE_FORMS[0], WHERE_FORMS[3]], ids=["none", "kernels"])
@pytest.mark.parametrize("name", KIND_NAMES)
def test_gradient_is_the_closed_form(name, form):
  _, where, paths = form
  kind, np_params = KINDS[name], float_params()
  grads = jax.grad(kind.make(where))(to_jax(np_params))
  for path, w in walk(np_params):
    expected = kind.grad(w.astype(np.float64)) if path in paths else np.zeros_like(w)
    np.testing.assert_allclose(leaf(grads, path), expected, rtol=1e-6, atol=1e-7, err_msg=path)


def test_l1_gradient_is_exactly_zero_at_zero():
  g = jax.grad(jr.L1(0.3))({"w": jnp.array([0.0, -0.0, 1e-30, -2.0])})["w"]
  np.testing.assert_array_equal(g, np.float32([0.0, 0.0, 0.3, -0.3]))
  # Also through an elastic net, and in forward mode.
  g = jax.jacfwd(jr.ElasticNet(0.3, 1.0))({"w": jnp.zeros(2)})["w"]
  np.testing.assert_array_equal(g, [0.0, 0.0])


def test_group_lasso_gradient_at_a_zero_group_is_zero():
  g = jax.grad(jr.GroupLasso(2.0, axis=0))({"w": jnp.array([[0.0, 3.0], [0.0, -4.0]])})["w"]
  np.testing.assert_allclose(g, [[0.0, 1.2], [0.0, -1.6]], rtol=1e-6)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_check_grads_away_from_kinks(name):
  # Move every entry away from 0, where |w| has its kink.
  params = jax.tree.map(lambda w: w + np.sign(w) * 0.5 + (w == 0), float_params())
  check_grads(jax.jit(KINDS[name].make()), (to_jax(params),), order=1, modes=("fwd", "rev"),
              eps=1e-3)


def test_gradient_with_respect_to_the_strength():
  params = to_jax(float_params())
  np_params = float_params()
  abs_sum = sum(np.sum(np.abs(w.astype(np.float64))) for _, w in walk(np_params))
  sq_sum = sum(np.sum(w.astype(np.float64) ** 2) for _, w in walk(np_params))
  np.testing.assert_allclose(jax.grad(lambda s: jr.L1(s)(params))(0.5), abs_sum, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda s: jr.L2(s)(params))(0.5), sq_sum, rtol=1e-6)


# Sums ----------------------------------------------------------------------------------

def test_l1_plus_l2_has_the_elastic_net_prox():
  np_params = float_params()
  params = to_jax(np_params)
  reg = jr.L1(A) + jr.L2(B)
  assert isinstance(reg, jr.Sum)
  # Strengths of overlapping terms add up: A·|w| + B·w² again, split over three terms.
  split = jr.L2(B / 4) + jr.ElasticNet(A / 3, B / 2) + jr.L2(B / 4) + jr.L1(2 * A / 3)
  np.testing.assert_allclose(reg(params), expected_value(KINDS["ElasticNet"], np_params, FLOATING),
                             rtol=1e-6)
  for reg in [reg, split]:
    out = reg.prox(params, 0.8)
    for path, w in walk(np_params):
      np.testing.assert_allclose(leaf(out, path),
                                 KINDS["ElasticNet"].prox(w.astype(np.float64), 0.8),
                                 rtol=1e-6, atol=1e-7, err_msg=path)


def test_overlapping_l1_and_l2_add_up_where_both_select():
  np_params = numpy_params()
  params = to_jax(np_params)
  reg = jr.L1(A, where=select.kernels()) + jr.L2(B, where=select.exclude("scale"))
  out = reg.prox(params, 0.5)
  for path, w in walk(params):
    w64 = np.asarray(w, np.float64)
    if path in KERNELS:
      expected = KINDS["ElasticNet"].prox(w64, 0.5)
    elif path in FLOATING - {"params/LayerNorm_0/scale"}:
      expected = KINDS["L2"].prox(w64, 0.5)
    else:
      assert leaf(out, path) is w, path
      continue
    np.testing.assert_allclose(leaf(out, path), expected, rtol=1e-6, atol=1e-7, err_msg=path)


def test_group_lasso_and_l1_on_the_same_leaf_have_no_closed_form():
  params = to_jax(float_params())
  group = jr.GroupLasso(0.1, axis=0, where=select.kernels())
  lasso = jr.L1(0.1, where=select.by_path("Dense_0"))
  with pytest.raises(NotImplementedError, match="'Dense_0/kernel'"):
    (group + lasso).prox(params, 0.1)
  # The value is still defined.
  np.testing.assert_allclose((group + lasso)(params), group(params) + lasso(params), rtol=1e-6)


def test_sum_over_disjoint_leaves_applies_each_prox_to_its_own_leaves():
  np_params = numpy_params()
  params = to_jax(np_params)
  group = KINDS["GroupLasso_axis0"]
  reg = group.make(select.kernels()) + KINDS["L1"].make(select.exclude(select.kernels()))
  np.testing.assert_allclose(
      reg(params), expected_value(group, np_params, KERNELS)
      + expected_value(KINDS["L1"], np_params, FLOATING - KERNELS), rtol=1e-6)
  out = reg.prox(params, 1.5)
  for path, w in walk(params):
    w64 = np.asarray(w, np.float64)
    if path in KERNELS:
      np.testing.assert_allclose(leaf(out, path), group.prox(w64, 1.5), rtol=1e-6, atol=1e-7)
    elif path in FLOATING:
      np.testing.assert_allclose(leaf(out, path), KINDS["L1"].prox(w64, 1.5), rtol=1e-6, atol=1e-7)
    else:
      assert leaf(out, path) is w


def test_python_sum_of_regularizers():
  np_params = float_params()
  params = to_jax(np_params)
  reg = sum([jr.L1(A), jr.L2(B, where=select.kernels()),
             jr.GroupLasso(G, axis=-1, where=select.by_path("Dense_0/bias"))])
  assert isinstance(reg, jr.Sum) and len(reg.terms) == 3
  expected = (expected_value(KINDS["L1"], np_params, FLOATING)
              + expected_value(KINDS["L2"], np_params, KERNELS)
              + expected_value(KINDS["GroupLasso_last"], np_params, {"params/Dense_0/bias"}))
  np.testing.assert_allclose(reg(params), expected, rtol=1e-6)
  assert sum([jr.L1(A)]).strength == A


def test_every_name_keeps_its_import_path():
  # regularizers.py re-exports Regularizer, Sum and Scaled from jaxreg/_regularizer.py.
  expected = {
      "jaxreg.regularizers": {"Regularizer", "Sum", "Scaled", "L1", "L2", "ElasticNet",
                              "GroupLasso", "l1", "l2", "l1_l2"},
      "jaxreg.constraints": {"Constraint", "MaxNorm", "MinMaxNorm", "UnitNorm", "NonNeg"},
      "jaxreg.orthogonal": {"Orthogonal"},
      "jaxreg.activity": {"ACTIVITY_REDUCTIONS", "activity_penalty", "check_activity_reduction"},
      "jaxreg.per_layer": {"declared"},
  }
  for name, names in expected.items():
    module = importlib.import_module(name)
    assert set(module.__all__) == names, name
    assert all(hasattr(module, n) for n in names), name
  assert jr.regularizers.Sum is jr.Sum and jr.regularizers.Regularizer is jr.Regularizer


def test_group_lasso_takes_an_axis_as_keras_does():
  assert jr.GroupLasso(0.1, axis=[0, 1]).axis == (0, 1)
  assert jr.GroupLasso(0.1, axis=np.int64(1)).axis == 1
  for axis in ["0", (), (0, 1.0), True]:
    with pytest.raises(ValueError, match="axis must be an int or a tuple of ints"):
      jr.GroupLasso(0.1, axis=axis)


# Scaling: c * R -------------------------------------------------------------------------

@jax.tree_util.register_pytree_node_class
class UnscaledL1(jr.L1):
  """L1 as a subclass that does not say its value is linear in its strength: scaling
  it goes through the ``Scaled`` wrapper."""
  _homogeneous = False


@pytest.mark.parametrize("c", [0.0, 0.5, 3])
@pytest.mark.parametrize("name", KIND_NAMES)
def test_scaled_value_is_c_times_and_prox_is_the_prox_at_the_scaled_step(name, c):
  kind, np_params = KINDS[name], numpy_params()
  params = to_jax(np_params)
  reg = kind.make()
  for scaled in (c * reg, reg * c):
    np.testing.assert_allclose(scaled(params), c * expected_value(kind, np_params, FLOATING),
                               rtol=1e-6)
    out = scaled.prox(params, 0.8)
    chex.assert_trees_all_close(out, reg.prox(params, c * 0.8), rtol=1e-6, atol=1e-7)
    for path in FLOATING:
      w = leaf(np_params, path).astype(np.float64)
      np.testing.assert_allclose(leaf(out, path), kind.prox(w, c * 0.8), rtol=1e-6, atol=1e-7,
                                 err_msg=path)
    chex.assert_trees_all_equal(out["ids"], params["ids"])
  if c:
    chex.assert_trees_all_close((reg / c).prox(params, 0.8), reg.prox(params, 0.8 / c),
                                rtol=1e-6, atol=1e-7)


def test_scaling_a_penalty_scales_its_strengths():
  where = select.kernels()
  assert repr(0.5 * jr.L1(0.1, where=where)) == "L1(strength=0.05, where=jr.select.kernels())"
  assert repr(jr.L2(0.3) / 2) == "L2(strength=0.15, where=None)"
  scaled = 2 * jr.ElasticNet(0.1, 0.25)
  assert type(scaled) is jr.ElasticNet and (scaled.l1, scaled.l2) == (0.2, 0.5)
  scaled = 3 * jr.GroupLasso(0.5, axis=[0, 1], where=where)
  assert (scaled.strength, scaled.axis, scaled.where) == (1.5, (0, 1), where)
  scaled = 4 * jr.Orthogonal(0.25, mode="columns")
  assert (scaled.factor, scaled.mode) == (1.0, "columns")
  # The same pytree structure: a scaled penalty is the penalty with other strengths.
  assert jax.tree.structure(0.5 * jr.L1(0.1)) == jax.tree.structure(jr.L1(0.1))
  total = 2 * (jr.L1(0.1) + jr.L2(0.2, where=where))
  assert isinstance(total, jr.Sum)
  assert [type(t) for t in total.terms] == [jr.L1, jr.L2]
  assert [t.strength for t in total.terms] == [0.2, 0.4] and total.terms[1].where == where
  # NumPy and JAX scalars scale from either side.
  for c in (np.float32(0.5), np.float64(0.5), jnp.float32(0.5), jnp.array(0.5)):
    np.testing.assert_allclose((c * jr.L1(0.1)).strength, 0.05, rtol=1e-6)
    np.testing.assert_allclose((jr.L1(0.1) * c).strength, 0.05, rtol=1e-6)


def test_the_scaled_wrapper_for_a_penalty_that_does_not_scale_its_strengths():
  np_params = float_params()
  params = to_jax(np_params)
  reg = UnscaledL1(A, where=select.kernels())
  scaled = 0.5 * reg
  assert isinstance(scaled, jr.regularizers.Scaled) and scaled.regularizer is reg
  assert repr(scaled) == "0.5 * UnscaledL1(strength=0.3, where=jr.select.kernels())"
  assert scaled.where == select.kernels() and scaled.selected(params) == reg.selected(params)
  assert jax.tree.leaves(scaled) == [0.5, A]
  np.testing.assert_allclose(scaled(params), 0.5 * expected_value(KINDS["L1"], np_params, KERNELS),
                             rtol=1e-6)
  chex.assert_trees_all_close(scaled.prox(params, 0.8), reg.prox(params, 0.4))
  # Scaling again multiplies the scales; where= moves to the wrapped penalty.
  again = 4 * scaled
  assert (again.scale, again.regularizer) == (2.0, reg)
  moved = scaled.with_where(select.by_path("Dense_0"))
  assert moved.scale == 0.5 and moved.where == select.by_path("Dense_0")
  # In a sum, and through jit with a traced scale.
  total = scaled + jr.L2(B, where=select.by_path("bias"))
  out = total.prox(params, 0.8)
  chex.assert_trees_all_close(out["params"]["Dense_0"]["kernel"],
                              prox.soft_threshold(params["params"]["Dense_0"]["kernel"], 0.4 * A))
  value = jax.jit(lambda c, p: (c * reg)(p))(0.5, params)
  np.testing.assert_allclose(value, scaled(params), rtol=1e-6)
  with pytest.raises(TypeError, match="other than a sum"):
    jr.regularizers.Scaled(0.5, jr.L1(0.1) + jr.L2(0.1))


@pytest.mark.parametrize("c,error,match", [
    (-0.5, ValueError, r"c must be finite and >= 0, got -0.5.*scaled by a negative c is not convex"),
    (float("nan"), ValueError, "c must be finite and >= 0"),
    (float("inf"), ValueError, "c must be finite and >= 0"),
    (True, TypeError, "c must be a real number"),
    (jnp.ones(2), TypeError, "c must be a scalar"),
    (1 + 2j, TypeError, "c must be a real number"),
], ids=["negative", "nan", "inf", "bool", "array", "complex"])
def test_a_bad_scale_is_a_clear_error(c, error, match):
  with pytest.raises(error, match=match):
    c * jr.L1(0.1)
  with pytest.raises(error, match=match):
    jr.L1(0.1) / c


def test_dividing_by_zero_and_by_a_regularizer_are_errors():
  with pytest.raises(ValueError, match="division by zero"):
    jr.L1(0.1) / 0
  with pytest.raises(ValueError, match="division by zero"):
    (jr.L1(0.1) + jr.L2(0.1)) / 0.0
  with pytest.raises(TypeError):
    jr.L1(0.1) * jr.L2(0.1)
  with pytest.raises(TypeError):
    1.0 / jr.L1(0.1)


def test_scaling_by_a_traced_c_under_jit_vmap_and_grad():
  np_params = float_params()
  params = to_jax(np_params)
  abs_sum = expected_value(KINDS["L1"], np_params, FLOATING) / A
  traces = []

  @jax.jit
  def value(c, reg):
    traces.append(c)
    return (c * reg)(params)

  for c in [0.5, 2.0]:
    np.testing.assert_allclose(value(c, jr.L1(A)), c * A * abs_sum, rtol=1e-6)
  np.testing.assert_allclose(value(0.5, 0.5 * jr.L1(A)), 0.25 * A * abs_sum, rtol=1e-6)
  assert len(traces) == 1
  # A traced c checked as a strength is: a negative one acts as 0, never as a NaN.
  assert value(-1.0, jr.L1(A)) == 0.0
  np.testing.assert_allclose(jax.grad(lambda c: (c * jr.L1(A))(params))(2.0), A * abs_sum,
                             rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda c: (jr.L1(A) / c)(params))(2.0), -A * abs_sum / 4,
                             rtol=1e-6)
  w = np_params["params"]["Dense_0"]["bias"].astype(np.float64)
  out = jax.vmap(lambda c: (c * jr.L1(A)).prox(params, 0.5))(jnp.array([0.0, 1.0, 4.0]))
  np.testing.assert_allclose(out["params"]["Dense_0"]["bias"],
                             [np_soft(w, 0.5 * c * A) for c in [0.0, 1.0, 4.0]], rtol=1e-6)
  # A traced 0 divisor cannot raise: the penalty is 0 and its prox the identity.
  zero = jax.jit(lambda c: ((jr.L1(A) / c)(params), (jr.L1(A) / c).prox(params, 1.0)))(0.0)
  assert zero[0] == 0.0
  chex.assert_trees_all_equal(zero[1], params)


@pytest.mark.parametrize("alias,full", [
    (lambda: jr.l1(0.02), lambda: jr.L1(0.02)),
    (lambda: jr.l1(), lambda: jr.L1(0.01)),
    (lambda: jr.l2(0.02), lambda: jr.L2(0.02)),
    (lambda: jr.l2(), lambda: jr.L2(0.01)),
    (lambda: jr.l1_l2(l1=0.02, l2=0.05), lambda: jr.ElasticNet(0.02, 0.05)),
    (lambda: jr.l1_l2(l2=0.05), lambda: jr.ElasticNet(0.0, 0.05)),   # Keras 3's default
    (lambda: jr.l1(0.02, where=select.kernels()), lambda: jr.L1(0.02, where=select.kernels())),
], ids=["l1", "l1_default", "l2", "l2_default", "l1_l2", "l1_l2_default", "l1_where"])
def test_keras_aliases_equal_the_classes(alias, full):
  params = to_jax(numpy_params())
  alias, full = alias(), full()
  assert type(alias) is type(full)
  assert jax.tree.leaves(alias) == jax.tree.leaves(full)
  chex.assert_trees_all_equal(alias(params), full(params))
  chex.assert_trees_all_equal(alias.prox(params, 0.7), full.prox(params, 0.7))


def test_keras_l2_is_lambda_sum_of_squares():
  # Keras: l2(0.01) adds 0.01·Σw² to the loss.
  assert jr.l2(0.01)({"w": jnp.array([3.0, 4.0])}) == pytest.approx(0.25)
  assert jr.l1_l2(l1=0.1, l2=0.01)({"w": jnp.array([3.0, -4.0])}) == pytest.approx(0.95)


# Pytrees, jit and vmap -------------------------------------------------------------------

def test_strengths_are_the_leaves_and_the_rest_is_static():
  assert jax.tree.leaves(jr.L1(0.3)) == [0.3]
  assert jax.tree.leaves(jr.ElasticNet(0.3, 0.7)) == [0.3, 0.7]
  assert jax.tree.leaves(jr.L1(0.3) + jr.GroupLasso(0.5, axis=0)) == [0.3, 0.5]
  assert (jax.tree.structure(jr.GroupLasso(0.5, axis=0))
          != jax.tree.structure(jr.GroupLasso(0.5, axis=1)))
  rebuilt = jax.tree.map(lambda s: 2 * s, jr.GroupLasso(0.5, axis=(0, 1), where=select.kernels()))
  assert isinstance(rebuilt, jr.GroupLasso)
  assert (rebuilt.strength, rebuilt.axis, rebuilt.where) == (1.0, (0, 1), select.kernels())


def test_regularizers_pass_through_jit_and_strengths_do_not_retrace():
  np_params = numpy_params()
  params = to_jax(np_params)
  traces = []

  @jax.jit
  def value(reg, params):
    traces.append(reg)
    return reg(params)

  for strength in [0.1, 0.2, 0.4]:
    np.testing.assert_allclose(value(jr.L1(strength), params),
                               strength / A * expected_value(KINDS["L1"], np_params, FLOATING),
                               rtol=1e-6)
  assert len(traces) == 1
  np.testing.assert_allclose(value(jr.L1(0.1) + jr.L2(0.2), params),
                             0.1 / A * expected_value(KINDS["L1"], np_params, FLOATING)
                             + 0.2 / B * expected_value(KINDS["L2"], np_params, FLOATING),
                             rtol=1e-6)


def test_traced_strengths_inside_jit():
  np_params = float_params()
  params = to_jax(np_params)
  fn = jax.jit(lambda a, b, s, p: (jr.ElasticNet(a, b)(p), jr.ElasticNet(a, b).prox(p, s)))
  value, out = fn(A, B, 0.8, params)
  np.testing.assert_allclose(value, expected_value(KINDS["ElasticNet"], np_params, FLOATING),
                             rtol=1e-6)
  for path, w in walk(np_params):
    np.testing.assert_allclose(leaf(out, path), KINDS["ElasticNet"].prox(w.astype(np.float64), 0.8),
                               rtol=1e-6, atol=1e-7)


def test_vmap_over_a_batch_of_strengths():
  np_params = float_params()
  params = to_jax(np_params)
  strengths = jnp.array([0.0, 1.0, 2.0])
  abs_sum = expected_value(KINDS["L1"], np_params, FLOATING) / A
  values = jax.jit(jax.vmap(lambda s: jr.L1(s)(params)))(strengths)
  np.testing.assert_allclose(values, np.array([0.0, 1.0, 2.0]) * abs_sum, rtol=1e-6)
  norms = expected_value(KINDS["GroupLasso_axis0"], np_params, FLOATING) / G
  values = jax.jit(jax.vmap(lambda s: jr.GroupLasso(s, axis=0)(params)))(strengths)
  np.testing.assert_allclose(values, np.array([0.0, 1.0, 2.0]) * norms, rtol=1e-6)
  # A batch of regularizers is a pytree with batched strengths: vmap over it too.
  batch = jax.vmap(jr.L1)(strengths)
  values = jax.jit(jax.vmap(lambda r: r(params)))(batch)
  np.testing.assert_allclose(values, np.array([0.0, 1.0, 2.0]) * abs_sum, rtol=1e-6)
  # One prox per strength.
  w = np_params["params"]["Dense_0"]["bias"].astype(np.float64)
  out = jax.jit(jax.vmap(lambda s: jr.L1(s).prox(params, 0.5)))(strengths)
  out = out["params"]["Dense_0"]["bias"]
  np.testing.assert_allclose(out, [np_soft(w, 0.5 * s) for s in [0.0, 1.0, 2.0]], rtol=1e-6)


def test_vmap_over_a_sum_of_regularizers():
  params = {"w": jnp.array([1.0, -2.0])}
  reg = jax.vmap(lambda a, b: jr.L1(a) + jr.L2(b))(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.0]))
  np.testing.assert_allclose(jax.vmap(lambda r: r(params))(reg), [3.0 + 2.5, 6.0], rtol=1e-6)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_bf16_params_give_a_float32_value(name):
  kind = KINDS[name]
  np_params = float_params()
  params = jax.tree.map(lambda w: jnp.asarray(w, jnp.bfloat16), np_params)
  # The bf16 values exactly, in float64: the penalty of what is stored.
  stored = jax.tree.map(lambda w: np.asarray(w, np.float64), params)
  value, out = jax.jit(lambda r, p: (r(p), r.prox(p, 0.5)))(kind.make(), params)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, expected_value(kind, stored, FLOATING), rtol=1e-6)
  assert all(z.dtype == jnp.bfloat16 for z in jax.tree.leaves(out))


class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_and_prox(self):
    np_params = numpy_params()
    params = to_jax(np_params)
    for name, kind in KINDS.items():
      reg = kind.make(select.exclude("scale"))
      value, out = self.variant(lambda r, p, s: (r(p), r.prox(p, s)))(reg, params, 0.6)
      paths = FLOATING - {"params/LayerNorm_0/scale"}
      np.testing.assert_allclose(value, expected_value(kind, np_params, paths), rtol=1e-6,
                                 err_msg=name)
      for path in paths:
        np.testing.assert_allclose(leaf(out, path),
                                   kind.prox(leaf(np_params, path).astype(np.float64), 0.6),
                                   rtol=1e-6, atol=1e-7, err_msg=name)
      chex.assert_trees_all_equal(out["ids"], params["ids"])


# Reference libraries ---------------------------------------------------------------------

def test_l2_gradient_is_optax_add_decayed_weights_of_twice_the_strength():
  params = to_jax(float_params())
  strength = 0.05
  decay = optax.add_decayed_weights(2 * strength)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = decay.update(zeros, decay.init(params), params)
  chex.assert_trees_all_close(jax.grad(jr.L2(strength))(params), updates, rtol=1e-6)
  # The same with a mask: optax's mask and jaxreg's where select the same leaves.
  masked = optax.add_decayed_weights(2 * strength, mask=select.mask(select.kernels(), params))
  updates, _ = masked.update(zeros, masked.init(params), params)
  chex.assert_trees_all_close(jax.grad(jr.L2(strength, where=select.kernels()))(params), updates,
                              rtol=1e-6)


def _regression(tasks=None, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(200, 8))
  coef = np.array([3.0, -2.0, 0.0, 0.0, 1.5, 0.0, 0.05, 0.0])
  if tasks:
    coef = coef[:, None] * rng.uniform(0.5, 1.5, size=(1, tasks))
  y = x @ coef + 0.1 * rng.normal(size=(200,) + ((tasks,) if tasks else ()))
  return x, y


@jax.jit
def _ista(reg, x, y, w0):
  r"""Proximal gradient on ``||y - xw||²/(2n) + R(w)``: the objective scikit-learn uses."""
  n = x.shape[0]
  lr = 1 / jnp.linalg.eigvalsh(x.T @ x / n)[-1]

  def step(_, w):
    grad = x.T @ (x @ w - y) / n
    return reg.prox({"w": w - lr * grad}, lr)["w"]

  return jax.lax.fori_loop(0, 1000, step, w0)


def _fit(reg, x, y):
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  return np.asarray(_ista(reg, x, y, jnp.zeros(x.shape[1:] + y.shape[1:])))


def test_l1_prox_gradient_matches_sklearn_lasso():
  x, y = _regression()
  alpha = 0.1
  ref = linear_model.Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(x, y)
  w = _fit(jr.L1(alpha), x, y)
  np.testing.assert_allclose(w, ref.coef_, atol=1e-4)
  np.testing.assert_array_equal(w == 0, ref.coef_ == 0)
  assert np.sum(w == 0) >= 4


def test_elastic_net_prox_gradient_matches_sklearn_with_the_documented_map():
  x, y = _regression(seed=1)
  alpha, l1_ratio = 0.2, 0.6
  ref = linear_model.ElasticNet(alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False, tol=1e-12,
                                max_iter=100_000).fit(x, y)
  w = _fit(jr.ElasticNet(alpha * l1_ratio, alpha * (1 - l1_ratio) / 2), x, y)
  np.testing.assert_allclose(w, ref.coef_, atol=1e-4)
  np.testing.assert_array_equal(w == 0, ref.coef_ == 0)


def test_group_lasso_prox_gradient_matches_sklearn_multitask_lasso():
  # MultiTaskLasso penalizes the rows of W (features, tasks), each across the tasks:
  # GroupLasso with axis=1.
  x, y = _regression(tasks=3, seed=2)
  alpha = 0.15
  ref = linear_model.MultiTaskLasso(alpha=alpha, fit_intercept=False, tol=1e-12,
                                    max_iter=100_000).fit(x, y)
  w = _fit(jr.GroupLasso(alpha, axis=1), x, y)
  np.testing.assert_allclose(w, ref.coef_.T, atol=1e-4)
  zero_rows = np.all(ref.coef_.T == 0, axis=1)
  assert zero_rows.sum() >= 3
  np.testing.assert_array_equal(np.all(w == 0, axis=1), zero_rows)
