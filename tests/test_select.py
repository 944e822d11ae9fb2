"""``where=`` selectors: which leaves of a params tree a regularizer touches."""

from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    (r"^params/Dense_0/", {"params/Dense_0/kernel", "params/Dense_0/bias"}),
    (r"bias$", {"params/Dense_0/bias", "params/LayerNorm_0/bias", "params/Conv_0/bias"}),
    (r"blocks/1/", {"params/blocks/1/0/kernel", "params/blocks/1/1"}),
    (r"^Dense_0", set()),            # search, but an anchor still anchors at the root
    (r"step|codes", set()),          # integer leaves are never selected
])
def test_by_path_searches_the_joined_path(pattern, expected):
  assert selected(select.mask(select.by_path(pattern), flax_style_params())) == expected


@pytest.mark.parametrize("args,expected", [
    (("bias", "scale"), FLOATING - {
        "params/Dense_0/bias", "params/LayerNorm_0/bias", "params/Conv_0/bias",
        "params/LayerNorm_0/scale"}),
    ((select.kernels(),), FLOATING - KERNELS),
    ((select.kernels(), "embedding|batch_stats"), FLOATING - KERNELS - {
        "params/Embed_0/embedding", "batch_stats/BatchNorm_0/mean"}),
    ((lambda path, leaf: leaf.ndim != 2, select.by_path("Embed")), {
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


NAMES = st.sampled_from(["kernel", "bias", "scale", "embedding", "w"])
DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, jnp.bool_])


@given(leaves=st.dictionaries(
    st.text("abc", min_size=1, max_size=3),
    st.tuples(NAMES, st.lists(st.integers(1, 3), max_size=4), DTYPES), max_size=6))
def test_kernels_rule_on_random_trees(leaves):
  params = {layer: {name: jax.ShapeDtypeStruct(tuple(shape), dtype)}
            for layer, (name, shape, dtype) in leaves.items()}
  expected = {layer: {name: jnp.issubdtype(dtype, jnp.floating) and len(shape) >= 2
                      and name != "embedding"}
              for layer, (name, shape, dtype) in leaves.items()}
  assert select.mask(select.kernels(), params) == expected
