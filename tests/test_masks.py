"""The keep-mask generator of ``jaxreg.masks``: its statistics, its independence across
elements, bits and keys, its exact path, and the backward residual options.

Statistical checks use fixed keys and a 5σ bound: for ``n`` Bernoulli(q) draws the
keep fraction has standard deviation ``sqrt(q(1-q)/n)``, and the sample correlation of
two independent sequences has standard deviation ``1/sqrt(n)``.
"""

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxreg as jr
from jaxreg import masks

RATES = (0.01, 0.1, 0.25, 0.5, 0.7, 0.9, 0.99)
N = 2**21
KEY = jax.random.key(20261125)

_keep_mask = jax.jit(masks.keep_mask, static_argnums=(1,), static_argnames=("exact",))


def _correlation(a, b) -> float:
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("rate", RATES)
def test_keep_fraction_is_within_five_sigma_of_one_minus_rate(rate):
  keep = _keep_mask(KEY, (N,), rate)
  q = 1 - rate
  assert abs(float(jnp.mean(keep.mask)) - q) < 5 * np.sqrt(q * (1 - q) / N)


@pytest.mark.parametrize("rate", RATES)
def test_keep_prob_is_one_minus_rate_rounded_down_to_24_bits(rate):
  keep = masks.keep_mask(KEY, (8,), rate)
  # 1 - rate is taken in float32 first, as any float32 computation would.
  expected = np.floor(np.float64(np.float32(1 - rate)) * 2**24) / 2**24
  assert float(keep.keep_prob) == expected
  assert abs((1 - rate) - float(keep.keep_prob)) < 2**-23


@pytest.mark.parametrize("rate", (0.1, 0.5, 0.9))
def test_dropout_scales_by_the_probability_the_mask_was_drawn_with(rate):
  x = jax.random.normal(jax.random.key(1), (4096,))
  y = jr.dropout(KEY, x, rate)
  keep = masks.keep_mask(KEY, x.shape, rate)
  np.testing.assert_array_equal(y != 0, keep.mask)
  np.testing.assert_array_equal(y[keep.mask], x[keep.mask] / keep.keep_prob)


@pytest.mark.parametrize("rate", RATES)
def test_inverted_dropout_keeps_the_mean_at_every_rate(rate):
  y = jax.jit(jr.dropout, static_argnums=(2,))(KEY, jnp.ones((N,)), rate)
  q = 1 - rate
  # y_i is 1/q with probability q, else 0: mean 1, variance (1-q)/q.
  assert abs(float(jnp.mean(y)) - 1) < 5 * np.sqrt((1 - q) / q / N)


@pytest.mark.parametrize("axis,lag", [(1, 1), (1, 2), (1, 31), (1, 32), (0, 1), (0, 64)])
def test_neighbouring_elements_are_uncorrelated(axis, lag):
  mask = np.asarray(_keep_mask(KEY, (1024, 2048), 0.5).mask)
  n = mask.shape[axis] - lag
  first = np.take(mask, np.arange(n), axis=axis)
  second = np.take(mask, np.arange(lag, lag + n), axis=axis)
  assert abs(_correlation(first, second)) < 5 / np.sqrt(first.size)


def test_the_32_bits_of_a_word_are_fair_and_pairwise_uncorrelated():
  words = np.asarray(jax.jit(masks.random_bits, static_argnums=(1,))(KEY, (2**18,)))
  bits = ((words[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.float64)
  n = bits.shape[0]
  assert np.all(np.abs(bits.mean(0) - 0.5) < 5 * 0.5 / np.sqrt(n))
  correlation = np.corrcoef(bits, rowvar=False)
  off_diagonal = correlation[~np.eye(32, dtype=bool)]
  assert np.all(np.abs(off_diagonal) < 5 / np.sqrt(n))


def test_different_split_and_fold_in_keys_give_independent_masks():
  keys = [jax.random.key(0), jax.random.key(1), *jax.random.split(KEY, 3),
          *(jax.random.fold_in(KEY, i) for i in range(10, 14))]
  drawn = [np.asarray(_keep_mask(k, (2**18,), 0.5).mask) for k in keys]
  n = drawn[0].size
  for i in range(len(drawn)):
    for j in range(i):
      assert abs(_correlation(drawn[i], drawn[j])) < 5 / np.sqrt(n), (i, j)


def test_the_same_key_gives_the_same_mask_and_a_reshape_does_not_change_it():
  first = masks.keep_mask(KEY, (64, 128), 0.3).mask
  again = masks.keep_mask(KEY, (64, 128), 0.3).mask
  flat = masks.keep_mask(KEY, (64 * 128,), 0.3).mask
  np.testing.assert_array_equal(first, again)
  np.testing.assert_array_equal(first.ravel(), flat)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_every_key_impl_gives_a_fair_mask(impl):
  keep = _keep_mask(jax.random.key(7, impl=impl), (2**18,), 0.5)
  assert abs(float(jnp.mean(keep.mask)) - 0.5) < 5 * 0.5 / np.sqrt(2**18)


def test_broadcast_dims_draw_one_entry_per_shared_slice():
  keep = masks.keep_mask(KEY, (4, 5, 6), 0.5, broadcast_dims=(0, -1))
  assert keep.mask.shape == (1, 5, 1)


def test_arrays_too_large_to_index_in_32_bits_fall_back_to_threefry(monkeypatch):
  monkeypatch.setattr(masks, "_HASHABLE_SIZE", 64)
  np.testing.assert_array_equal(masks.random_bits(KEY, (8, 8)),
                                jax.random.bits(KEY, (8, 8), jnp.uint32))
  assert not np.array_equal(masks.random_bits(KEY, (7, 9)),
                            jax.random.bits(KEY, (7, 9), jnp.uint32))


@pytest.mark.parametrize("broadcast_dims", [(), (0,)])
def test_exact_path_draws_what_jax_random_bernoulli_draws(broadcast_dims):
  keep = masks.keep_mask(KEY, (16, 33), 0.3, broadcast_dims=broadcast_dims, exact=True)
  shape = (1, 33) if broadcast_dims else (16, 33)
  np.testing.assert_array_equal(keep.mask, jax.random.bernoulli(KEY, 0.7, shape))
  assert float(keep.keep_prob) == np.float32(0.7)


@settings(max_examples=8)  # Each new shape compiles anew.
@given(hnp.array_shapes(min_dims=1, max_dims=3, max_side=70), st.integers(0, 2**31))
def test_pack_then_unpack_is_the_identity(shape, seed):
  mask = np.random.default_rng(seed).random(shape) < 0.5
  packed = masks.pack(jnp.asarray(mask))
  assert packed.dtype == jnp.uint32
  assert packed.shape == (*shape[:-1], -(-shape[-1] // 32))
  np.testing.assert_array_equal(masks.unpack(packed, shape), mask)


def test_unknown_residual_is_a_value_error():
  with pytest.raises(ValueError, match="residual must be one of"):
    jr.dropout(KEY, jnp.ones(4), 0.5, residual="bits")


def _loss(residual, exact):
  def loss(x):
    return jnp.sum(jnp.sin(jr.dropout(KEY, x, 0.3, residual=residual, exact=exact)))
  return loss


@pytest.mark.parametrize("exact", [False, True])
def test_regenerated_and_stored_masks_give_bit_identical_gradients(exact):
  x = jax.random.normal(jax.random.key(2), (37, 65))
  grads = {r: jax.jit(jax.grad(_loss(r, exact)))(x) for r in masks.RESIDUALS}
  np.testing.assert_array_equal(grads["recompute"], grads["packed"])
  np.testing.assert_array_equal(jax.grad(_loss(None, exact))(x), grads["packed"])


@pytest.mark.parametrize("residual", masks.RESIDUALS)
@pytest.mark.parametrize("exact", [False, True])
def test_gradients_in_both_modes_are_the_masked_scaled_closed_form(residual, exact):
  x = jax.random.normal(jax.random.key(3), (6, 7))
  keep = masks.keep_mask(KEY, x.shape, 0.3, exact=exact)
  scale = keep.mask / keep.keep_prob
  # d/dx sum(sin(m·x/q)) = cos(m·x/q)·m/q.
  expected = jnp.cos(jnp.where(keep.mask, x / keep.keep_prob, 0)) * scale
  chex.assert_trees_all_close(jax.grad(_loss(residual, exact))(x), expected, rtol=1e-6)
  tangent = jax.random.normal(jax.random.key(4), x.shape)
  _, forward = jax.jvp(_loss(residual, exact), (x,), (tangent,))
  chex.assert_trees_all_close(forward, jnp.vdot(expected, tangent), rtol=1e-5)
  hessian = jax.hessian(_loss(residual, exact))(x[0])
  expected_hessian = jnp.diag(-jnp.sin(jnp.where(keep.mask[0], x[0] / keep.keep_prob, 0))
                              * scale[0]**2)
  chex.assert_trees_all_close(hessian, expected_hessian, rtol=1e-5, atol=1e-6)
