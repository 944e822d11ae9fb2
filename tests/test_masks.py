"""The keep-mask generator of ``jaxreg.masks``: its statistics, its independence across
elements, bits and keys, blocks of a mask, its exact path, 16-bit scaling, and the
backward residual options.

Statistical checks use fixed keys and a 5σ bound: for ``n`` Bernoulli(q) draws the
keep fraction has standard deviation ``sqrt(q(1-q)/n)``, and the sample correlation of
two independent sequences has standard deviation ``1/sqrt(n)``. The repeated-word and
related-key checks also run on the first-generation hash ``f(f(i ⊕ s0) + s1)``, kept
here as a reference only, to show that they catch what they are meant to catch. The
statistical checks that apply to 16 random bits also run on the 16-bit words that masks
for 16-bit dtypes are drawn from (``DTYPES``: ``None`` is the 24-bit threshold).
"""

import functools
import subprocess
import sys

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import cpu_devices
import jaxreg as jr
from jaxreg import masks
from jaxreg.masks import hashing
from jaxreg.masks import scaling

RATES = (0.01, 0.1, 0.25, 0.5, 0.7, 0.9, 0.99)
N = 2**21
KEY = jax.random.key(20261125)
DTYPES = (None, jnp.bfloat16)  # 24-bit and 16-bit thresholds.

_keep_mask = jax.jit(masks.keep_mask, static_argnums=(1,),
                     static_argnames=("exact", "dtype"))


def _correlation(a, b) -> float:
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", RATES)
def test_keep_fraction_is_within_five_sigma_of_one_minus_rate(rate, dtype):
  keep = _keep_mask(KEY, (N,), rate, dtype=dtype)
  q = 1 - rate
  assert abs(float(jnp.mean(keep.mask)) - q) < 5 * np.sqrt(q * (1 - q) / N)


@pytest.mark.parametrize("dtype,bits", [(None, 24), (jnp.float32, 24), (jnp.float64, 24),
                                        (jnp.bfloat16, 16), (jnp.float16, 16)])
@pytest.mark.parametrize("rate", (*RATES, 1e-6))
def test_keep_prob_is_one_minus_rate_rounded_down_to_the_dtypes_resolution(rate, dtype,
                                                                           bits):
  assert masks.resolution_bits(dtype) == bits
  keep = masks.keep_mask(KEY, (8,), rate, dtype=dtype)
  # 1 - rate is taken in float32 first, as any float32 computation would.
  expected = np.floor(np.float64(np.float32(1 - rate)) * 2**bits) / 2**bits
  assert float(keep.keep_prob) == expected
  assert abs((1 - rate) - float(keep.keep_prob)) < 2.0**-bits + 2**-24
  constant = masks.keep_probability(rate, dtype)
  assert type(constant) is float and constant == expected
  # A traced rate is a float32 already, so 1 - rate is a float32 subtraction.
  traced = jax.jit(masks.keep_probability, static_argnums=1)(rate, dtype)
  one_minus = np.float64(np.float32(1) - np.float32(rate))
  assert traced.dtype == jnp.float32
  assert float(traced) == np.floor(one_minus * 2**bits) / 2**bits


@pytest.mark.parametrize("dtype", ["bf16", 16, object()])
def test_a_dtype_that_is_not_one_is_a_type_error_naming_it(dtype):
  with pytest.raises(TypeError, match="dtype must be a dtype or None"):
    masks.keep_mask(KEY, (8,), 0.1, dtype=dtype)
  for rate in (0.0, 0.1, 1.0):  # Also where dropout_mask draws nothing.
    with pytest.raises(TypeError, match="dtype must be a dtype or None"):
      jr.dropout_mask(KEY, (8,), rate, dtype=dtype)


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis,lag", [(1, 1), (1, 2), (1, 31), (1, 32), (0, 1), (0, 64)])
def test_neighbouring_elements_are_uncorrelated(axis, lag, dtype):
  mask = np.asarray(_keep_mask(KEY, (1024, 2048), 0.5, dtype=dtype).mask)
  n = mask.shape[axis] - lag
  first = np.take(mask, np.arange(n), axis=axis)
  second = np.take(mask, np.arange(lag, lag + n), axis=axis)
  assert abs(_correlation(first, second)) < 5 / np.sqrt(first.size)


def _16_bit_words(key, shape, start=None, block_shape=None):
  """The top halves of the words masks for 16-bit dtypes are drawn from."""
  return hashing.hashed_words(key, shape, start, block_shape, top_half=True) >> 16


@pytest.mark.parametrize("draw,width", [(masks.random_bits, 32), (_16_bit_words, 16)],
                         ids=["32-bit", "16-bit"])
def test_the_bits_of_a_word_are_fair_and_pairwise_uncorrelated(draw, width):
  words = np.asarray(jax.jit(draw, static_argnums=(1,))(KEY, (2**18,)))
  bits = ((words[:, None] >> np.arange(width, dtype=np.uint32)) & 1).astype(np.float64)
  n = bits.shape[0]
  assert np.all(np.abs(bits.mean(0) - 0.5) < 5 * 0.5 / np.sqrt(n))
  correlation = np.corrcoef(bits, rowvar=False)
  off_diagonal = correlation[~np.eye(width, dtype=bool)]
  assert np.all(np.abs(off_diagonal) < 5 / np.sqrt(n))


def test_16_bit_words_are_the_top_half_of_the_32_bit_words_but_for_a_carry():
  # The 16-bit word leaves out a step that changes only the low half of f's output,
  # so it differs from the 32-bit word's top half only by the carry of the final + x.
  shape = (512, 1024)
  whole = np.asarray(masks.random_bits(KEY, shape)) >> 16
  half = np.asarray(_16_bit_words(KEY, shape))
  difference = (whole - half) & 0xFFFF
  assert set(np.unique(difference).tolist()) == {0, 1, 0xFFFF}
  assert np.mean(difference == 0) > 0.5


@pytest.mark.parametrize("dtype", DTYPES)
def test_different_split_and_fold_in_keys_give_independent_masks(dtype):
  keys = [jax.random.key(0), jax.random.key(1), *jax.random.split(KEY, 3),
          *(jax.random.fold_in(KEY, i) for i in range(10, 14))]
  drawn = [np.asarray(_keep_mask(k, (2**18,), 0.5, dtype=dtype).mask) for k in keys]
  n = drawn[0].size
  for i in range(len(drawn)):
    for j in range(i):
      assert abs(_correlation(drawn[i], drawn[j])) < 5 / np.sqrt(n), (i, j)


# The second generation: no bijection, no related-key copies ----------------------------

_WORDS = 2.0**32


def _first_generation(index, seed):
  """The first-generation hash ``f(f(i ⊕ s0) + s1)``: a bijection of the index."""
  return hashing._finalize(hashing._finalize(index ^ seed[0]) + seed[1])


_HASHES = {"second": hashing._keyed_hash, "first": _first_generation,
           "second, 16-bit": functools.partial(hashing._keyed_hash, top_half=True)}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _hashed(generation, n, seed):
  return _HASHES[generation](jnp.arange(n, dtype=jnp.uint32), seed)


def _repeated_word_z(words) -> float:
  """How many sigmas the count of repeated words (elements whose word an earlier element
  already has) lies from the birthday expectation, ``n - N(1 - (1 - 1/N)^n)`` for
  ``N = 2^32``: a Poisson count for ``n << N``, so its variance is its mean."""
  n = words.size
  repeats = n - np.unique(words).size
  expected = n - _WORDS * -np.expm1(n * np.log1p(-1 / _WORDS))
  return (repeats - expected) / np.sqrt(expected)


def test_words_repeat_within_one_call_at_the_birthday_rate():
  # 2^20 words: 128 repeats expected, sd 11.3.
  words = np.asarray(jax.jit(masks.random_bits, static_argnums=(1,))(KEY, (2**20,)))
  assert abs(_repeated_word_z(words)) < 5


def test_the_first_generation_repeats_no_word_and_fails_the_birthday_test():
  words = np.asarray(_hashed("first", 2**20, jax.random.bits(KEY, (2,), jnp.uint32)))
  assert np.unique(words).size == words.size
  assert _repeated_word_z(words) < -10


# Pairs of seeds whose second word s1 is equal; the first pair is what the keys
# fold_in(key(20261125), t) give for t = 347446 and 4013100.
_SHARED_S1 = [((0x4FB2FEAC, 0x5F119A), (0x4FB4D3FD, 0x5F119A)),
              ((0x00000000, 0x9E3779B9), (0x00000001, 0x9E3779B9)),
              ((0x12345678, 0x00000000), (0x12345678 ^ 0x7FFFF, 0x00000000))]
_RELATED_N = 2**19  # Every s0 ⊕ s0' above is below it.


def _related_words(generation, seeds):
  """The words of two seeds, the second read at ``i ⊕ (s0 ⊕ s0')`` where that index
  exists, and how many distinct words both calls drew."""
  (a, b) = (np.asarray(_hashed(generation, _RELATED_N, jnp.asarray(s, jnp.uint32)))
            for s in seeds)
  index = np.arange(_RELATED_N) ^ (seeds[0][0] ^ seeds[1][0])
  inside = index < _RELATED_N
  return a[inside], b[index[inside]], np.intersect1d(a, b).size


def _related_masks(generation, seeds):
  """Keep-decisions at rate 1/2 (the top bit) of :func:`_related_words`."""
  a, b_permuted, shared = _related_words(generation, seeds)
  return a >> 31, b_permuted >> 31, shared


@pytest.mark.parametrize("seeds", _SHARED_S1, ids=lambda seeds: f"s1={seeds[0][1]:#x}")
def test_seeds_sharing_their_second_word_give_unrelated_masks(seeds):
  a, b_permuted, shared = _related_masks("second", seeds)
  # Independent fair masks agree at half the entries, sd 1/(2 sqrt(n)).
  assert abs(np.mean(a == b_permuted) - 0.5) < 5 * 0.5 / np.sqrt(a.size)
  # Two calls that were permutations of each other would share all their words; two
  # independent ones share about n^2/2^32 (Poisson).
  expected = _RELATED_N**2 / _WORDS
  assert abs(shared - expected) < 5 * np.sqrt(expected)


@pytest.mark.parametrize("seeds", _SHARED_S1, ids=lambda seeds: f"s1={seeds[0][1]:#x}")
def test_seeds_sharing_their_second_word_give_unrelated_16_bit_masks(seeds):
  a, b_permuted, _ = _related_words("second, 16-bit", seeds)
  a, b_permuted = a >> 16, b_permuted >> 16
  assert abs(np.mean((a >> 15) == (b_permuted >> 15)) - 0.5) < 5 * 0.5 / np.sqrt(a.size)
  # Permuted copies would agree everywhere; independent 16-bit words, 1 in 2^16 times.
  expected = a.size / 2**16
  assert abs(np.sum(a == b_permuted) - expected) < 5 * np.sqrt(expected)


@pytest.mark.parametrize("seeds", _SHARED_S1, ids=lambda seeds: f"s1={seeds[0][1]:#x}")
def test_the_first_generation_gives_xor_permuted_copies_for_such_seeds(seeds):
  a, b_permuted, shared = _related_masks("first", seeds)
  np.testing.assert_array_equal(a, b_permuted)
  assert shared > _RELATED_N // 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_fold_in_keys_with_a_shared_second_seed_word_give_unrelated_masks(dtype):
  base = jax.random.key(20261125)
  first, second = (jax.random.fold_in(base, t) for t in (347446, 4013100))
  seeds = [jax.random.bits(k, (2,), jnp.uint32) for k in (first, second)]
  assert int(seeds[0][1]) == int(seeds[1][1])  # The pair is what it claims to be.
  shape = (1024, 1024)
  a, b = (np.asarray(_keep_mask(k, shape, 0.5, dtype=dtype).mask).ravel()
          for k in (first, second))
  index = np.arange(a.size) ^ int(seeds[0][0] ^ seeds[1][0])
  inside = index < a.size
  assert abs(np.mean(a[inside] == b[index[inside]]) - 0.5) < 5 * 0.5 / np.sqrt(inside.sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", (0.1, 0.5))
def test_keep_counts_of_blocks_and_of_keys_are_as_dispersed_as_binomial(rate, dtype):
  """``K`` counts of ``n`` Bernoulli(q) draws: ``sum((c - nq)^2) / (nq(1-q))`` is
  chi-squared with ``K`` degrees of freedom, mean ``K`` and sd ``sqrt(2K)``."""
  def chi2_z(counts, n, q):
    statistic = np.sum((counts - n * q) ** 2) / (n * q * (1 - q))
    return (statistic - counts.size) / np.sqrt(2 * counts.size)
  keep = _keep_mask(KEY, (4096, 1024), rate, dtype=dtype)
  q = float(keep.keep_prob)
  rows = np.asarray(jnp.sum(keep.mask, axis=1))
  assert abs(chi2_z(rows, 1024, q)) < 5
  keys = jax.random.split(KEY, 256)
  totals = np.asarray(jax.jit(jax.vmap(
      lambda k: jnp.sum(masks.keep_mask(k, (2**16,), rate, dtype=dtype).mask)))(keys))
  assert abs(chi2_z(totals, 2**16, q)) < 5


# Blocks of a mask ------------------------------------------------------------------------

_BLOCKS = [  # shape, start, block_shape, broadcast_dims
    ((8, 12), (3, 5), (4, 6), ()),
    ((8, 12), (0, 0), (8, 12), ()),
    ((5, 7, 9), (1, 0, 4), (3, 7, 5), ()),
    ((5, 7, 9), (2, 3, 4), (2, 3, 5), (1,)),
    ((6, 10), (2, 4), (3, 6), (0, 1)),
    ((33,), (7,), (0,), ()),
]


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("shape,start,block,dims", _BLOCKS)
def test_a_block_of_the_mask_is_the_slice_of_the_whole_mask(shape, start, block, dims,
                                                             exact):
  whole = masks.keep_mask(KEY, shape, 0.4, broadcast_dims=dims, exact=exact)
  part = masks.keep_mask(KEY, shape, 0.4, broadcast_dims=dims, exact=exact, start=start,
                         block_shape=block)
  # Along a broadcast dim the mask has one entry, which every block shares.
  window = tuple(slice(0, 1) if d in dims else slice(s, s + n)
                 for d, (s, n) in enumerate(zip(start, block)))
  np.testing.assert_array_equal(part.mask, whole.mask[window])
  assert float(part.keep_prob) == float(whole.keep_prob)


def test_a_block_of_random_bits_is_the_slice_of_the_whole():
  whole = masks.random_bits(KEY, (6, 7, 8))
  part = masks.random_bits(KEY, (6, 7, 8), start=(1, 2, 3), block_shape=(4, 5, 5))
  np.testing.assert_array_equal(part, whole[1:5, 2:7, 3:8])


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_at_a_traced_start_assemble_the_whole_mask(dtype):
  shape, rows = (12, 40), 3

  @jax.jit
  def by_blocks(key):
    def block(i):
      start = (i * rows, jnp.int32(0))
      return masks.keep_mask(key, shape, 0.3, start=start, block_shape=(rows, 40),
                             dtype=dtype).mask
    return jax.lax.map(block, jnp.arange(shape[0] // rows)).reshape(shape)

  np.testing.assert_array_equal(by_blocks(KEY),
                                masks.keep_mask(KEY, shape, 0.3, dtype=dtype).mask)
  one = jax.jit(lambda s: masks.random_bits(KEY, shape, start=(s, 7), block_shape=(2, 9)))
  np.testing.assert_array_equal(one(5), masks.random_bits(KEY, shape)[5:7, 7:16])


def test_a_block_of_the_threefry_fallback_is_its_slice(monkeypatch):
  monkeypatch.setattr(hashing, "_HASHABLE_SIZE", 64)
  whole = jax.random.bits(KEY, (3, 80), jnp.uint32)  # A dim of 80 has no row split.
  np.testing.assert_array_equal(
      masks.random_bits(KEY, (3, 80), start=(1, 7), block_shape=(2, 40)), whole[1:3, 7:47])


@pytest.mark.parametrize("kwargs,match", [
    ({"start": (0, 0)}, "start and block_shape go together"),
    ({"block_shape": (2, 2)}, "start and block_shape go together"),
    ({"start": (0,), "block_shape": (2, 2)}, "one entry per dim"),
    ({"start": (3, 0), "block_shape": (2, 2)}, "outside"),
    ({"start": (0, 0), "block_shape": (5, 2)}, "does not fit"),
])
def test_a_block_that_is_not_inside_the_mask_is_a_value_error(kwargs, match):
  with pytest.raises(ValueError, match=match):
    masks.keep_mask(KEY, (4, 4), 0.5, **kwargs)


# Arrays of 2^32 elements or more: one seed per row ---------------------------------------
#
# The split is decided by hashing._HASHABLE_SIZE alone; at 2^12 the row path runs on arrays
# of up to 2^24 elements. The reference below is jaxreg/masks/hashing.py's formula in NumPy.

_SMALL_LIMIT = 2**12


@pytest.fixture
def small_limit(monkeypatch):
  monkeypatch.setattr(hashing, "_HASHABLE_SIZE", _SMALL_LIMIT)


def _np_finalize(h, top_half=False):
  h = h ^ (h >> np.uint32(16))
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> np.uint32(13))
  h = h * np.uint32(0xC2B2AE35)
  return h if top_half else h ^ (h >> np.uint32(16))


def _np_keyed_hash(index, s0, s1, top_half=False):
  x = index ^ s0
  second = (_np_finalize(x) + s1) * (_np_finalize(s0) | np.uint32(1))
  return _np_finalize(second, top_half) + x


def _np_row_bits(words, rows, in_row, top_half=False):
  """``h_{s0(r), s1(r)}(j)`` with ``s0(r) = h_{w0,w1}(r)``, ``s1(r) = h_{w2,w3}(r)``."""
  words = np.asarray(words, np.uint32)
  rows = np.asarray(rows, np.uint32)[:, None]
  in_row = np.asarray(in_row, np.uint32)[None, :]
  with np.errstate(over="ignore"):
    return _np_keyed_hash(in_row, _np_keyed_hash(rows, words[0], words[1]),
                          _np_keyed_hash(rows, words[2], words[3]), top_half)


@pytest.mark.parametrize("shape,split", [
    ((8, 16, 8192, 8192), 1), ((4096, 2**20), 1), ((2**20, 2**20), 1),
    ((2, 2**16, 2**16), 2), ((3, 7), 0), ((2**32,), None), ((2, 2**32), None),
    ((2**32, 2), None), ((2**16, 2**16, 2**16), None)])
def test_the_split_leaves_the_fewest_rows_with_both_indices_in_32_bits(shape, split):
  assert hashing._row_split(shape) == split


def test_arrays_below_32_bits_keep_the_single_index_hash():
  words = np.asarray(jax.random.bits(KEY, (2,), jnp.uint32))
  index = np.arange(42, dtype=np.uint32)
  with np.errstate(over="ignore"):
    expected = _np_keyed_hash(index, words[0], words[1])
    half = _np_keyed_hash(index, words[0], words[1], top_half=True) >> 16
  np.testing.assert_array_equal(masks.random_bits(KEY, (6, 7)), expected.reshape(6, 7))
  np.testing.assert_array_equal(_16_bit_words(KEY, (6, 7)), half.reshape(6, 7))


def test_large_arrays_hash_the_index_in_a_row_under_a_seed_of_the_row(small_limit):
  shape = (3, 5, 40, 30)  # 15 rows of 1200.
  words = jax.random.bits(KEY, (4,), jnp.uint32)
  expected = _np_row_bits(words, np.arange(15), np.arange(1200)).reshape(shape)
  np.testing.assert_array_equal(masks.random_bits(KEY, shape), expected)
  # 16-bit words: row seeds are whole words, the hash in a row leaves out f's last step.
  half = _np_row_bits(words, np.arange(15), np.arange(1200), top_half=True) >> 16
  np.testing.assert_array_equal(_16_bit_words(KEY, shape), half.reshape(shape))


_LARGE_BLOCKS = [  # shape, start, block_shape, broadcast_dims
    ((6, 40, 30), (2, 5, 3), (3, 20, 25), ()),
    ((4, 5, 40, 30), (1, 2, 7, 0), (2, 3, 9, 30), ()),
    ((4, 5, 40, 30), (1, 2, 7, 4), (2, 3, 9, 11), (1,)),
    ((4, 3, 40, 60), (0, 0, 30, 10), (4, 3, 10, 50), (1,)),  # Broadcast: 4 rows of 2400.
]


@pytest.mark.parametrize("shape,start,block,dims", _LARGE_BLOCKS)
def test_a_block_of_a_large_mask_is_the_slice_of_the_whole_mask(small_limit, shape,
                                                                start, block, dims):
  whole = masks.keep_mask(KEY, shape, 0.4, broadcast_dims=dims)
  window = tuple(slice(0, 1) if d in dims else slice(s, s + n)
                 for d, (s, n) in enumerate(zip(start, block)))
  at = jax.jit(lambda s: masks.keep_mask(KEY, shape, 0.4, broadcast_dims=dims, start=s,
                                         block_shape=block).mask)
  np.testing.assert_array_equal(at(tuple(map(jnp.int32, start))), whole.mask[window])


def test_blocks_at_a_traced_start_assemble_the_whole_large_mask(small_limit):
  shape, rows = (4, 60, 80), 12

  @jax.jit
  def by_blocks(key):
    def block(i):
      start = (i // 5, (i % 5) * rows, jnp.int32(0))
      return masks.keep_mask(key, shape, 0.3, start=start, block_shape=(1, rows, 80)).mask
    return jax.lax.map(block, jnp.arange(20)).reshape(shape)

  np.testing.assert_array_equal(by_blocks(KEY), masks.keep_mask(KEY, shape, 0.3).mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", (0.1, 0.5, 0.9))
def test_large_masks_keep_one_minus_rate_with_binomial_row_counts(small_limit, rate,
                                                                  dtype):
  # 2048 rows, each with its own seed.
  keep = _keep_mask(KEY, (2048, 1024), rate, dtype=dtype)
  q = float(keep.keep_prob)
  n = keep.mask.size
  assert abs(float(jnp.mean(keep.mask)) - q) < 5 * np.sqrt(q * (1 - q) / n)
  counts = np.asarray(jnp.sum(keep.mask, axis=1))
  chi2 = np.sum((counts - 1024 * q) ** 2) / (1024 * q * (1 - q))
  assert abs(chi2 - counts.size) < 5 * np.sqrt(2 * counts.size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis,lag", [(0, 1), (0, 2), (0, 64), (1, 1), (1, 32)])
def test_neighbouring_rows_and_elements_of_a_large_mask_are_uncorrelated(small_limit,
                                                                        axis, lag, dtype):
  mask = np.asarray(_keep_mask(KEY, (2048, 1024), 0.5, dtype=dtype).mask)
  n = mask.shape[axis] - lag
  first = np.take(mask, np.arange(n), axis=axis)
  second = np.take(mask, np.arange(lag, lag + n), axis=axis)
  assert abs(_correlation(first, second)) < 5 / np.sqrt(first.size)


def test_words_of_a_large_array_repeat_at_the_birthday_rate(small_limit):
  # 1024 rows of 1024: 128 repeats expected over the whole array, sd 11.3.
  words = np.asarray(jax.jit(masks.random_bits, static_argnums=(1,))(KEY, (1024, 1024)))
  assert abs(_repeated_word_z(words)) < 5


_SHARDED_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxreg as jr
from jaxreg import masks
from jaxreg.masks import hashing
hashing._HASHABLE_SIZE = 2**10  # (64, 512) is then 64 rows of 512.
mesh, mesh2 = jax.make_mesh((8,), ("d",)), jax.make_mesh((2, 4), ("a", "b"))
key, x = jax.random.key(3), jnp.ones((64, 512))
f = jax.jit(lambda k, x: jr.dropout(k, x, 0.3))
reference = np.asarray(f(key, x))
assert np.array_equal(reference != 0, np.asarray(masks.keep_mask(key, x.shape, 0.3).mask))
half = np.asarray(f(key, x.astype(jnp.bfloat16)))  # Its own 16-bit mask.
assert np.array_equal(half != 0, np.asarray(
    masks.keep_mask(key, x.shape, 0.3, dtype=jnp.bfloat16).mask))
for spec, mesh_ in ((P("d", None), mesh), (P(None, "d"), mesh), (P("a", "b"), mesh2)):
  for x_, expected in ((x, reference), (x.astype(jnp.bfloat16), half)):
    xs = jax.device_put(x_, NamedSharding(mesh_, spec))
    assert np.array_equal(np.asarray(f(key, xs)), expected), (spec, x_.dtype)
    hlo = f.lower(key, xs).compile().as_text()
    assert not any(c in hlo for c in ("all-gather", "all-to-all", "collective-permute",
                                      "all-reduce")), spec
def shard_block(k):
  start = (jax.lax.axis_index("a") * 32, jax.lax.axis_index("b") * 128)
  return masks.keep_mask(k, (64, 512), 0.3, start=start, block_shape=(32, 128)).mask
blocks = jax.jit(jax.shard_map(shard_block, mesh=mesh2, in_specs=P(), out_specs=P("a", "b")))
assert np.array_equal(np.asarray(blocks(key)), reference != 0), "shard_map blocks"
print("ALL OK")
"""


def test_large_masks_are_identical_under_every_sharding_and_need_no_collective():
  env = cpu_devices.environment(8)
  result = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "ALL OK" in result.stdout


def test_a_block_of_a_mask_of_2_to_the_33_elements_is_drawn_alone():
  shape, block, rows = (2**17, 2**16), (8, 128), 100_000
  draw = jax.jit(lambda k, r: masks.random_bits(k, shape, start=(r, jnp.int32(4096)),
                                                block_shape=block))
  compiled = draw.lower(KEY, rows).compile()
  memory = compiled.memory_analysis()
  if memory is not None:  # The whole array's bits would take 2^35 bytes.
    assert memory.temp_size_in_bytes < 2**20
  bits = compiled(KEY, rows)
  assert bits.shape == block
  expected = _np_row_bits(jax.random.bits(KEY, (4,), jnp.uint32),
                          np.arange(rows, rows + 8), np.arange(4096, 4096 + 128))
  np.testing.assert_array_equal(bits, expected)


# 16-bit dtypes ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_dropout_drops_what_float32_dropout_drops_but_near_the_threshold(dtype):
  x = jax.random.normal(jax.random.key(5), (1024, 1024), jnp.float32) + 4  # never 0
  drop = jax.jit(jr.dropout, static_argnums=(2,))
  kept16 = np.asarray(drop(KEY, x.astype(dtype), 0.3) != 0)
  np.testing.assert_array_equal(kept16, masks.keep_mask(KEY, x.shape, 0.3, dtype=dtype).mask)
  np.testing.assert_array_equal(kept16, jr.dropout_mask(KEY, x.shape, 0.3, dtype=dtype))
  assert abs(kept16.mean() - 0.7) < 5 * np.sqrt(0.7 * 0.3 / kept16.size)
  # A 16-bit word is the top half of the 32-bit word but for a carry, so the two
  # decisions can differ only where that half is within 1 of the threshold's 16 bits:
  # at most 3 entries in 2^16 on average.
  differ = int(np.sum(kept16 != np.asarray(drop(KEY, x, 0.3) != 0)))
  bound = 3 * kept16.size / 2**16
  assert differ <= bound + 5 * np.sqrt(bound)


def _all_16_bit_values(dtype):
  return jnp.asarray(np.arange(2**16, dtype=np.uint16).view(jnp.dtype(dtype)))


# At this q (31771/2^16), 506 bfloat16 values of one significand have a float32 product
# x·(1/q) exactly halfway between two bfloat16 values, the lower one even: ties to even
# rounds them down, half away from zero would round them up.
TIE_RATE = 1 - 31771 / 2**16


def _ties_to_round_down(product):
  """Entries of a float32 ``product`` that ties to even rounds down to bfloat16 and
  rounding half away from zero rounds up."""
  return (product.view(np.uint32) & 0x1FFFF) == 0x8000


@pytest.mark.parametrize("given", ["traced", "constant"])
@pytest.mark.parametrize("rate", [0.3, 0.7, TIE_RATE])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_values_are_scaled_by_the_realized_q_and_rounded_once(dtype, rate, given):
  # A constant q lets bfloat16 on CPU round half away from zero where that gives the
  # bits of ties to even for every x: not at TIE_RATE, which must still round to even.
  x = _all_16_bit_values(dtype)
  q = masks.keep_mask(KEY, (1,), rate, dtype=dtype).keep_prob
  mask = jnp.asarray(np.random.default_rng(0).random(x.shape) < 0.7)
  if given == "traced":
    scale_kept = functools.partial(jax.jit(masks.scale_kept), keep_prob=q)
  else:
    scale_kept = jax.jit(lambda x, mask: masks.scale_kept(x, mask, float(q)))
  ours = np.asarray(scale_kept(x, mask)).astype(np.float32)
  wide = np.asarray(x).astype(np.float32)
  with np.errstate(all="ignore"):
    # x·s with s = 1/q rounded to float32, then one rounding to the 16-bit dtype.
    product = wide * (np.float32(1) / np.float32(q))
    expected = np.where(mask, product.astype(jnp.dtype(dtype)), 0).astype(np.float32)
  if dtype == jnp.bfloat16:
    assert _ties_to_round_down(product)[mask].any() == (rate == TIE_RATE)
  # XLA on CPU flushes float32 subnormals to zero, in its own conversions too.
  tiny = np.finfo(np.float32).tiny
  flushed = ((0 < np.abs(wide)) & (np.abs(wide) < tiny)) | (
      (0 < np.abs(product)) & (np.abs(product) < tiny))
  np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
  compared = ~flushed & ~np.isnan(expected)
  np.testing.assert_array_equal(ours[compared], expected[compared])
  # And bit for bit what XLA's own conversion gives (0 and -0 apart), subnormals too.
  converted = np.asarray(jnp.where(mask, x.astype(jnp.float32) * (1 / q), 0).astype(dtype))
  converted = converted.astype(np.float32)
  numbers = ~np.isnan(expected)
  np.testing.assert_array_equal(ours[numbers].view(np.uint32),
                                converted[numbers].view(np.uint32))
  # A kept NaN stays x's NaN, made quiet: its sign and payload bits, quiet bit set.
  quiet_bit = 0x0040 if dtype == jnp.bfloat16 else 0x0200
  nans = np.isnan(wide) & np.asarray(mask)
  bits_in = np.asarray(x).view(np.uint16)[nans]
  bits_out = np.asarray(scale_kept(x, mask)).view(np.uint16)[nans]
  np.testing.assert_array_equal(bits_out, bits_in | quiet_bit)


def test_bfloat16_rounds_half_away_from_zero_at_every_rate_in_steps_of_a_thousandth():
  # The cheaper rounding is taken only where it matches ties to even: the test above
  # shows the bits; this shows that it is taken at the rates users pick.
  rates = np.arange(1, 1000) / 1000
  assert all(scaling._away_matches_even(masks.keep_probability(r, jnp.bfloat16))
             for r in rates)
  assert not scaling._away_matches_even(masks.keep_probability(TIE_RATE, jnp.bfloat16))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_a_constant_and_a_traced_rate_give_the_same_bits(dtype):
  # Kept entries are x · s with s = 1/q rounded to float32, then rounded once to the
  # dtype: not the correctly rounded x/q (that differs in 9-26% of the float32
  # entries at these rates, and in about 1% of the bfloat16 ones at rate 0.7).
  x = jax.random.normal(jax.random.key(4), (256, 1024), jnp.float32).astype(dtype)
  for rate in (0.1, 0.3, 0.7):
    constant = jax.jit(lambda x: jr.dropout(KEY, x, rate))(x)
    traced = jax.jit(lambda x, rate: jr.dropout(KEY, x, rate))(x, rate)
    np.testing.assert_array_equal(np.asarray(constant).view(np.uint8),
                                  np.asarray(traced).view(np.uint8), err_msg=f"{rate}")
    q = masks.keep_mask(KEY, x.shape, rate, dtype=dtype).keep_prob
    wide = np.asarray(x).astype(np.float32) * (np.float32(1) / np.float32(q))
    kept = np.asarray(constant) != 0
    np.testing.assert_array_equal(np.asarray(constant)[kept],
                                  wide.astype(jnp.dtype(dtype))[kept], err_msg=f"{rate}")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_exact_16_bit_dropout_keeps_flax_arithmetic_and_its_bits(dtype):
  # exact=True promises Flax's output bit for bit: x / (1 - rate) in x's own dtype.
  flax_linen = pytest.importorskip("flax.linen", reason="flax is the reference here")
  x = jax.random.normal(jax.random.key(8), (64, 64), dtype)
  theirs = flax_linen.Dropout(0.3).apply({}, x, deterministic=False, rng=KEY)
  ours = jr.dropout(KEY, x, 0.3, exact=True)
  np.testing.assert_array_equal(np.asarray(ours).view(np.uint16),
                                np.asarray(theirs).view(np.uint16))

def test_bfloat16_dropout_differentiates_as_the_masked_scaled_map():
  x = jax.random.normal(jax.random.key(6), (64, 33), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(7), x.shape, jnp.float32)
  keep = masks.keep_mask(KEY, x.shape, 0.3, dtype=jnp.bfloat16)
  expected = np.asarray(masks.scale_kept(w.astype(jnp.bfloat16), keep.mask,
                                         keep.keep_prob)).astype(np.float32)
  loss = lambda x: jnp.vdot(w, jr.dropout(KEY, x, 0.3).astype(jnp.float32))
  np.testing.assert_array_equal(np.asarray(jax.grad(loss)(x)).astype(np.float32), expected)
  _, tangent = jax.jvp(lambda x: jr.dropout(KEY, x, 0.3), (x,), (w.astype(jnp.bfloat16),))
  np.testing.assert_array_equal(np.asarray(tangent).astype(np.float32), expected)


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


@pytest.mark.parametrize("shape", [(64,), (2, 80), (64, 2)])
def test_arrays_without_a_row_split_below_32_bits_fall_back_to_threefry(monkeypatch,
                                                                         shape):
  monkeypatch.setattr(hashing, "_HASHABLE_SIZE", 64)
  np.testing.assert_array_equal(masks.random_bits(KEY, shape),
                                jax.random.bits(KEY, shape, jnp.uint32))
  for hashed in ((7, 9), (8, 8)):  # One index, or 8 rows of 8.
    assert not np.array_equal(masks.random_bits(KEY, hashed),
                              jax.random.bits(KEY, hashed, jnp.uint32))


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
