"""``where=`` selectors: which leaves of a params tree a regularizer touches."""

import functools
from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg as jr
from jaxreg import select


def flax_style_params():
  """A tree shaped like a Flax model's variables, with one leaf of each kind."""
  return {
      "params": {
          "Embed_0": {"embedding": jnp.ones((10, 4))},
          "Dense_0": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)},
          "LayerNorm_0": {"scale": jnp.ones(8), "bias": jnp.zeros(8)},
          "Conv_0": {"kernel": jnp.ones((3, 3, 8, 2)), "bias": jnp.zeros(2)},
          "blocks": [{"kernel": jnp.ones((2, 2))}, ({"kernel": jnp.ones((2, 2), jnp.bfloat16)},
                                                   jnp.float32(0.5))],
      },
      "batch_stats": {"BatchNorm_0": {"mean": jnp.zeros(2)}},
      "step": jnp.int32(3),
      "codes": jnp.ones((2, 2), jnp.int32),
  }


def selected(mask):
  """The ``/``-joined paths of the selected leaves, spelled out by hand below."""
  out = set()

  def walk(node, prefix):
    if isinstance(node, dict):
      for key, child in node.items():
        walk(child, prefix + [str(key)])
    elif isinstance(node, (list, tuple)):
      for i, child in enumerate(node):
        walk(child, prefix + [str(i)])
    elif node:
      out.add("/".join(prefix))

  walk(mask, [])
  return out


FLOATING = {
    "params/Embed_0/embedding", "params/Dense_0/kernel", "params/Dense_0/bias",
    "params/LayerNorm_0/scale", "params/LayerNorm_0/bias", "params/Conv_0/kernel",
    "params/Conv_0/bias", "params/blocks/0/kernel", "params/blocks/1/0/kernel",
    "params/blocks/1/1", "batch_stats/BatchNorm_0/mean",
}
KERNELS = {"params/Dense_0/kernel", "params/Conv_0/kernel", "params/blocks/0/kernel",
           "params/blocks/1/0/kernel"}


def test_path_string_joins_dict_keys_and_indices_with_slashes():
  leaves = jax.tree_util.tree_flatten_with_path(flax_style_params())[0]
  paths = {select.path_string(path) for path, _ in leaves}
  assert paths == FLOATING | {"step", "codes"}
  assert select.path_string(()) == ""


def test_path_string_uses_attribute_names():
  class Layer(NamedTuple):
    kernel: jax.Array
    bias: jax.Array

  leaves = jax.tree_util.tree_flatten_with_path({"layer": Layer(jnp.ones((2, 2)), jnp.ones(2))})[0]
  assert [select.path_string(path) for path, _ in leaves] == ["layer/kernel", "layer/bias"]


def test_none_selects_every_floating_leaf():
  assert selected(select.mask(None, flax_style_params())) == FLOATING


def test_mask_keeps_the_structure_of_params():
  params = flax_style_params()
  mask = select.mask(select.kernels(), params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert all(type(flag) is bool for flag in jax.tree.leaves(mask))


def test_kernels_skip_biases_scales_embeddings_scalars_and_integers():
  assert selected(select.mask(select.kernels(), flax_style_params())) == KERNELS


def test_kernels_of_a_real_flax_model():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Model(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      x = nn.Embed(10, 4)(tokens)
      x = nn.Dense(6)(x)
      x = nn.LayerNorm()(x)
      return nn.Dense(2)(x)

  variables = jax.eval_shape(Model().init, jax.random.key(0), jnp.zeros((1, 3), jnp.int32))
  assert selected(select.mask(select.kernels(), variables)) == {
      "params/Dense_0/kernel", "params/Dense_1/kernel"}


@pytest.mark.parametrize("pattern,expected", [
    ("kernel", KERNELS),
    ("Dense_0", {"params/Dense_0/kernel", "params/Dense_0/bias"}),
    ("Dense", set()),                # whole components: "Dense" is not "Dense_0"
    ("ense_0", set()),
    (r"Dense_\d", {"params/Dense_0/kernel", "params/Dense_0/bias"}),
    (r"^params/Dense_0", {"params/Dense_0/kernel", "params/Dense_0/bias"}),
    ("Dense_0/kernel", {"params/Dense_0/kernel"}),   # several consecutive components
    (r"bias$", {"params/Dense_0/bias", "params/LayerNorm_0/bias", "params/Conv_0/bias"}),
    ("blocks/1", {"params/blocks/1/0/kernel", "params/blocks/1/1"}),
    ("1", {"params/blocks/1/0/kernel", "params/blocks/1/1"}),  # an index is a component
    (r"^Dense_0", set()),            # an anchor anchors at the root
    (r"step|codes", set()),          # integer leaves are never selected
])
def test_by_path_matches_whole_components(pattern, expected):
  assert selected(select.mask(select.by_path(pattern), flax_style_params())) == expected


@pytest.mark.parametrize("pattern,expected", [
    ("Dense", {"params/Dense_0/kernel", "params/Dense_0/bias"}),
    ("ense_0/ker", {"params/Dense_0/kernel"}),
    (r"^Dense_0", set()),
])
def test_by_path_search_is_re_search(pattern, expected):
  assert selected(select.mask(select.by_path(pattern, search=True),
                              flax_style_params())) == expected


def test_by_path_w_does_not_match_bw():
  params = {"w": jnp.ones(2), "bw": jnp.ones(2), "layer": {"w": jnp.ones(2)}}
  assert select.mask(select.by_path("w"), params) == {"w": True, "bw": False,
                                                      "layer": {"w": True}}
  assert select.mask(select.by_path("w", search=True), params) == {
      "w": True, "bw": True, "layer": {"w": True}}


@pytest.mark.parametrize("args,expected", [
    (("bias", "scale"), FLOATING - {
        "params/Dense_0/bias", "params/LayerNorm_0/bias", "params/Conv_0/bias",
        "params/LayerNorm_0/scale"}),
    ((select.kernels(),), FLOATING - KERNELS),
    ((select.kernels(), "embedding|batch_stats"), FLOATING - KERNELS - {
        "params/Embed_0/embedding", "batch_stats/BatchNorm_0/mean"}),
    ((lambda path, leaf: leaf.ndim != 2, select.by_path("Embed_0")), {
        "params/Dense_0/kernel", "params/blocks/0/kernel", "params/blocks/1/0/kernel"}),
    ((select.exclude("Dense_0"),), {"params/Dense_0/kernel", "params/Dense_0/bias"}),
])
def test_exclude_selects_what_no_selector_selects(args, expected):
  assert selected(select.mask(select.exclude(*args), flax_style_params())) == expected


def test_exclude_needs_a_selector():
  with pytest.raises(ValueError, match="exclude needs at least one selector"):
    select.exclude()


def test_callable_gets_the_key_path_and_the_leaf():
  seen = []

  def where(path, leaf):
    seen.append((select.path_string(path), leaf.shape))
    assert isinstance(path, tuple)
    return leaf.shape == (4, 8)

  params = flax_style_params()
  assert selected(select.mask(where, params)) == {"params/Dense_0/kernel"}
  assert {p for p, _ in seen} >= FLOATING
  assert ("params/Conv_0/kernel", (3, 3, 8, 2)) in seen


def test_callable_true_on_an_integer_leaf_is_ignored():
  params = {"w": jnp.ones(2), "n": jnp.int32(1), "flags": jnp.ones(3, bool)}
  assert select.mask(lambda path, leaf: True, params) == {"w": True, "n": False, "flags": False}


def test_bool_tree_selects_its_true_leaves():
  params = {"a": jnp.ones(2), "b": [jnp.ones(3), jnp.ones(1)], "n": jnp.int32(0)}
  where = {"a": False, "b": [True, np.bool_(True)], "n": False}
  assert select.mask(where, params) == {"a": False, "b": [True, True], "n": False}


def test_selection_reads_shapes_and_dtypes_not_values():
  # Under jit the leaves are tracers: the mask must be the one computed outside.
  params = flax_style_params()
  inside = []
  jax.jit(lambda p: inside.append(select.mask(select.exclude("bias"), p)))(params)
  assert inside == [select.mask(select.exclude("bias"), params)]


@pytest.mark.parametrize("where,kind", [
    (None, select.Floating), (select.kernels(), select.Kernels),
    (select.by_path("x"), select.ByPath), (select.exclude("x"), select.Exclude),
    ({"w": True}, select.BoolTree), (lambda path, leaf: True, select.Callback),
])
def test_as_selector_normalizes_to_hashable_selectors(where, kind):
  selector = select.as_selector(where)
  assert isinstance(selector, kind)
  assert select.as_selector(selector) is selector
  hash(selector)  # a static jit argument must be hashable


def test_equal_selectors_are_equal_so_jit_reuses_its_trace():
  assert select.as_selector({"w": True, "b": False}) == select.as_selector({"w": True, "b": False})
  assert select.exclude("bias", select.kernels()) == select.exclude("bias", select.kernels())
  assert select.by_path("a") != select.by_path("b")
  traces = []

  def selected_sum(params, where):
    traces.append(where)
    flags = jax.tree.leaves(select.mask(where, params))
    return sum(jnp.sum(w) for flag, w in zip(flags, jax.tree.leaves(params)) if flag)

  value = jax.jit(selected_sum, static_argnums=1)
  params = {"w": jnp.ones(3), "b": jnp.full(2, 5.0)}
  assert value(params, select.as_selector({"w": True, "b": False})) == 3.0
  assert value(params, select.as_selector({"w": True, "b": False})) == 3.0
  assert value(params, select.exclude("w")) == 10.0
  assert len(traces) == 2


def at_least(ndim, *, offset=0):
  """A ``where=`` lambda made anew on each call, as a training step may write it."""
  return lambda path, leaf: leaf.ndim >= ndim + offset


def test_callbacks_with_the_same_code_and_closure_are_equal():
  same = select.as_selector(at_least(2)), select.as_selector(at_least(2))
  assert same[0].fn is not same[1].fn
  assert same[0] == same[1] and hash(same[0]) == hash(same[1])
  assert select.as_selector(at_least(2)) != select.as_selector(at_least(1))
  assert select.as_selector(at_least(2)) != select.as_selector(at_least(2, offset=1))
  assert select.as_selector(at_least(2)) != select.as_selector(at_least(2.0))  # types differ
  # The same code in another lambda is another function.
  assert select.as_selector(at_least(2)) != select.as_selector(lambda path, leaf: leaf.ndim >= 2)
  # Defaults count as closures do.
  with_default = lambda k: (lambda path, leaf, k=k: leaf.ndim >= k)
  assert select.as_selector(with_default(2)) == select.as_selector(with_default(2))
  assert select.as_selector(with_default(2)) != select.as_selector(with_default(3))
  assert select.exclude(at_least(2), "bias") == select.exclude(at_least(2), "bias")


def test_a_callback_closing_over_an_unhashable_value_is_only_equal_to_itself():
  def over(values):
    return lambda path, leaf: leaf.size in values

  a, b = select.as_selector(over([1, 2])), select.as_selector(over([1, 2]))
  assert a != b and a == a and hash(a) == hash(select.Callback(a.fn))
  a, b = select.as_selector(over(np.ones(2))), select.as_selector(over(np.ones(2)))
  assert a != b and a == select.Callback(a.fn)


def test_a_rebuilt_where_lambda_does_not_retrace():
  params = {"w": jnp.ones((2, 3)), "b": jnp.full(3, 2.0)}
  traces = []

  @jax.jit
  def value(reg, params):  # the regularizer's where= is pytree aux data
    traces.append(reg)
    return reg(params)

  for strength in [1.0, 2.0]:
    assert value(jr.L1(strength, where=at_least(2)), params) == 6.0 * strength
  assert value(jr.L1(1.0, where=at_least(1)), params) == 12.0
  assert len(traces) == 2

  @functools.partial(jax.jit, static_argnums=1)
  def selected_sum(params, where):  # a selector as a static argument
    traces.append(where)
    flags = jax.tree.leaves(select.mask(where, params))
    return sum(jnp.sum(w) for flag, w in zip(flags, jax.tree.leaves(params)) if flag)

  for _ in range(2):
    assert selected_sum(params, select.as_selector(at_least(2))) == 6.0
  assert len(traces) == 3


def test_every_name_keeps_its_import_path():
  # select.py re-exports what jaxreg/_selectors.py and jaxreg/_param_tree.py define.
  names = {"kernels", "by_path", "paths", "exclude", "allow_empty", "as_selector", "mask",
           "selection", "selected", "path_string", "leaves", "Leaf", "Predicate", "Floating",
           "Kernels", "ByPath", "Paths", "Exclude", "AllowEmpty", "BoolTree", "Callback"}
  assert set(select.__all__) == names
  assert all(hasattr(select, name) for name in names)


NAMES = st.sampled_from(["kernel", "bias", "scale", "embedding", "w"])
DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, jnp.bool_])


@given(leaves=st.dictionaries(
    st.text("abc", min_size=1, max_size=3),
    st.tuples(NAMES, st.lists(st.integers(1, 3), max_size=4), DTYPES), max_size=6))
def test_kernels_rule_on_random_trees(leaves):
  params = {layer: {name: jax.ShapeDtypeStruct(tuple(shape), dtype)}
            for layer, (name, shape, dtype) in leaves.items()}
  # One leaf per layer, so no bias beside it: the names decide, then ndim >= 2.
  expected = {layer: {name: jnp.issubdtype(dtype, jnp.floating)
                      and (name == "kernel" or name not in ("bias", "scale", "embedding")
                           and len(shape) >= 2)}
              for layer, (name, shape, dtype) in leaves.items()}
  assert select.mask(select.kernels(), params) == expected


# Parameters only ----------------------------------------------------------------------

def linen_variables():
  return {"params": {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}},
          "batch_stats": {"BatchNorm_0": {"mean": jnp.ones(3), "var": jnp.ones(3)}},
          "losses": {}}


def test_linen_variables_select_inside_the_params_collection():
  variables = linen_variables()
  assert select.mask(None, variables) == {
      "params": {"Dense_0": {"kernel": True, "bias": True}},
      "batch_stats": {"BatchNorm_0": {"mean": False, "var": False}}, "losses": {}}
  # Paths are read inside 'params': one selector means the same on both trees.
  for tree in (variables, variables["params"]):
    assert select.selected(select.by_path("^Dense_0/kernel$"), tree) == {
        "Dense_0/kernel": (2, 3)}
  assert select.selected(select.by_path("mean"), variables) == {}
  # Not a variables dict (a leaf beside the collections): every floating leaf counts.
  plain = {"params": {"w": jnp.ones(2)}, "stats": {"m": jnp.ones(2)}, "step": jnp.ones(())}
  assert select.selected(None, plain) == {"params/w": (2,), "stats/m": (2,), "step": ()}


def test_nnx_state_selects_only_params_by_the_variables_own_paths():
  from flax import nnx  # pylint: disable=g-import-not-at-top

  class Net(nnx.Module):
    def __init__(self):
      self.linear = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
      self.norm = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
      self.count = nnx.Variable(jnp.zeros(()))

  model = Net()
  expected = {"linear/kernel": (2, 3), "linear/bias": (3,), "norm/scale": (3,),
              "norm/bias": (3,)}
  for tree in (model, nnx.state(model), nnx.state(model, nnx.Param)):
    assert select.selected(None, tree) == expected
    assert select.selected(select.by_path("kernel$"), tree) == {"linear/kernel": (2, 3)}
  flags = jax.tree.leaves(select.mask(None, nnx.state(model)))
  assert len(flags) == len(jax.tree.leaves(nnx.state(model))) and sum(flags) == 4


# kernels() on stacked models and Equinox-style names ---------------------------------

def test_kernels_counts_layer_axes_from_the_bias_beside_a_leaf():
  stacked = {
      # Equinox names: Linear(weight (out, in), bias (out,)), LayerNorm(weight, bias)
      "linear": {"weight": jnp.ones((4, 3, 2)), "bias": jnp.ones((4, 3))},
      "norm": {"weight": jnp.ones((4, 3)), "bias": jnp.ones((4, 3))},
      "plain_norm": {"weight": jnp.ones(3), "bias": jnp.ones(3)},
      "linear_no_bias": {"weight": jnp.ones((4, 3, 2))},
      # Flax names decide whatever the number of axes.
      "Dense_0": {"kernel": jnp.ones((2, 4, 3, 2)), "bias": jnp.ones((2, 4, 2))},
      "LayerNorm_0": {"scale": jnp.ones((2, 4, 3)), "bias": jnp.ones((2, 4, 3))},
      "Embed_0": {"embedding": jnp.ones((2, 10, 4))},
  }
  assert set(select.selected(select.kernels(), stacked)) == {
      "linear/weight", "linear_no_bias/weight", "Dense_0/kernel"}


# allow_empty and paths ----------------------------------------------------------------

def test_selection_raises_on_nothing_unless_allowed():
  params = {"w": jnp.ones(2), "n": jnp.int32(0)}
  with pytest.raises(ValueError, match=r"where=jr.select.by_path\('v'\) selects no "
                     r"floating-point parameter.*The 1 parameters are: w \(2,\)\."):
    select.selection(select.by_path("v"), params)
  assert select.selection(select.allow_empty(select.by_path("v")), params) == [False, False]
  assert select.selection(select.allow_empty(None), params) == [False, True]  # n, w
  many = {f"w{i}": jnp.ones(i + 1) for i in range(12)}
  with pytest.raises(ValueError, match=r"w5 \(6,\), and 4 more\."):
    select.selection({k: False for k in many}, many)


def test_paths_selects_exact_paths():
  params = {"a": {"w": jnp.ones(2)}, "b": {"a": {"w": jnp.ones(2)}}}
  assert select.mask(select.paths("a/w"), params) == {"a": {"w": True},
                                                      "b": {"a": {"w": False}}}
  with pytest.raises(TypeError, match="paths takes one or more path strings"):
    select.paths()


# Mistakes that would select the wrong leaves ----------------------------------------

@pytest.mark.parametrize("fn,hint", [
    (select.kernels, r"where=jr.select.kernels\(\)"),
    (select.by_path, r"where=jr.select.by_path\('regex'\)"),
    (select.exclude, r"where=jr.select.exclude\(...\)"),
])
def test_an_uncalled_selector_function_says_to_call_it(fn, hint):
  with pytest.raises(TypeError, match=f"is the function itself; call it: {hint}"):
    select.as_selector(fn)


def test_an_optax_style_mask_function_says_what_to_write():
  optax_mask = lambda params: jax.tree.map(lambda w: w.ndim > 1, params)
  with pytest.raises(TypeError, match=r"does not take \(path, leaf\).*Optax-style mask "
                     r"function \(params -> tree of bools\).*where=mask_fn\(params\)"):
    select.as_selector(optax_mask)


def test_a_callable_must_return_a_bool():
  params = {"w": jnp.ones((2, 2))}
  with pytest.raises(TypeError, match="must return a bool for each leaf, got dict for 'w'"):
    select.mask(lambda path, leaf: {"w": True}, params)


def test_kernels_of_an_equinox_model_stacked_or_not():
  eqx = pytest.importorskip("equinox", reason="equinox is in the test extra")

  class Block(eqx.Module):
    linear: eqx.nn.Linear
    norm: eqx.nn.LayerNorm
    embed: eqx.nn.Embedding

    def __init__(self, key):
      self.linear = eqx.nn.Linear(3, 4, key=key)
      self.norm = eqx.nn.LayerNorm(4)
      self.embed = eqx.nn.Embedding(10, 4, key=key)

  # Shapes are all a selector reads.
  block = eqx.filter_eval_shape(Block, jax.random.key(0))
  stacked = eqx.filter_eval_shape(eqx.filter_vmap(Block), jax.random.split(jax.random.key(0), 5))
  assert stacked.norm.weight.shape == (5, 4)
  for model, layers in ((block, ()), (stacked, (5,))):
    # Function and int fields are leaves too; they are never selected.
    assert select.selected(select.kernels(), model) == {
        "linear/weight": (*layers, 4, 3), "embed/weight": (*layers, 10, 4)}
    assert select.selected(select.exclude(select.kernels(), "embed"), model) == {
        "linear/bias": (*layers, 4), "norm/weight": (*layers, 4), "norm/bias": (*layers, 4)}
