r"""The dropout family against its contract, checked on outputs, with expected values
derived here from formulas.

For dropout, dropout_mask, alpha_dropout, gaussian_dropout, gaussian_noise, drop_path,
drop_connect, dropblock and mc_predict this file checks that:

* jit and eager give the same result for the same key, and other keys other masks;
* over 2^20 draws the keep fraction lies within 5σ of ``1 - rate``, and inverted dropout
  keeps the mean (classic: unscaled in training, ``x·(1-rate)`` at evaluation);
* ``broadcast_dims`` shares one draw along the named axes (negative ones too), and
  only along them;
* ``rate=0`` is the identity and ``rate=1`` gives zeros, free of NaN in value and
  gradient, for a Python-float rate and for a traced one (jit argument, vmap);
* the gradient is ``mask/keep_prob`` (or its analogue for each variant);
  ``check_grads`` to order 2 in both modes, ``jvp``, ``jacfwd``, ``vmap`` over keys and
  over rates all work;
* bf16 and f16 come back as bf16 and f16; typed, legacy, ``rbg`` and ``unsafe_rbg``
  keys all work;
* alpha_dropout keeps mean 0 and variance 1, gaussian_dropout and gaussian_noise have
  the noise they promise, drop_path drops whole examples, dropblock drops whole blocks
  inside the map and rescales exactly, mc_predict is a loop over split keys;
* ``exact=True`` is bit-identical to ``flax.linen.Dropout``, and ``residual="packed"``
  and ``"recompute"`` give bit-identical values and gradients.

The realized keep probability is ``q = floor((1 - rate)·2^24)/2^24`` on the fast path and
``float32(1 - rate)`` with ``exact=True``. Statistical tests draw from fixed keys and
allow 5 standard deviations, never a retry. Bad arguments are tests/test_checks.py's job.

Compiling is most of this file's cost, so the results a group of tests checks are
computed together, in one program, the first time one of them asks (``functools.cache``).
"""

import functools
import itertools
import math

from absl.testing import parameterized
import chex
import flax.linen as nn
import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import jaxreg as jr

KEY = jax.random.key(0)
OTHER_KEY = jax.random.key(1)
BIG = 2**20  # At least 1M draws: 5σ of a keep fraction is then at most 0.0025.
SIGMAS = 5.0
RATE = 0.3
RATES = (0.1, 0.5, 0.9)
ALPHA_PRIME = -1.0507009873554805 * 1.6732632423543772  # SELU's -scale·alpha.

# Programs that run once, on test data, compiled without LLVM's optimizations: here they
# would cost more time than they save. Masks are integer arithmetic and the rest IEEE
# float ops, so nothing checked depends on them; JitTest uses jax.jit's defaults.
jit_once = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


# Formulas and helpers ------------------------------------------------------------------

def keep_prob(rate, exact=False, traced=False):
  """The probability a mask entry is kept, from the documented formula.

  ``1 - rate`` is formed in Python for a Python-float rate, and in float32 arithmetic
  for a traced one (a weakly typed float32 scalar).
  """
  q = np.float32(1) - np.float32(rate) if traced else np.float32(1.0 - rate)
  q = float(q)
  return q if exact else math.floor(q * 2**24) / 2**24


def alpha_scale(q):
  """``a`` of alpha dropout, the affine map's slope (Klambauer et al., 2017)."""
  return (q + ALPHA_PRIME**2 * q * (1 - q)) ** -0.5


def nonzero_normal(seed, shape, dtype=np.float32):
  """Normal draws pushed at least 0.5 away from 0, so an output's zeros mark its drops."""
  z = np.random.default_rng(seed).normal(size=shape)
  return jnp.asarray(np.where(z >= 0, z + 0.5, z - 0.5), dtype)


def assert_within_sigmas(observed, expected, sigma, what=""):
  assert abs(observed - expected) <= SIGMAS * sigma, (
      f"{what}: {observed} is {abs(observed - expected) / sigma:.1f}σ from {expected} "
      f"(σ = {sigma:.3g})")


def assert_fraction(count, n, p, what=""):
  """``count`` successes in ``n`` independent Bernoulli(p) trials, within 5σ."""
  assert_within_sigmas(count / n, p, math.sqrt(p * (1 - p) / n), what)


X = nonzero_normal(0, (4, 6, 6, 3))
W = nonzero_normal(1, X.shape)  # Cotangent weights, so every gradient entry is distinct.

# Every variant as fn(key, x), with a rate of 0.3 and its defaults.
VARIANTS = {
    "dropout": lambda k, x: jr.dropout(k, x, RATE),
    "dropout_classic": lambda k, x: jr.dropout(k, x, RATE, mode="classic"),
    "dropout_exact": lambda k, x: jr.dropout(k, x, RATE, exact=True),
    "dropout_broadcast": lambda k, x: jr.dropout(k, x, RATE, broadcast_dims=(1, -2)),
    "dropout_mask": lambda k, x: jr.dropout_mask(k, x.shape, RATE),
    "dropout_mask_exact": lambda k, x: jr.dropout_mask(k, x.shape, RATE, exact=True),
    "alpha_dropout": lambda k, x: jr.alpha_dropout(k, x, RATE),
    "alpha_dropout_exact": lambda k, x: jr.alpha_dropout(k, x, RATE, exact=True),
    "gaussian_dropout": lambda k, x: jr.gaussian_dropout(k, x, RATE),
    "gaussian_noise": lambda k, x: jr.gaussian_noise(k, x, RATE),
    "drop_path": lambda k, x: jr.drop_path(k, x, RATE),
    "drop_path_exact": lambda k, x: jr.drop_path(k, x, RATE, exact=True),
    "drop_connect": lambda k, x: jr.drop_connect(k, x, RATE),
    "drop_connect_exact": lambda k, x: jr.drop_connect(k, x, RATE, exact=True),
    "dropblock": lambda k, x: jr.dropblock(k, x, RATE, 3),
    "dropblock_exact": lambda k, x: jr.dropblock(k, x, RATE, 3, exact=True),
    "mc_predict": lambda k, x: jr.mc_predict(
        lambda kk, xx: jr.dropout(kk, xx, RATE), k, x, num_samples=4),
}
NOT_DIFFERENTIABLE = {"dropout_mask", "dropout_mask_exact", "mc_predict"}
DIFFERENTIABLE = [name for name in VARIANTS if name not in NOT_DIFFERENTIABLE]
# One variant per public function and mask generator, for the checks that run eagerly
# (each op compiles on its own there, which is most of this file's time): the exact
# twins of the others differ from dropout_exact only in what the mask is applied to, and
# classic mode and broadcast_dims only in how dropout applies it.
EAGER = ["dropout", "dropout_exact", "dropout_mask", "alpha_dropout", "gaussian_dropout",
         "gaussian_noise", "drop_path", "drop_connect", "dropblock", "mc_predict"]
# Outputs that are more than a selection of scaled entries: a·x + b, which optimized XLA
# fuses into one FMA (as it does in plain jnp code) where op-by-op evaluation rounds
# twice, and mc_predict's sums, which XLA may reassociate. These agree to rounding.
ROUNDED = {"alpha_dropout", "alpha_dropout_exact", "gaussian_dropout", "gaussian_noise",
           "mc_predict"}


def assert_same_output(name, actual, expected):
  """Bitwise for masking variants; to a few float32 ulps of the terms for the others."""
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    a, e = np.asarray(a), np.asarray(e)
    assert a.shape == e.shape and a.dtype == e.dtype, name
    if name in ROUNDED:
      scale = max(np.max(np.abs(e)), np.max(np.abs(np.asarray(X))))
      np.testing.assert_allclose(a, e, rtol=0, atol=8 * np.finfo(np.float32).eps * scale,
                                 err_msg=name)
    else:
      np.testing.assert_array_equal(a, e, err_msg=name)


def first_leaf(tree):
  return np.asarray(jax.tree.leaves(tree)[0])


def all_variants(names):
  """One function computing the named variants, ``(key, x) -> {name: output}``."""
  return lambda key, x: {name: VARIANTS[name](key, x) for name in names}


# jit and keys --------------------------------------------------------------------------

class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(name, name) for name in EAGER])
  def test_jit_equals_eager_and_keys_matter(self, name):
    fn = VARIANTS[name]
    out = self.variant(fn)(KEY, X)
    # The reference runs in the other mode, so each variant compares jit with eager.
    other = fn if self.variant.type == chex.ChexVariantType.WITH_JIT else jax.jit(fn)
    assert_same_output(name, out, other(KEY, X))
    assert not np.array_equal(first_leaf(out), first_leaf(self.variant(fn)(OTHER_KEY, X)))


# A legacy key differs from a typed one only where the key is read: in the three
# generators (the hash's seed, jax.random.bernoulli, jax.random.normal).
LEGACY_VMAP = ["dropout", "dropout_exact", "gaussian_noise"]


@functools.cache
def vmapped_over_keys(legacy):
  keys = jax.random.split(jax.random.PRNGKey(0) if legacy else KEY, 4)
  names = LEGACY_VMAP if legacy else EAGER
  return keys, jit_once(jax.vmap(all_variants(names), in_axes=(0, None)))(keys, X)


@pytest.mark.parametrize("name,legacy", [(name, False) for name in EAGER] +
                         [(name, True) for name in LEGACY_VMAP])
def test_vmap_over_keys_is_a_loop_and_rows_differ(name, legacy):
  keys, rows = vmapped_over_keys(legacy)
  rows = rows[name]
  for i in range(len(keys)):
    assert_same_output(name, jax.tree.map(lambda r: r[i], rows), VARIANTS[name](keys[i], X))
  first = first_leaf(rows)
  for i, j in itertools.combinations(range(len(keys)), 2):
    assert not np.array_equal(first[i], first[j]), (i, j)


KEY_KINDS = {
    "typed": jax.random.key,
    "legacy": jax.random.PRNGKey,
    "rbg": lambda seed: jax.random.key(seed, impl="rbg"),
    "unsafe_rbg": lambda seed: jax.random.key(seed, impl="unsafe_rbg"),
}


@functools.cache
def key_kind_results(kind):
  """Seeds 0 and 1 of the kind, through each generator that reads a key."""
  return jax.device_get(jit_once(lambda k0, k1: (all_variants(LEGACY_VMAP)(k0, X),
                                                 all_variants(LEGACY_VMAP)(k1, X)))(
      KEY_KINDS[kind](0), KEY_KINDS[kind](1)))


@pytest.mark.parametrize("kind", list(KEY_KINDS))
@pytest.mark.parametrize("name", LEGACY_VMAP)
def test_every_key_kind_works(name, kind):
  y0, y1 = (outputs[name] for outputs in key_kind_results(kind))
  assert y0.shape == X.shape and y0.dtype == X.dtype
  assert not np.any(np.isnan(y0))
  assert not np.array_equal(y0, y1)


@pytest.mark.parametrize("name", EAGER)
def test_legacy_key_draws_what_the_typed_key_of_the_same_seed_draws(name):
  # PRNGKey(0) holds the key data of key(0): it is the same key, in the old form.
  fn = VARIANTS[name]
  chex.assert_trees_all_equal(fn(jax.random.PRNGKey(0), X), fn(jax.random.key(0), X))


# Keep fraction and mean over 2^20 draws -----------------------------------------------

@functools.cache
def x_big():
  return np.random.default_rng(2).uniform(0.5, 1.5, BIG).astype(np.float32)


# Each variant as fn(key, x, rate, exact) on a flat x > 0 of 2^20 (or 2^16) entries.
FLAT_FNS = {
    "dropout_mask": lambda k, x, r, e: jr.dropout_mask(k, x.shape, r, exact=e),
    "dropout": lambda k, x, r, e: jr.dropout(k, x, r, exact=e),
    "dropout_classic": lambda k, x, r, e: jr.dropout(k, x, r, exact=e, mode="classic"),
    "drop_connect": lambda k, x, r, e: jr.drop_connect(k, x.reshape(1024, -1), r, exact=e).ravel(),
    "drop_path": lambda k, x, r, e: jr.drop_path(k, x[:, None], r, exact=e)[:, 0],
    "alpha_dropout": lambda k, x, r, e: jr.alpha_dropout(k, x, r, exact=e),
    # With block_size=1 every position is a possible corner and γ = rate: plain dropout.
    "dropblock_1": lambda k, x, r, e: jr.dropblock(
        k, x.reshape(-1, 16, 16, 16), r, 1, exact=e).ravel(),
}


def kept(name, y):
  # For x > 0 a kept alpha_dropout entry a·x + b is > 0, a dropped one a·α' + b = a·α'·q < 0.
  return y > 0 if name == "alpha_dropout" else y != 0


# exact=True draws every mask with one jax.random.bernoulli call; these four apply it
# in the four different ways.
EXACT_FLAT = ["dropout", "drop_path", "alpha_dropout", "dropblock_1"]


def flat_names(exact):
  return EXACT_FLAT if exact else list(FLAT_FNS)


@functools.cache
def million_draw_stats(exact):
  """{(name, rate): (number kept, float32 sums of y over 1024 rows)} for 2^20 draws."""
  def stats(key, x, rate):
    out = {}
    for name in flat_names(exact):
      fn = FLAT_FNS[name]
      y = fn(key, x, rate, exact)
      out[name] = (jnp.sum(kept(name, y)), jnp.sum(y.astype(jnp.float32).reshape(1024, -1), 1))
    return out
  # The rate is traced, so one program serves the three rates; Python-float rates are
  # what every other group of tests uses.
  compiled = jit_once(stats)
  return {(name, rate): value for rate in RATES
          for name, value in jax.device_get(compiled(KEY, x_big(), rate)).items()}


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name,exact", [(name, exact) for exact in (False, True)
                                        for name in flat_names(exact)])
def test_keep_fraction_is_one_minus_rate(name, rate, exact):
  count, _ = million_draw_stats(exact)[name, rate]
  assert_fraction(int(count), BIG, 1 - rate, name)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name,exact", [
    (name, exact) for exact in (False, True) for name in flat_names(exact)
    if name in ("dropout", "drop_connect", "drop_path", "dropout_classic")])
def test_inverted_mode_keeps_the_mean_and_classic_scales_it(name, rate, exact):
  _, row_sums = million_draw_stats(exact)[name, rate]
  x = x_big().astype(np.float64)
  q = keep_prob(rate, exact, traced=True)
  if name == "dropout_classic":
    # y_i - q·x_i = (m_i - q)·x_i: mean 0, variance x_i²·q(1-q), independent across i.
    expected, variance = q * x.sum(), np.sum(x**2) * q * (1 - q)
  else:
    # y_i - x_i = (m_i/q - 1)·x_i: mean 0, variance x_i²(1-q)/q.
    expected, variance = x.sum(), np.sum(x**2) * (1 - q) / q
  assert_within_sigmas(np.sum(row_sums, dtype=np.float64) / BIG, expected / BIG,
                       math.sqrt(variance) / BIG, name)


@pytest.mark.parametrize("kind", ["legacy", "rbg", "unsafe_rbg"])
def test_keep_fraction_with_other_key_kinds(kind):
  count = jit_once(lambda k, x: jnp.sum(jr.dropout(k, x, RATE) != 0))(KEY_KINDS[kind](0), x_big())
  assert_fraction(int(count), BIG, 1 - RATE, kind)


@functools.cache
def vmapped_rate_counts(exact):
  """{name: kept counts among 2^16 draws at each of RATES}, vmapped over the rate."""
  def counts(key, x, rates):
    return {name: jax.vmap(lambda r: jnp.sum(kept(name, FLAT_FNS[name](key, x, r, exact))))(rates)
            for name in VMAP_RATE_NAMES}
  return jax.device_get(jit_once(counts)(KEY, x_big()[:2**16], jnp.array(RATES)))


# dropout, classic mode and drop_connect apply dropout_mask's mask (shown elsewhere).
VMAP_RATE_NAMES = ["dropout_mask", "drop_path", "alpha_dropout", "dropblock_1"]


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("name", VMAP_RATE_NAMES)
def test_vmap_over_rates_follows_the_rates(name, exact):
  for rate, count in zip(RATES, vmapped_rate_counts(exact)[name]):
    assert_fraction(int(count), 2**16, 1 - rate, f"{name} at {rate}")


# broadcast_dims -------------------------------------------------------------------------

BROADCAST_SHAPE = (8, 24, 32, 40)
BROADCAST_DIMS = [(1, 3), (-1,), (0, -2), (-4, -3)]


@functools.cache
def broadcast_results():
  """Per (dims, exact): the mask, the mask for the same dims made positive, dropout(1.5)."""
  def run(key):
    x = jnp.full(BROADCAST_SHAPE, 1.5)
    out = {}
    for dims, exact in itertools.product(BROADCAST_DIMS, (False, True)):
      positive = tuple(sorted(d % len(BROADCAST_SHAPE) for d in dims))
      out[dims, exact] = (
          jr.dropout_mask(key, BROADCAST_SHAPE, 0.4, broadcast_dims=dims, exact=exact),
          jr.dropout_mask(key, BROADCAST_SHAPE, 0.4, broadcast_dims=positive, exact=exact),
          jr.dropout(key, x, 0.4, broadcast_dims=dims, exact=exact))
    return out
  return jax.device_get(jit_once(run)(KEY))


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("dims", BROADCAST_DIMS)
def test_broadcast_dims_share_the_mask_along_them_and_only_them(dims, exact):
  shape, q = BROADCAST_SHAPE, keep_prob(0.4, exact)
  mask, mask_of_positive_dims, y = broadcast_results()[dims, exact]
  assert mask.shape == shape
  shared = {d % len(shape) for d in dims}
  cells = mask[tuple(slice(0, 1) if i in shared else slice(None) for i in range(len(shape)))]
  # One draw along the shared axes: every slice along them equals the first.
  np.testing.assert_array_equal(mask, np.broadcast_to(cells, shape))
  # Independent draws along the others: the keep fraction of the cells is q, and two
  # disjoint neighbours along each other axis agree with probability q² + (1-q)².
  assert_fraction(int(cells.sum()), cells.size, q, "cells")
  for axis in sorted(set(range(len(shape))) - shared):
    even = np.take(cells, np.arange(0, shape[axis] - 1, 2), axis=axis)
    odd = np.take(cells, np.arange(1, shape[axis], 2), axis=axis)
    assert_fraction(int(np.sum(even == odd)), even.size, q**2 + (1 - q)**2, f"axis {axis}")
  # A negative dim names the same axis as its positive counterpart.
  np.testing.assert_array_equal(mask, mask_of_positive_dims)
  # And dropout applies exactly this mask.
  np.testing.assert_allclose(y, np.where(mask, 1.5 / q, 0.0), rtol=1e-6)


# rate = 0 and rate = 1 ------------------------------------------------------------------

# Variants as fn(key, x, rate).
RATE_FNS = {
    "dropout": jr.dropout,
    "dropout_classic": functools.partial(jr.dropout, mode="classic"),
    "dropout_exact": functools.partial(jr.dropout, exact=True),
    "alpha_dropout": jr.alpha_dropout,
    "gaussian_dropout": jr.gaussian_dropout,
    "drop_path": jr.drop_path,
    "drop_connect": jr.drop_connect,
    "dropblock": lambda k, x, r, **kw: jr.dropblock(k, x, r, 2, **kw),
}
# Under a traced rate drop_connect and classic mode take dropout's path to the mask, the
# only place a traced rate is read; the Python-float paths differ.
TRACED_RATE_FNS = [name for name in RATE_FNS if name not in ("drop_connect", "dropout_classic")]


def value_and_grads(name, rate, *, rate_grad=True):
  """fn(x), d sum(W·fn(x))/dx and (if asked) d sum(W·fn(x))/d rate."""
  loss = lambda x, r: jnp.sum(RATE_FNS[name](KEY, x, r) * W)
  return (RATE_FNS[name](KEY, X, rate), jax.grad(loss)(X, rate),
          jax.grad(loss, argnums=1)(X, rate) if rate_grad else 0.0)


@functools.cache
def traced_rate_results():
  """{(how, name, rate): value_and_grads} for rates 0 and 1 as a jit argument ("jit")
  and mapped over by vmap ("vmap")."""
  at = lambda r, rate_grad: {name: value_and_grads(name, r, rate_grad=rate_grad)
                             for name in TRACED_RATE_FNS}
  compiled = jit_once(lambda r, rates: (at(r, True), jax.vmap(lambda r: at(r, False))(rates)))
  out = {}
  for i, rate in enumerate((0.0, 1.0)):
    scalar, mapped = jax.device_get(compiled(rate, jnp.array([0.0, 1.0])))
    for name in TRACED_RATE_FNS:
      out["jit", name, rate] = scalar[name]
      out["vmap", name, rate] = jax.tree.map(lambda leaf: leaf[i], mapped[name])
  return out


@pytest.mark.parametrize("rate", [0.0, 1.0])
@pytest.mark.parametrize("name,how", [(name, "python") for name in RATE_FNS] + [
    (name, how) for how in ("jit", "vmap") for name in TRACED_RATE_FNS])
def test_rate_zero_is_identity_and_rate_one_is_zeros(name, how, rate):
  if how == "python":
    # A Python-float rate is a constant: there is no gradient in it to take.
    y, grad_x, _ = value_and_grads(name, rate, rate_grad=False)
  else:
    # The gradient in the rate is taken where the rate is a jit argument.
    y, grad_x, grad_rate = traced_rate_results()[how, name, rate]
  assert y.dtype == X.dtype and y.shape == X.shape
  if rate == 0.0:
    np.testing.assert_array_equal(y, X)
    np.testing.assert_array_equal(grad_x, W)
  else:
    np.testing.assert_array_equal(y, np.zeros(X.shape))
    np.testing.assert_array_equal(grad_x, np.zeros(X.shape))
  if how == "jit":
    assert not np.isnan(grad_rate), f"{name}: d/d(rate) at {rate} is {grad_rate}"


@pytest.mark.parametrize("exact", [False, True])
def test_dropout_mask_at_rate_zero_and_one(exact):
  fn = lambda r: jr.dropout_mask(KEY, X.shape, r, exact=exact)
  ones, zeros = np.ones(X.shape, bool), np.zeros(X.shape, bool)
  traced = jit_once(jax.vmap(fn))(jnp.array([0.0, 1.0]))
  for mask, expected in [(fn(0.0), ones), (fn(1.0), zeros), (traced[0], ones), (traced[1], zeros)]:
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("name", list(RATE_FNS))
def test_known_rate_zero_or_one_needs_no_key(name):
  np.testing.assert_array_equal(RATE_FNS[name](None, X, 0.0), X)
  np.testing.assert_array_equal(RATE_FNS[name](None, X, 1.0), np.zeros(X.shape))


@pytest.mark.parametrize("name", list(RATE_FNS) + ["gaussian_noise"])
def test_deterministic_is_the_evaluation_map_and_needs_no_key(name):
  fn = RATE_FNS.get(name, jr.gaussian_noise)
  y = fn(None, X, RATE, deterministic=True)
  expected = np.asarray(X) * np.float32(1 - RATE) if name == "dropout_classic" else X
  np.testing.assert_allclose(y, expected, rtol=1e-7)


# Gradients ------------------------------------------------------------------------------

@functools.cache
def gradient_results():
  """Per differentiable variant: fn(X) and d sum(W·fn(x))/dx at X; and the masks."""
  def run(key):
    out = {}
    for name in DIFFERENTIABLE:
      fn = functools.partial(VARIANTS[name], key)
      out[name] = (fn(X), jax.grad(lambda x: jnp.sum(fn(x) * W))(X))
    masks = {"fast": jr.dropout_mask(key, X.shape, RATE),
             "exact": jr.dropout_mask(key, X.shape, RATE, exact=True),
             "broadcast": jr.dropout_mask(key, X.shape, RATE, broadcast_dims=(1, -2))}
    return out, masks
  return jax.device_get(jit_once(run)(KEY))


def expected_gradient(name, y, masks):
  """d sum(W·fn(x))/dx from each variant's formula; `y` = fn(X) is used for its zeros."""
  exact = name.endswith("exact")
  q = keep_prob(RATE, exact)
  w = np.asarray(W, np.float64)
  mask = masks["exact" if exact else "fast"]
  if name in ("dropout", "dropout_exact", "drop_connect", "drop_connect_exact"):
    return w * mask / q
  if name == "dropout_broadcast":
    return w * masks["broadcast"] / q
  if name == "dropout_classic":
    return w * mask
  if name.startswith("drop_path"):
    kept_rows = np.asarray(y) != 0
    # Whole examples: an example is kept in every entry or in none.
    assert np.all(kept_rows.all(axis=(1, 2, 3)) | ~kept_rows.any(axis=(1, 2, 3)))
    return w * kept_rows / q
  if name.startswith("alpha_dropout"):
    return w * mask * alpha_scale(q)
  if name.startswith("dropblock"):
    kept_entries = np.asarray(y) != 0
    return w * kept_entries * kept_entries.size / kept_entries.sum()
  if name == "gaussian_dropout":
    return w * np.asarray(y, np.float64) / np.asarray(X, np.float64)  # y = x·ε
  if name == "gaussian_noise":
    return w
  raise KeyError(name)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradient_from_the_formula(name):
  outputs, masks = gradient_results()
  y, grad = outputs[name]
  np.testing.assert_allclose(grad, expected_gradient(name, y, masks), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("exact", [False, True])
def test_alpha_dropout_values_are_the_formula(exact):
  outputs, masks = gradient_results()
  y, _ = outputs["alpha_dropout_exact" if exact else "alpha_dropout"]
  mask = masks["exact" if exact else "fast"]
  q = keep_prob(RATE, exact)
  a, x = alpha_scale(q), np.asarray(X, np.float64)
  b = -a * ALPHA_PRIME * (1 - q)
  assert mask.any() and not mask.all()
  np.testing.assert_allclose(y, np.where(mask, a * x + b, a * ALPHA_PRIME + b),
                             rtol=1e-5, atol=1e-6)


def test_classic_mode_in_training_is_the_unscaled_mask():
  outputs, masks = gradient_results()
  np.testing.assert_array_equal(outputs["dropout_classic"][0], np.where(masks["fast"], X, 0.0))


# One variant per gradient code path (it runs eagerly, where each op compiles on its own):
# drop_path and drop_connect are dropout's code, and the packed residual of exact=True
# is shown equal to recomputation, to second order, below.
@pytest.mark.parametrize("name", [
    "dropout", "alpha_dropout", "gaussian_dropout", "gaussian_noise", "dropblock"])
def test_check_grads_to_second_order(name):
  # Each variant is affine in x for a fixed key: a large step has no truncation error,
  # and less float32 rounding error than the default one.
  check_grads(functools.partial(VARIANTS[name], KEY), (X,), order=2, modes=("fwd", "rev"),
              eps=1e-2)


# drop_connect is dropout under another name; the rest differ in their maths.
FORWARD = [name for name in EAGER if name in DIFFERENTIABLE and name != "drop_connect"]


@functools.cache
def forward_mode_results():
  t = nonzero_normal(3, X.shape)
  def run(key):
    out = {}
    for name in FORWARD:
      fn = functools.partial(VARIANTS[name], key)
      primal, tangent = jax.jvp(fn, (X,), (t,))
      out[name] = {"primal": primal, "tangent": tangent, "f(x)": fn(X),
                   "linear part": fn(t) - fn(jnp.zeros_like(t)), "jacobian": jax.jacfwd(fn)(X),
                   "grad": jax.grad(lambda x: jnp.sum(fn(x)))(X)}
    return out
  return jax.device_get(jit_once(run)(KEY))


@pytest.mark.parametrize("name", FORWARD)
def test_jvp_and_jacfwd(name):
  r = forward_mode_results()[name]
  np.testing.assert_allclose(r["primal"], r["f(x)"], rtol=1e-6, atol=1e-6)
  # Every variant is affine in x for a fixed key: the tangent is its linear part.
  np.testing.assert_allclose(r["tangent"], r["linear part"], rtol=1e-5, atol=1e-5)
  # And elementwise: the Jacobian is the diagonal matrix of the gradient.
  np.testing.assert_allclose(r["jacobian"].reshape(X.size, X.size), np.diag(r["grad"].ravel()),
                             rtol=1e-6, atol=0)
  assert np.any(r["grad"] != 0)


# dtypes ---------------------------------------------------------------------------------

HALF = [jnp.bfloat16, jnp.float16]
X_HALF = jnp.round(X * 16) / 16  # Multiples of 1/16 below 16: exact in bf16 and in f16.


@functools.cache
def half_precision_results():
  """Each variant on X_HALF in bf16, in f16 and in float32."""
  fn = all_variants(FORWARD)
  run = lambda key: [fn(key, X_HALF.astype(dtype)) for dtype in [*HALF, jnp.float32]]
  return jax.device_get(jit_once(run)(KEY))


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
@pytest.mark.parametrize("name", FORWARD)
def test_half_precision_in_same_dtype_out(name, dtype):
  results = half_precision_results()
  y, ref = results[HALF.index(dtype)][name], results[-1][name]
  assert y.dtype == dtype and y.shape == X.shape
  y = np.asarray(y, np.float32)
  assert np.all(np.isfinite(y))
  if name == "gaussian_noise":
    # Its noise is drawn in x's dtype, so it is not float32's noise rounded.
    assert not np.array_equal(y, np.asarray(X_HALF))
    return
  # The same mask and scale as in float32, to the rounding of the dtype: a 16-bit mask
  # differs from the float32 one only near the threshold (at most 3 entries in 2^16 on
  # average), and in none of these.
  eps = float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(y, ref, rtol=2 * eps, atol=4 * eps * np.max(np.abs(ref)))


# alpha_dropout, gaussian_dropout, gaussian_noise ----------------------------------------

def assert_mean_and_variance(y, mean, variance, fourth_central=None, what=""):
  """Sample mean and variance of n i.i.d. draws within 5σ of the given moments.

  Var[sample mean] = variance/n; the sample variance about the known mean has variance
  Var[(y - mean)²]/n = (μ₄ - variance²)/n, with the fourth central moment μ₄ given where
  it is known (normal: 3·variance²) and estimated from the sample otherwise.
  """
  y = np.asarray(y, np.float64).ravel()
  n = y.size
  assert_within_sigmas(y.mean(), mean, math.sqrt(variance / n), f"{what} mean")
  centered2 = (y - mean) ** 2
  var_of_sq = (fourth_central - variance**2) if fourth_central is not None else centered2.var()
  assert_within_sigmas(centered2.mean(), variance, math.sqrt(var_of_sq / n), f"{what} variance")


@functools.cache
def noise_samples():
  def run(key, z):
    alpha = {(rate, exact): jr.alpha_dropout(key, z, rate, exact=exact)
             for rate in RATES for exact in (False, True)}
    gauss = {rate: jr.gaussian_dropout(key, jnp.ones(BIG), rate) for rate in RATES}
    return alpha, gauss
  z = jax.random.normal(jax.random.key(7), (BIG,))
  return jax.device_get(jit_once(run)(KEY, z))


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("rate", RATES)
def test_alpha_dropout_keeps_zero_mean_and_unit_variance(rate, exact):
  # For x ~ N(0, 1): E[y] = a·α'(1-q) + b = 0 and Var[y] = a²·(q + α'²q(1-q)) = 1.
  assert_mean_and_variance(noise_samples()[0][rate, exact], 0.0, 1.0, what=f"rate {rate}")


@pytest.mark.parametrize("rate", RATES)
def test_gaussian_dropout_noise_has_mean_one_and_variance_rate_over_keep(rate):
  # y = 1·ε with ε ~ N(1, v), v = p/(1-p).
  v = rate / (1 - rate)
  assert_mean_and_variance(noise_samples()[1][rate], 1.0, v, fourth_central=3 * v**2,
                           what=f"rate {rate}")


@pytest.mark.parametrize("traced", [False, True])
def test_gaussian_noise_adds_noise_of_the_given_stddev(traced):
  stddev = 0.7
  if traced:
    y = jit_once(lambda x, s: jr.gaussian_noise(KEY, x, s))(x_big(), stddev)
  else:
    y = jit_once(lambda x: jr.gaussian_noise(KEY, x, stddev))(x_big())
  noise = np.asarray(y, np.float64) - x_big().astype(np.float64)
  assert_mean_and_variance(noise, 0.0, stddev**2, fourth_central=3 * stddev**4)


def test_gaussian_noise_traced_zero_negative_or_nan_stddev_adds_nothing():
  fn = jit_once(lambda s: jr.gaussian_noise(KEY, X, s))
  for stddev in (0.0, -1.0, float("nan")):
    np.testing.assert_array_equal(fn(stddev), X, err_msg=str(stddev))


# drop_path ------------------------------------------------------------------------------

@pytest.mark.parametrize("exact", [False, True])
def test_drop_path_drops_whole_examples_at_the_rate(exact):
  x = nonzero_normal(4, (8192, 3, 5))
  rate = 0.3
  y = np.asarray(jit_once(lambda k, x: jr.drop_path(k, x, rate, exact=exact))(KEY, x))
  dropped = ~y.any(axis=(1, 2))
  # Each example is all zero or all x/q.
  np.testing.assert_allclose(y[~dropped], np.asarray(x)[~dropped] / keep_prob(rate, exact),
                             rtol=1e-6)
  assert_fraction(int(dropped.sum()), dropped.size, rate, "dropped examples")


# dropblock ------------------------------------------------------------------------------

# (shape, block_size, rate, exact). The 16×16 maps, 512 of them, also give the drop
# fraction; exact=True only changes how block corners are drawn.
BLOCK_CASES = [
    ((64, 16, 16, 8), 3, 0.1, False),
    ((64, 16, 16, 8), 5, 0.1, False),
    ((64, 16, 16, 8), 2, 0.3, False),
    ((64, 16, 16, 8), 3, 0.1, True),
    ((8, 12, 12, 4), 5, 0.2, False),
    ((8, 40, 4), 4, 0.2, False),        # one spatial dim
    ((4, 8, 8, 8, 2), 2, 0.2, False),   # three spatial dims
]
BLOCK_IDS = [f"{s}-block{b}-rate{r}" + ("-exact" if e else "") for s, b, r, e in BLOCK_CASES]
FRACTION_CASES = [i for i, case in enumerate(BLOCK_CASES) if case[0] == (64, 16, 16, 8)]


@functools.cache
def dropblock_results():
  def run(key):
    blocks = [jr.dropblock(key, jnp.ones(shape), rate, block_size, exact=exact)
              for shape, block_size, rate, exact in BLOCK_CASES]
    constant = {exact: jr.dropblock(key, jnp.full((4, 12, 12, 8), 1.5), 0.3, 3, exact=exact)
                for exact in (False, True)}
    return blocks, constant
  return jax.device_get(jit_once(run)(KEY))


def assert_whole_blocks(dropped, block_size):
  """Every dropped position of each (example, channel) map lies in a block_size^d cube,
  inside the map, that is dropped whole."""
  d = dropped.ndim - 2
  spatial = tuple(range(1, d + 1))
  windows = np.lib.stride_tricks.sliding_window_view(dropped, (block_size,) * d, axis=spatial)
  whole = windows.all(axis=tuple(range(-d, 0)))  # (batch, *corners, channels)
  covered = np.zeros_like(dropped)
  for offset in itertools.product(range(block_size), repeat=d):
    index = tuple(slice(o, o + v) for o, v in zip(offset, whole.shape[1:-1]))
    covered[(slice(None), *index, slice(None))] |= whole
  np.testing.assert_array_equal(dropped, covered)


@pytest.mark.parametrize("case", range(len(BLOCK_CASES)), ids=BLOCK_IDS)
def test_dropblock_drops_whole_blocks_inside_the_map(case):
  _, block_size, _, _ = BLOCK_CASES[case]
  dropped = dropblock_results()[0][case] == 0
  assert dropped.any() and not dropped.all()
  assert_whole_blocks(dropped, block_size)
  # Corners are drawn per example and per channel: maps differ along both.
  assert np.any(dropped != dropped[..., :1]) and np.any(dropped != dropped[:1])


def expected_drop_fraction(rate, size, block_size, d):
  """E[dropped fraction] of a d-dim map of side `size` with corners drawn at the paper's
  γ = p/s^d · (n/(n-s+1))^d: a position that c possible corners cover is dropped with
  probability 1 - (1-γ)^c."""
  valid = size - block_size + 1
  gamma = min(rate * (size / valid) ** d / block_size**d, 1.0)
  i = np.arange(size)
  per_axis = np.minimum(i, valid - 1) - np.maximum(0, i - block_size + 1) + 1
  covers = functools.reduce(np.multiply.outer, [per_axis] * d)
  return float(np.mean(1 - (1 - gamma) ** covers))


@pytest.mark.parametrize("case", FRACTION_CASES, ids=[BLOCK_IDS[i] for i in FRACTION_CASES])
def test_dropblock_drop_fraction(case):
  _, block_size, rate, _ = BLOCK_CASES[case]
  y = dropblock_results()[0][case]
  per_map = np.mean(y == 0, axis=(1, 2)).ravel()  # 512 independent maps
  sigma = per_map.std(ddof=1) / math.sqrt(per_map.size)
  assert_within_sigmas(per_map.mean(), expected_drop_fraction(rate, 16, block_size, 2), sigma)
  if rate <= 0.1:
    # Overlapping blocks pull the fraction below the rate as the rate grows; for small
    # rates it is close to it.
    assert abs(per_map.mean() - rate) <= 0.15 * rate


@pytest.mark.parametrize("exact", [False, True])
def test_dropblock_keeps_the_sum_of_a_constant_exactly(exact):
  y = dropblock_results()[1][exact]
  kept_entries = y != 0
  assert 0 < kept_entries.sum() < kept_entries.size
  # Survivors are scaled by size/count_kept over the whole array.
  np.testing.assert_allclose(y[kept_entries], 1.5 * y.size / kept_entries.sum(), rtol=1e-6)
  np.testing.assert_allclose(np.sum(y, dtype=np.float64), 1.5 * y.size, rtol=1e-6)


# mc_predict -----------------------------------------------------------------------------

def test_mc_predict_is_mean_and_population_variance_over_split_keys():
  w = nonzero_normal(5, (3, 2))
  fn = lambda k, x, w: jr.dropout(k, x, 0.4) @ w
  mean, var = jit_once(lambda key: jr.mc_predict(fn, key, X, w, num_samples=16))(KEY)
  samples = np.stack([np.asarray(fn(k, X, w), np.float64) for k in jax.random.split(KEY, 16)])
  assert np.all(samples.var(0) > 0)
  np.testing.assert_allclose(mean, samples.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(var, samples.var(0), rtol=1e-5, atol=1e-6)


def test_mc_predict_with_a_pytree_output():
  def fn(k, x):
    return {"drop": jr.dropout(k, x, 0.5), "noise": (jr.gaussian_noise(k, x, 0.1),)}
  mean, var = jit_once(lambda key: jr.mc_predict(fn, key, X, num_samples=8))(KEY)
  samples = [fn(k, X) for k in jax.random.split(KEY, 8)]
  stacked = jax.tree.map(lambda *s: np.stack(s).astype(np.float64), *samples)
  chex.assert_trees_all_close(mean, jax.tree.map(lambda s: s.mean(0), stacked),
                              rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(var, jax.tree.map(lambda s: s.var(0), stacked),
                              rtol=1e-5, atol=1e-6)


# exact=True against Flax, and the backward residual -------------------------------------

FLAX_DIMS = [(), (0,), (-1, 0)]


@functools.cache
def flax_and_jaxreg():
  """{(rate, broadcast_dims, function): (flax.linen.Dropout's output, jaxreg's, exact=True)}."""
  def run(key, x):
    out = {(rate, dims, "dropout"): (
        nn.Dropout(rate, broadcast_dims=dims).apply({}, x, deterministic=False, rng=key),
        jr.dropout(key, x, rate, broadcast_dims=dims, exact=True))
        for rate in RATES for dims in FLAX_DIMS}
    # drop_path is Dropout shared along all axes but the batch; drop_connect is Dropout.
    out[0.3, (1, 2, 3), "drop_path"] = (
        nn.Dropout(0.3, broadcast_dims=(1, 2, 3)).apply({}, x, deterministic=False, rng=key),
        jr.drop_path(key, x, 0.3, exact=True))
    out[0.3, (), "drop_connect"] = (nn.Dropout(0.3).apply({}, x, deterministic=False, rng=key),
                                    jr.drop_connect(key, x, 0.3, exact=True))
    # Given rngs={"dropout": key}, Flax hands the layer a key derived by make_rng; fed
    # that key, jaxreg draws the same mask.
    layer = nn.Dropout(0.3)
    derived = nn.apply(lambda module: module.make_rng("dropout"), layer)({}, rngs={"dropout": key})
    out[0.3, (), "rngs"] = (layer.apply({}, x, deterministic=False, rngs={"dropout": key}),
                            jr.dropout(derived, x, 0.3, exact=True))
    return out
  return jax.device_get(jit_once(run)(KEY, X))


@pytest.mark.parametrize("broadcast_dims", FLAX_DIMS)
@pytest.mark.parametrize("rate", RATES)
def test_exact_is_bit_identical_to_flax_linen_dropout(rate, broadcast_dims):
  expected, ours = flax_and_jaxreg()[rate, broadcast_dims, "dropout"]
  np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("name,dims", [("drop_path", (1, 2, 3)), ("drop_connect", ()),
                                       ("rngs", ())], ids=["drop_path", "drop_connect",
                                                           "dropout_via_flax_rng_stream"])
def test_exact_drop_path_drop_connect_and_rng_stream_match_flax(name, dims):
  expected, ours = flax_and_jaxreg()[0.3, dims, name]
  np.testing.assert_array_equal(ours, expected)


RESIDUAL_CASES = {  # name: (fn, shape, kwargs); the mask is packed along its last axis
    "dropout_odd_last_dim": (jr.dropout, (3, 37), {}),
    "dropout_scalar": (jr.dropout, (), {}),
    "drop_path": (jr.drop_path, (2, 4, 64), {}),  # a mask of shape (2, 1, 1)
    "drop_connect_classic": (jr.drop_connect, (3, 37), {"mode": "classic"}),
}


# The residual does not depend on where the mask came from: exact=True once suffices.
RESIDUAL_RUNS = [(name, False) for name in RESIDUAL_CASES] + [("dropout_odd_last_dim", True)]


@functools.cache
def residual_results():
  """Per (case, exact, residual): value, gradient, vmapped gradient, a second derivative."""
  def run(key):
    keys = jax.random.split(key, 3)
    out = {}
    for name, exact in RESIDUAL_RUNS:
      fn, shape, kwargs = RESIDUAL_CASES[name]
      x, w = nonzero_normal(7, shape), nonzero_normal(8, shape)
      for residual in ("packed", "recompute"):
        loss = lambda x, k: jnp.sum(fn(k, x, RATE, exact=exact, residual=residual, **kwargs) * w)
        grad = jax.grad(loss)
        out[name, exact, residual] = {
            "value": fn(key, x, RATE, exact=exact, residual=residual, **kwargs),
            "grad": grad(x, key)}
        if name in ("dropout_odd_last_dim", "dropout_scalar"):  # Batched over keys.
          out[name, exact, residual]["vmap_grad"] = jax.vmap(grad, in_axes=(None, 0))(x, keys)
        if name == "dropout_odd_last_dim":  # To second order, once.
          out[name, exact, residual]["hvp"] = jax.jvp(lambda x: grad(x, key), (x,), (w,))[1]
    return out
  return jax.device_get(jit_once(run)(KEY))


@pytest.mark.parametrize("name,exact", RESIDUAL_RUNS)
def test_packed_and_recompute_residuals_agree_bitwise(name, exact):
  results = residual_results()
  packed, recompute = results[name, exact, "packed"], results[name, exact, "recompute"]
  chex.assert_trees_all_equal(packed, recompute)
  # Not vacuous: something was kept (a scalar, under at least one of several keys).
  assert any(np.any(leaf != 0) for leaf in jax.tree.leaves(packed))


# Properties over shapes, rates and dtypes -----------------------------------------------

@functools.partial(jit_once, static_argnames=("variant", "dims", "exact"))
def _dropped_and_mask(x, rate, *, variant, dims, exact):
  if variant == "drop_path":
    y = jr.drop_path(KEY, x, rate, exact=exact)
  elif variant == "drop_connect":
    y = jr.drop_connect(KEY, x, rate, exact=exact)
  else:
    y = jr.dropout(KEY, x, rate, broadcast_dims=dims, exact=exact)
  return y, jr.dropout_mask(KEY, x.shape, rate, broadcast_dims=dims, exact=exact)


@hypothesis.settings(max_examples=15)  # Each example compiles a program for its shape.
@hypothesis.given(
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=6),
    rate=st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 0.999)),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]),
    exact=st.booleans(),
    variant=st.sampled_from(["dropout", "drop_connect", "drop_path"]),
    data=st.data())
def test_output_is_zero_or_x_over_keep_prob_on_the_mask(shape, rate, dtype, exact, variant,
                                                        data):
  ndim = len(shape)
  if variant == "drop_path":
    hypothesis.assume(ndim >= 1)
    dims = tuple(range(1, ndim))  # drop_path shares the mask along all but the first axis
  elif variant == "drop_connect" or ndim == 0:
    dims = ()
  else:
    dims = tuple(data.draw(st.lists(st.integers(-ndim, ndim - 1), max_size=ndim)))
  x = nonzero_normal(ndim, shape, dtype)
  # The rate is traced here (one compile per shape); Python-float rates are tested above.
  y, mask = _dropped_and_mask(x, rate, variant=variant, dims=dims, exact=exact)
  assert y.dtype == dtype and y.shape == shape
  y, mask = np.asarray(y, np.float64), np.asarray(mask)
  np.testing.assert_array_equal(y != 0, mask)
  if mask.any():
    eps = float(jnp.finfo(dtype).eps)
    expected = np.asarray(x, np.float64)[mask] / keep_prob(rate, exact, traced=True)
    np.testing.assert_allclose(y[mask], expected, rtol=2 * eps)


# Options that timm, torchvision and Keras users reach for -----------------------------

def test_drop_path_batch_mode_drops_the_whole_batch_as_torchvision_does():
  # torchvision's StochasticDepth(mode="batch"): one Bernoulli(1 - p) for the whole
  # input, survivors scaled by 1/(1 - p).
  x = nonzero_normal(6, (4, 3, 2))
  rate, draws = 0.3, 2048
  keys = jax.random.split(KEY, draws)
  batch, rows = jax.jit(lambda keys: (
      jax.vmap(lambda k: jr.drop_path(k, x, rate, per="batch"))(keys),
      jax.vmap(lambda k: jr.drop_path(k, x, rate))(keys[:64])))(keys)
  y, rows = np.asarray(batch), np.asarray(rows)
  dropped = ~y.any(axis=(1, 2, 3))
  np.testing.assert_allclose(y[~dropped], np.broadcast_to(
      np.asarray(x) / keep_prob(rate), y[~dropped].shape), rtol=1e-6)
  assert_fraction(int(dropped.sum()), draws, rate, "dropped batches")
  # The row mode draws per example: with 4 examples, partly dropped batches occur.
  partly = rows.any(axis=(1, 2, 3)) & ~rows.all(axis=(1, 2, 3))
  assert partly.any()
  chex.assert_trees_all_equal(jr.drop_path(None, x, rate, per="batch", deterministic=True), x)
  with pytest.raises(ValueError, match="per must be one of"):
    jr.drop_path(KEY, x, rate, per="example")


def test_drop_path_rates_equal_timms_linspace():
  # timm's calculate_drop_path_rates(max_rate, depth): torch.linspace(0, max_rate, depth)
  for depth, max_rate in [(1, 0.1), (2, 0.2), (12, 0.1), (24, 0.4), (36, 0.5)]:
    rates = jr.drop_path_rates(depth, max_rate)
    assert len(rates) == depth and all(isinstance(r, float) for r in rates)
    np.testing.assert_allclose(rates, np.linspace(0, max_rate, depth), rtol=1e-7, atol=0)
    assert rates[0] == 0.0
  for depth in [0, -3]:
    with pytest.raises(ValueError, match="depth must be a positive int"):
      jr.drop_path_rates(depth, 0.1)
  for depth in [2.0, True]:
    with pytest.raises(TypeError, match="depth must be a positive int"):
      jr.drop_path_rates(depth, 0.1)
  with pytest.raises(ValueError, match="max_rate"):
    jr.drop_path_rates(4, 1.5)


def test_dropblock_coupled_channels_and_channels_first():
  shape = (64, 16, 16, 8)
  fn = jax.jit(lambda k: (
      jr.dropblock(k, jnp.ones(shape), 0.1, 3, couple_channels=True),
      jr.dropblock(k, jnp.ones((64, 8, 16, 16)), 0.1, 3, data_format="channels_first"),
      jr.dropblock(k, jnp.ones((64, 8, 16, 16)), 0.1, 3, couple_channels=True,
                   data_format="channels_first")))
  coupled, first, both = jax.device_get(fn(KEY))
  # Coupled: one block pattern for every channel of an example, still whole blocks.
  dropped = coupled == 0
  assert dropped.any() and np.all(dropped == dropped[..., :1])
  assert_whole_blocks(dropped, 3)
  assert np.any(dropped != dropped[:1])
  np.testing.assert_allclose(np.sum(coupled, dtype=np.float64), coupled.size, rtol=1e-6)
  for y, coupled_channels in [(first, False), (both, True)]:
    last = np.moveaxis(y, 1, -1)  # back to channels-last to check the blocks
    dropped = last == 0
    assert_whole_blocks(dropped, 3)
    assert np.all(dropped == dropped[..., :1]) == coupled_channels
    per_map = dropped.mean(axis=(1, 2)).ravel()
    sigma = max(per_map.std(ddof=1), 1e-3) / math.sqrt(per_map.size)
    assert_within_sigmas(per_map.mean(), expected_drop_fraction(0.1, 16, 3, 2), sigma)
  with pytest.raises(ValueError, match="data_format"):
    jr.dropblock(KEY, jnp.ones(shape), 0.1, 3, data_format="NCHW")
  with pytest.raises(ValueError, match="block_size 9 is larger"):
    jr.dropblock(KEY, jnp.ones((2, 3, 8, 8)), 0.1, 9, data_format="channels_first")


def test_alpha_dropout_broadcast_dims_share_the_mask_and_keep_the_moments():
  normal = jax.random.normal(KEY, (4096, 4, 64))
  fn = jax.jit(lambda x: jr.alpha_dropout(OTHER_KEY, x, 0.2, broadcast_dims=(1,)))
  # On x >= 0 a dropped entry, a·α' + b, lies below every kept one, a·x + b.
  y = np.asarray(fn(jnp.abs(normal)))
  a = 1 / math.sqrt(0.8 + ALPHA_PRIME**2 * 0.8 * 0.2)
  dropped = y < -a * ALPHA_PRIME * 0.2 - 1e-4
  np.testing.assert_allclose(y[dropped], a * ALPHA_PRIME * 0.8, rtol=1e-5)
  # One draw per (example, feature), shared along axis 1 (Keras noise_shape=(n, 1, f)).
  assert np.all(dropped == dropped[:, :1])
  assert_fraction(int(dropped[:, 0].sum()), dropped[:, 0].size, 0.2, "dropped entries")
  # Each entry is still kept with probability 0.8: zero mean, unit variance.
  z = np.asarray(fn(normal))
  sigma = z.std() * math.sqrt(4 / z.size)  # 4 entries share each draw
  assert_within_sigmas(z.mean(), 0.0, sigma, "mean")
  assert abs(z.var() - 1) < 0.02
