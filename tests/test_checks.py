"""Every bad input of the core raises a clear exception naming the argument and value."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg as jr

KEY = jax.random.key(0)
X = jnp.ones((2, 4, 4, 3))

# (name, call(key, x, rate)) for every variant that takes a drop rate.
RATE_VARIANTS = [
    ("dropout", lambda k, x, r: jr.dropout(k, x, r)),
    ("dropout_classic", lambda k, x, r: jr.dropout(k, x, r, mode="classic")),
    ("alpha_dropout", jr.alpha_dropout),
    ("gaussian_dropout", jr.gaussian_dropout),
    ("drop_path", jr.drop_path),
    ("drop_connect", jr.drop_connect),
    ("dropblock", lambda k, x, r: jr.dropblock(k, x, r, 2)),
    ("dropout_mask", lambda k, x, r: jr.dropout_mask(k, x.shape, r)),
]
VARIANT_IDS = [name for name, _ in RATE_VARIANTS]
VARIANTS = [fn for _, fn in RATE_VARIANTS]


@pytest.mark.parametrize("fn", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), float("inf")])
def test_rate_outside_unit_interval_is_a_value_error(fn, rate):
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got " + re.escape(str(rate))):
    fn(KEY, X, rate)


@pytest.mark.parametrize("fn", VARIANTS, ids=VARIANT_IDS)
def test_rate_must_be_a_scalar(fn):
  with pytest.raises(ValueError, match=r"rate must be a scalar, got shape \(2,\)"):
    fn(KEY, X, jnp.array([0.1, 0.2]))


@pytest.mark.parametrize("fn", VARIANTS[:-1] + [
    lambda k, x, s: jr.gaussian_noise(k, x, 0.1)], ids=VARIANT_IDS[:-1] + ["gaussian_noise"])
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_])
def test_integer_or_boolean_input_is_a_type_error(fn, dtype):
  with pytest.raises(TypeError, match=f"x must be a floating-point array, got dtype {jnp.dtype(dtype)}"):
    fn(KEY, jnp.ones((2, 4, 4, 3), dtype), 0.5)


@pytest.mark.parametrize("stddev", [-1.0, float("nan"), float("inf")])
def test_gaussian_noise_stddev_must_be_finite_and_nonnegative(stddev):
  with pytest.raises(ValueError, match=r"stddev must be finite and >= 0, got " + re.escape(str(stddev))):
    jr.gaussian_noise(KEY, X, stddev)


@pytest.mark.parametrize("make", [
    lambda s: jr.L1(s), lambda s: jr.L2(s), lambda s: jr.GroupLasso(s, axis=0),
    lambda s: jr.l1(s), lambda s: jr.l2(s)], ids=["L1", "L2", "GroupLasso", "l1", "l2"])
@pytest.mark.parametrize("strength", [-0.01, float("nan"), float("inf")])
def test_strength_must_be_finite_and_nonnegative(make, strength):
  with pytest.raises(ValueError, match=r"strength must be finite and >= 0, got " + re.escape(str(strength))):
    make(strength)


@pytest.mark.parametrize("field", ["l1", "l2"])
def test_elastic_net_strengths_are_checked_by_name(field):
  kwargs = {"l1": 0.1, "l2": 0.1, field: -1.0}
  with pytest.raises(ValueError, match=f"{field} must be finite and >= 0, got -1.0"):
    jr.ElasticNet(**kwargs)
  with pytest.raises(ValueError, match=f"{field} must be finite and >= 0, got -1.0"):
    jr.l1_l2(**kwargs)


@pytest.mark.parametrize("make", [jr.L1, jr.L2, jr.l1, jr.l2,
                                  lambda s: jr.GroupLasso(s, axis=0)],
                         ids=["L1", "L2", "l1", "l2", "GroupLasso"])
@pytest.mark.parametrize("strength,message", [
    (None, "strength must be a real number .* got NoneType: None"),
    ("0.1", "strength must be a real number .* got str: '0.1'"),
    (True, "strength must be a real number .* got bool: True"),
    (np.bool_(True), "strength must be a real number .* got bool: np.True_"),
    ([0.1], "strength must be a real number .* got list: \\[0.1\\]"),
    (jnp.array([0.1]), r"strength must be a scalar, got shape \(1,\)"),
    (np.ones((2, 2)), r"strength must be a scalar, got shape \(2, 2\)"),
    (1 + 2j, "strength must be a real number .* got complex"),
])
def test_strength_of_the_wrong_type_is_a_type_error(make, strength, message):
  with pytest.raises(TypeError, match=message):
    make(strength)


@pytest.mark.parametrize("kwargs,name", [
    ({"l1": None, "l2": 0.1}, "l1"), ({"l1": 0.1, "l2": "0.1"}, "l2"),
    ({"l1": 0.1, "l2": False}, "l2")])
def test_elastic_net_strengths_are_type_checked_by_name(kwargs, name):
  with pytest.raises(TypeError, match=f"^{name} must be a real number"):
    jr.ElasticNet(**kwargs)
  with pytest.raises(TypeError, match=f"^{name} must be a real number"):
    jr.l1_l2(**kwargs)


def test_real_scalars_of_every_kind_are_strengths():
  for strength in (1, 0.5, np.float32(0.5), np.int64(1), jnp.float32(0.5), jnp.array(0.5)):
    assert float(jr.L1(strength)({"w": jnp.ones(2)})) == 2 * float(strength)


@pytest.mark.parametrize("step", [-1.0, float("nan")])
def test_prox_step_must_be_nonnegative(step):
  with pytest.raises(ValueError, match="step must be finite and >= 0"):
    jr.L1(0.1).prox({"w": jnp.ones(3)}, step)


def test_prox_step_tree_of_another_structure_is_rejected():
  with pytest.raises(ValueError, match="step must be a scalar or a pytree with the structure of params"):
    jr.L1(0.1).prox({"w": jnp.ones(3)}, {"v": jnp.ones(3)})


@pytest.mark.parametrize("block_size", [0, -2])
def test_dropblock_block_size_below_one(block_size):
  with pytest.raises(ValueError, match=f"block_size must be a positive int, got {block_size!r}"):
    jr.dropblock(KEY, X, 0.1, block_size)


@pytest.mark.parametrize("block_size", [1.5, True, None])
def test_dropblock_block_size_not_an_int(block_size):
  with pytest.raises(TypeError, match=f"block_size must be a positive int, got "
                     f"{type(block_size).__name__}: {block_size!r}"):
    jr.dropblock(KEY, X, 0.1, block_size)


def test_dropblock_block_larger_than_spatial_dims():
  with pytest.raises(ValueError, match=r"block_size 5 is larger than the spatial dims \(4, 4\) of x"):
    jr.dropblock(KEY, X, 0.1, 5)


def test_dropblock_needs_channels_last_batch():
  with pytest.raises(ValueError, match=r"channels.last array \(batch, \*spatial, channels\), got shape \(4, 4\)"):
    jr.dropblock(KEY, jnp.ones((4, 4)), 0.1, 2)


@pytest.mark.parametrize("where", [
    {"w": True},                                  # a leaf missing
    {"w": True, "b": True, "extra": False},       # a leaf too many
    [True, False],                                # another container
])
def test_where_tree_of_another_structure_is_a_value_error(where):
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  with pytest.raises(ValueError, match="where does not match the structure of params"):
    jr.L1(0.1, where=where)(params)
  with pytest.raises(ValueError, match="where does not match the structure of params"):
    jr.L2(0.1, where=where).prox(params, 0.1)


def test_where_selecting_an_integer_leaf_is_a_type_error():
  params = {"w": jnp.ones(2), "step": jnp.int32(3)}
  with pytest.raises(TypeError, match=r"where selects 'step', which is not floating point \(dtype int32\)"):
    jr.L1(0.1, where={"w": True, "step": True})(params)


def test_where_of_another_kind_is_a_type_error():
  with pytest.raises(TypeError, match="where must be None, a callable"):
    jr.L1(0.1, where={"w": "yes"})


def test_bad_regex_fails_when_the_selector_is_made():
  with pytest.raises(re.error):
    jr.select.by_path("(unclosed")


@pytest.mark.parametrize("key", [
    0, 1.5, "seed", None,
    jnp.zeros(2, jnp.float32),             # the right shape, the wrong dtype
    np.zeros((2, 2), np.uint32),           # legacy keys stacked: not one key
], ids=["int", "float", "str", "None", "float-array", "uint32-matrix"])
def test_a_key_that_is_not_a_key_is_a_type_error(key):
  with pytest.raises(TypeError, match="key must be a PRNG key from jax.random.key or jax.random.PRNGKey, got"):
    jr.dropout(key, X, 0.5)


def test_a_batch_of_typed_keys_is_not_one_key():
  with pytest.raises(ValueError, match=r"key must be a single key, got a key array of shape \(2,\)"):
    jr.dropout(jax.random.split(KEY, 2), X, 0.5)


@pytest.mark.parametrize("fn", [
    lambda k: jr.gaussian_noise(k, X, 0.1), lambda k: jr.mc_predict(
        lambda kk, x: x, k, X, num_samples=2)], ids=["gaussian_noise", "mc_predict"])
def test_noise_and_mc_predict_check_their_key(fn):
  with pytest.raises(TypeError, match="key must be a PRNG key"):
    fn(3)


def test_unknown_mode_is_a_value_error():
  with pytest.raises(ValueError, match=r"mode must be one of \('inverted', 'classic'\), got 'scaled'"):
    jr.dropout(KEY, X, 0.5, mode="scaled")


@pytest.mark.parametrize("dims", [(4,), (-5,)])
def test_broadcast_dims_out_of_range(dims):
  with pytest.raises(ValueError, match=f"broadcast_dims entry {dims[0]} is out of range for an array of shape"):
    jr.dropout(KEY, X, 0.5, broadcast_dims=dims)


@pytest.mark.parametrize("num_samples, error", [(0, ValueError), (-1, ValueError),
                                                (2.0, TypeError)])
def test_mc_predict_num_samples(num_samples, error):
  with pytest.raises(error, match=f"num_samples must be a positive int, got .*{num_samples!r}"):
    jr.mc_predict(lambda k, x: x, KEY, X, num_samples=num_samples)


def test_group_lasso_axis_must_be_ints():
  with pytest.raises(ValueError, match=r"axis must be an int or a tuple of ints, got 'rows'"):
    jr.GroupLasso(0.1, axis="rows")


def test_group_lasso_axis_out_of_range_for_a_leaf():
  with pytest.raises(ValueError, match=r"axis=1 is out of range for a selected leaf of shape \(3,\)"):
    jr.GroupLasso(0.1, axis=1)({"b": jnp.ones(3)})


def test_sum_without_closed_form_prox_names_the_terms_and_leaf():
  reg = jr.GroupLasso(0.1, axis=0) + jr.L1(0.1)
  with pytest.raises(NotImplementedError, match="GroupLasso \\+ L1 has no closed-form proximal map on 'w'"):
    reg.prox({"w": jnp.ones((2, 2))}, 0.1)


def test_errors_are_raised_at_trace_time_under_jit():
  # The check happens while tracing: the rate is a static Python float there.
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 2.0"):
    jax.jit(lambda k, x: jr.dropout(k, x, 2.0))(KEY, X)


@pytest.mark.parametrize("dims", [(1.5,), (True,), (0, False), ("1",), (np.float32(1),)])
def test_broadcast_dims_entries_must_be_ints(dims):
  # 1.5 was ignored and True read as 1: either would draw a mask the user did not ask for.
  with pytest.raises(TypeError, match="broadcast_dims entries must be ints, got"):
    jr.dropout(KEY, X, 0.5, broadcast_dims=dims)
  with pytest.raises(TypeError, match="broadcast_dims entries must be ints"):
    jr.dropout_mask(KEY, X.shape, 0.5, broadcast_dims=dims)


def test_numpy_int_broadcast_dims_are_ints():
  from jaxreg import masks  # pylint: disable=g-import-not-at-top
  assert masks.mask_shape(X.shape, (np.int64(1), -2)) == (2, 1, 1, 3)


def test_where_mistakes_are_caught_when_the_regularizer_is_built():
  with pytest.raises(TypeError, match=r"call it: where=jr.select.kernels\(\)"):
    jr.L2(0.1, where=jr.select.kernels)
  with pytest.raises(TypeError, match="Optax-style mask function"):
    jr.L1(0.1, where=lambda params: jax.tree.map(lambda w: w.ndim > 1, params))
