"""jaxreg.attention against Flax's attention and against itself.

* ``deterministic=True``: equal to ``flax.linen.dot_product_attention`` (and
  ``flax.nnx.dot_product_attention``) for the argument combinations Flax's modules pass
  (bias, mask, causal, dtype, ``force_fp32_for_softmax``, precision, custom einsums,
  batch dims), to float tolerance;
* ``exact=True`` with dropout: bit-identical to Flax, broadcast mask or not;
* the default fast mask: keep fraction and mean output over keys as Flax's (5σ);
* ``implementation="blockwise"``: the dense path's mask bit for bit (read off the
  output with one-hot values), its values and gradients to rounding, with and without
  dropout, causal, padded, fully masked rows, lengths the block size does not divide;
* the backward pass saves no ``(batch, heads, q, k)`` mask, and the blockwise one no
  ``q × k`` array at all;
* linen and NNX multi-head attention with ``attention_fn=`` train under ``jit``,
  ``scan`` and ``remat``, and with ``exact=True`` give Flax's outputs and sown weights;
* bad input raises ``ValueError`` naming the argument.
"""

import functools

from absl.testing import parameterized
import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg as jr
from jaxreg import attention
from jaxreg import masks

KEY = jax.random.key(0)
DROP_KEY = jax.random.key(7)
RATE = 0.3
SIGMAS = 5.0
# Programs run once on tiny arrays: LLVM's optimizations would cost more than they save.
jit_once = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def qkv(shape=(2, 6, 3, 4), seed=0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return tuple(jax.random.normal(k, shape, dtype) for k in keys)


def padding_mask(batch, length, valid):
  """``(batch, 1, 1, length)``: keys at and after ``valid[b]`` are padding."""
  return (jnp.arange(length)[None, :] < jnp.asarray(valid)[:, None])[:, None, None, :]


def one_hot_values(shape):
  """Values that make the output the (dropped) weights: ``out[..., q, h, k] = W[h, q, k]``."""
  *batch, length, heads, _ = shape
  return jnp.broadcast_to(jnp.eye(length)[:, None, :], (*batch, length, heads, length))


# deterministic=True equals Flax --------------------------------------------------------

def _bias(shape):
  return 0.5 * jax.random.normal(jax.random.key(3), shape)


# What Flax's modules pass, and what users pass to the function (shape (2, 6, 3, 4)).
FLAX_CASES = {
    "plain": {},
    "bias": dict(bias=_bias((2, 3, 6, 6))),
    "padding mask": dict(mask=padding_mask(2, 6, [6, 4])),
    "causal float mask": dict(mask=nn.make_causal_mask(jnp.ones((2, 6)))),
    "mask and bias": dict(mask=padding_mask(2, 6, [3, 6]), bias=_bias((1, 1, 6, 6))),
    "dtype bf16": dict(dtype=jnp.bfloat16),
    "force_fp32_for_softmax": dict(dtype=jnp.bfloat16, force_fp32_for_softmax=True),
    "precision": dict(precision=jax.lax.Precision.HIGHEST),
    "custom einsums": dict(qk_attn_weights_einsum=jnp.einsum,
                           attn_weights_value_einsum=jnp.einsum),
    "rate set, deterministic": dict(dropout_rate=0.5),
}
# What the Pallas kernel refuses (tests/test_pallas_attention.py checks the errors): a
# bias, a mask that varies along queries, custom einsums.
PALLAS_REFUSES = {"bias", "causal float mask", "mask and bias", "custom einsums"}


class FlaxEquivalenceTest(parameterized.TestCase):

  @parameterized.named_parameters((name, name) for name in FLAX_CASES)
  def test_deterministic_matches_linen(self, case):
    kwargs = FLAX_CASES[case]
    q, k, v = qkv()
    want = nn.dot_product_attention(q, k, v, deterministic=True, **kwargs)
    for implementation in attention.IMPLEMENTATIONS:
      if implementation == "pallas" and case in PALLAS_REFUSES:
        continue
      got = jr.attention.dot_product_attention(q, k, v, deterministic=True,
                                               implementation=implementation,
                                               block_size=4, **kwargs)
      assert got.dtype == want.dtype, (implementation, got.dtype, want.dtype)
      tol = 2e-2 if want.dtype == jnp.bfloat16 else 1e-5
      np.testing.assert_allclose(np.float32(got), np.float32(want), atol=tol, rtol=tol,
                                 err_msg=implementation)

  def test_deterministic_matches_nnx_with_is_causal_and_no_batch_dims(self):
    q, k, v = qkv((6, 3, 4))
    mask = padding_mask(1, 6, [5])[0]  # (1, 1, 6) for a batch-free input.
    want = nnx.dot_product_attention(q, k, v, mask=mask, is_causal=True)
    got = jit_once(lambda q, k, v: [jr.attention.dot_product_attention(
        q, k, v, mask=mask, is_causal=True, implementation=implementation, block_size=4)
        for implementation in attention.IMPLEMENTATIONS])(q, k, v)
    for out in got:
      np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-5)

  @parameterized.parameters((True, "bfloat16"), (False, "float32"))
  def test_exact_dropout_is_flax_bit_for_bit(self, broadcast, dtype):
    q, k, v = qkv((2, 2, 5, 3, 4), dtype=jnp.dtype(dtype))  # two batch dims.
    kwargs = dict(mask=jax.random.bernoulli(KEY, 0.7, (5, 5)), bias=_bias((3, 5, 5)),
                  broadcast_dropout=broadcast, dropout_rate=RATE)
    # Under jit, as in training; each function compiled alone, with the same options.
    run = lambda fn: jit_once(functools.partial(fn, **kwargs))(q, k, v, dropout_rng=DROP_KEY)
    got = run(functools.partial(jr.attention.dot_product_attention, exact=True))
    np.testing.assert_array_equal(np.float32(got), np.float32(run(nn.dot_product_attention)))
    np.testing.assert_array_equal(np.float32(got), np.float32(run(nnx.dot_product_attention)))


# The fast mask has Flax's distribution ---------------------------------------------------

def test_default_dropout_matches_flax_in_distribution():
  shape = (2, 64, 4, 8)  # 2·4·64·64 = 32768 weights.
  q, k, _ = qkv(shape)
  v = one_hot_values(shape)
  kwargs = dict(broadcast_dropout=False, dropout_rng=DROP_KEY, dropout_rate=RATE)
  n = 2 * 4 * 64 * 64
  bound = SIGMAS * np.sqrt(RATE * (1 - RATE) / n)
  for fn in (jr.attention.dot_product_attention, nn.dot_product_attention):
    out = jit_once(functools.partial(fn, **kwargs))(q, k, v)
    kept = np.mean(np.asarray(out) != 0)  # softmax weights are > 0.
    assert abs(kept - (1 - RATE)) < bound, (fn, kept)

  # Mean output over keys: within 5σ of the deterministic output, for both.
  q, k, v = qkv((1, 4, 2, 3))
  deterministic = nn.dot_product_attention(q, k, v)
  keys = jax.random.split(jax.random.key(11), 256)
  for fn in (jr.attention.dot_product_attention, nn.dot_product_attention):
    samples = jit_once(jax.vmap(lambda key: fn(q, k, v, dropout_rng=key, dropout_rate=RATE,
                                               broadcast_dropout=False)))(keys)
    error = np.abs(np.mean(samples, 0) - deterministic)
    np.testing.assert_array_less(error, SIGMAS * np.std(samples, 0) / np.sqrt(len(keys)) + 1e-6)


def test_default_mask_differs_across_keys_and_is_not_flax_s():
  q, k, _ = qkv((1, 16, 2, 4))
  v = one_hot_values((1, 16, 2, 4))
  draw = lambda key, **kw: np.asarray(jit_once(functools.partial(
      jr.attention.dot_product_attention, dropout_rate=0.5, **kw))(
          q, k, v, dropout_rng=key)) != 0
  assert not np.array_equal(draw(DROP_KEY), draw(KEY))
  assert not np.array_equal(draw(DROP_KEY), draw(DROP_KEY, exact=True))
  # A broadcast mask is the same for every head; an unbroadcast one is not.
  shared = draw(DROP_KEY)
  assert np.array_equal(shared[..., 0, :], shared[..., 1, :])
  own = draw(DROP_KEY, broadcast_dropout=False)
  assert not np.array_equal(own[..., 0, :], own[..., 1, :])


# Blockwise equals dense ----------------------------------------------------------------------

BLOCKWISE_CASES = {
    # name: (length, block_size, extra arguments); length 7 is not a multiple of 3.
    "no dropout, causal, padded": (7, 3, dict(mask=padding_mask(2, 7, [2, 5]),
                                              is_causal=True)),
    "dropout, bias, causal, ragged": (7, 3, dict(bias=_bias((2, 3, 7, 7)), is_causal=True,
                                                 dropout_rate=RATE)),
    "dropout, padded, fully masked row, unbroadcast": (
        7, 3, dict(mask=padding_mask(2, 7, [0, 5]), dropout_rate=RATE,
                   broadcast_dropout=False)),
    "causal float mask, bias, exact": (
        7, 2, dict(mask=nn.make_causal_mask(jnp.ones((2, 7))), bias=_bias((1, 3, 7, 7)),
                   dropout_rate=RATE, exact=True)),
}


@pytest.mark.parametrize("case", list(BLOCKWISE_CASES))
def test_blockwise_equals_dense(case):
  length, block_size, kwargs = BLOCKWISE_CASES[case]
  kwargs = dict(kwargs, dropout_rng=DROP_KEY)
  q, k, _ = qkv((2, length, 3, 4))
  # Values as deep as the keys are long, so that one-hot values reuse the programs.
  v = jax.random.normal(KEY, (2, length, 3, length))
  bias = kwargs.pop("bias", None)

  def attend(implementation, q, k, v, bias):
    return jr.attention.dot_product_attention(q, k, v, bias, implementation=implementation,
                                              block_size=block_size, **kwargs)

  @functools.cache
  def program(implementation):
    """The output and the gradient of ``sum(sin(output))``, in one program."""
    def run(q, k, v, bias):
      out, pullback = jax.vjp(functools.partial(attend, implementation), q, k, v, bias)
      return out, pullback(jnp.cos(out))
    return jit_once(run)

  (dense, dense_grads), (blockwise, blockwise_grads) = (
      program(impl)(q, k, v, bias) for impl in ("dense", "blockwise"))
  np.testing.assert_allclose(blockwise, dense, atol=1e-5)
  for dense_grad, blockwise_grad in zip(jax.tree.leaves(dense_grads),
                                        jax.tree.leaves(blockwise_grads), strict=True):
    np.testing.assert_allclose(blockwise_grad, dense_grad, atol=1e-5)
  # With one-hot values the output is the dropped weights: the masks agree exactly.
  eye = one_hot_values(v.shape)
  np.testing.assert_array_equal(*(np.asarray(program(impl)(q, k, eye, bias)[0]) == 0
                                  for impl in ("dense", "blockwise")))
  if kwargs.get("exact"):
    want = nn.dot_product_attention(q, k, v, bias, **{
        n: kwargs[n] for n in ("mask", "dropout_rng", "dropout_rate")})
    np.testing.assert_allclose(blockwise, want, atol=1e-5)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_bfloat16_weights_are_scaled_by_the_realized_q_without_bias(rate):
  # Dividing by q rounded to bfloat16 (0.9 -> 0.8984, whose reciprocal rounds to
  # 1.1094) scales every kept weight by 0.9984 on average instead of 1 (by 1.0008 at
  # rate 0.3), as Flax does. The dense path scales bfloat16 weights as jr.dropout
  # does, by 1/q in float32 rounded once, so only per-entry rounding is left.
  shape = (1, 128, 4, 128)
  q, k, _ = qkv(shape, dtype=jnp.bfloat16)
  eye = one_hot_values(shape).astype(jnp.bfloat16)
  attend = jit_once(lambda rate: jr.attention.dot_product_attention(
      q, k, eye, dropout_rng=DROP_KEY, dropout_rate=rate, broadcast_dropout=False,
      implementation="dense"))
  weights, dropped = (np.float32(attend(r)) for r in (0.0, rate))
  kept = dropped != 0
  keep_prob = float(masks.keep_mask(DROP_KEY, (1,), rate, dtype=jnp.bfloat16).keep_prob)
  mean_scale = np.mean(dropped[kept] / weights[kept]) * keep_prob
  assert abs(mean_scale - 1) < 2e-4, mean_scale


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
def test_bfloat16_weights_draw_the_16_bit_mask_in_either_implementation(implementation):
  # The mask's resolution follows the weights' dtype, also where the blockwise path
  # drops float32 probabilities on the way.
  shape = (1, 256, 4, 256)
  q, k, _ = qkv(shape, dtype=jnp.bfloat16)
  eye = one_hot_values(shape).astype(jnp.bfloat16)
  dropped = jit_once(lambda q, k, eye: jr.attention.dot_product_attention(
      q, k, eye, dropout_rng=DROP_KEY, dropout_rate=0.3, broadcast_dropout=False,
      implementation=implementation, block_size=64))(q, k, eye)
  kept = np.swapaxes(np.asarray(dropped) != 0, 1, 2)  # To (batch, heads, q, k).
  expected = np.asarray(masks.keep_mask(DROP_KEY, (1, 4, 256, 256), 0.3,
                                        dtype=jnp.bfloat16).mask)
  np.testing.assert_array_equal(kept, expected)
  # The float32 mask differs near the threshold, here in a few entries: the check
  # above tells the two apart.
  assert np.any(expected != masks.keep_mask(DROP_KEY, (1, 4, 256, 256), 0.3).mask)


def test_blockwise_bfloat16_and_forward_mode():
  q, k, v = qkv((1, 5, 2, 4), dtype=jnp.bfloat16)
  kwargs = dict(dropout_rng=DROP_KEY, dropout_rate=RATE, is_causal=True, block_size=2)
  dense, blockwise = jit_once(lambda q, k, v: [
      jr.attention.dot_product_attention(q, k, v, implementation=impl, **kwargs)
      for impl in ("dense", "blockwise")])(q, k, v)
  assert blockwise.dtype == dense.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(blockwise), np.float32(dense), atol=3e-2)
  # Forward mode: the jvp along t is <grad, t>, the mask fixed by the key.
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  fn = lambda q: jnp.sum(jnp.sin(jr.attention.dot_product_attention(
      q, k, v, implementation="blockwise", **kwargs)))
  tangent, projected = jit_once(lambda q, t: (jax.jvp(fn, (q,), (t,))[1],
                                              jnp.vdot(jax.grad(fn)(q), t)))(q, jnp.cos(q))
  np.testing.assert_allclose(tangent, projected, rtol=1e-4)


def _saved(capsys, fn, *args):
  jax.ad_checkpoint.print_saved_residuals(fn, *args)
  return capsys.readouterr().out.splitlines()


def test_backward_saves_no_mask(capsys):
  q, k, v = qkv((2, 16, 2, 4))

  def loss(implementation, q, k, v):
    return jnp.sum(jr.attention.dot_product_attention(
        q, k, v, dropout_rng=DROP_KEY, dropout_rate=RATE, broadcast_dropout=False,
        implementation=implementation, block_size=4))

  dense = _saved(capsys, functools.partial(loss, "dense"), q, k, v)
  weights = "[2,2,16,16]"
  assert not [line for line in dense if weights in line and not line.startswith("f32")]
  # Only the softmax's own residuals have the weights' shape; flax also saves a mask.
  assert 0 < len([line for line in dense if weights in line]) <= 2, dense
  flax = _saved(capsys, lambda q, k, v: jnp.sum(nn.dot_product_attention(
      q, k, v, dropout_rng=DROP_KEY, dropout_rate=RATE, broadcast_dropout=False)), q, k, v)
  assert len([line for line in flax if weights in line]) > 2, flax
  blockwise = _saved(capsys, functools.partial(loss, "blockwise"), q, k, v)
  assert not [line for line in blockwise if "16,16]" in line], blockwise


def test_traced_rate_and_rate_one():
  q, k, v = qkv()
  fn = lambda rate: jr.attention.dot_product_attention(q, k, v, dropout_rng=DROP_KEY,
                                                       dropout_rate=rate)
  out = jit_once(jax.vmap(fn))(jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(out[0], nn.dot_product_attention(q, k, v), atol=1e-6)
  np.testing.assert_array_equal(out[1], 0.0)
  np.testing.assert_array_equal(fn(1.0), 0.0)  # Flax gives 0/0 here.


# Flax modules with attention_fn= -------------------------------------------------------

class LinenLayer(nn.Module):
  attention_fn: object
  train: bool

  @nn.compact
  def __call__(self, x, _):
    y = nn.MultiHeadDotProductAttention(2, qkv_features=8, dropout_rate=0.2,
                                        deterministic=not self.train,
                                        attention_fn=self.attention_fn)(x)
    return x + y, None


class LinenStack(nn.Module):
  """Two attention layers under nn.scan and nn.remat."""
  attention_fn: object

  @nn.compact
  def __call__(self, x, train: bool):
    layers = nn.scan(nn.remat(LinenLayer), variable_axes={"params": 0},
                     split_rngs={"params": True, "dropout": True}, length=2)
    return layers(self.attention_fn, train)(x, None)[0]


def test_linen_multi_head_attention_trains_under_jit_scan_remat():
  # Blockwise: its loops inside Flax's scan and remat (the dense path is Flax's own
  # computation, which the exact tests run inside the modules).
  fn = functools.partial(jr.attention.dot_product_attention, implementation="blockwise",
                         block_size=3)
  model = LinenStack(fn)
  x = jax.random.normal(KEY, (4, 5, 8))
  target = jnp.roll(x, 1, axis=1)
  params = model.init(KEY, x, train=False)
  tx = optax.adam(1e-2)

  @jit_once
  def step(params, state, key):
    loss = lambda p: jnp.mean((model.apply(p, x, True, rngs={"dropout": key}) - target) ** 2)
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state)
    return optax.apply_updates(params, updates), state, value

  state, losses = tx.init(params), []
  for i in range(10):
    params, state, value = step(params, state, jax.random.fold_in(KEY, i))
    losses.append(float(value))
  assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses
  out = lambda key: model.apply(params, x, True, rngs={"dropout": key})
  assert not np.array_equal(out(KEY), out(DROP_KEY))  # the dropout is on.


def test_linen_exact_is_flax_and_sows_its_weights():
  x = jax.random.normal(KEY, (2, 5, 8))
  make = lambda fn: nn.MultiHeadDotProductAttention(2, dropout_rate=0.4, deterministic=False,
                                                    attention_fn=fn)
  ours = make(functools.partial(jr.attention.dot_product_attention, exact=True))
  theirs = make(nn.dot_product_attention)
  params = theirs.init(KEY, x)
  run = lambda module: jit_once(lambda params: module.apply(
      params, x, sow_weights=True, rngs={"dropout": DROP_KEY}, mutable=["intermediates"]))(
          params)
  (got, got_sown), (want, want_sown) = run(ours), run(theirs)
  np.testing.assert_array_equal(got, want)
  got_leaves, want_leaves = jax.tree.leaves(got_sown), jax.tree.leaves(want_sown)
  assert len(got_leaves) == len(want_leaves) == 1
  np.testing.assert_array_equal(got_leaves[0], want_leaves[0])


class NnxLayer(nnx.Module):
  def __init__(self, attention_fn, rngs):
    self.attention = nnx.MultiHeadAttention(2, 8, qkv_features=8, dropout_rate=0.2,
                                            decode=False, attention_fn=attention_fn,
                                            deterministic=False, keep_rngs=False, rngs=rngs)

  def __call__(self, x, key):
    return x + self.attention(x, rngs=nnx.Rngs(dropout=key))


def test_nnx_multi_head_attention_trains_under_jit_scan_remat():
  fn = functools.partial(jr.attention.dot_product_attention, implementation="blockwise",
                         block_size=3)

  @nnx.vmap(in_axes=0, out_axes=0)
  def create(key):
    return NnxLayer(fn, nnx.Rngs(key))

  layers = create(jax.random.split(KEY, 2))

  def forward(layers, x, key):
    @nnx.scan(in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry)
    @nnx.remat
    def body(layer, x, key):
      return layer(x, key)
    return body(layers, x, jax.random.split(key, 2))

  x = jax.random.normal(KEY, (4, 5, 8))
  target = jnp.roll(x, 1, axis=1)
  optimizer = nnx.Optimizer(layers, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(layers, optimizer, key):
    loss = lambda layers: jnp.mean((forward(layers, x, key) - target) ** 2)
    value, grads = nnx.value_and_grad(loss)(layers)
    optimizer.update(layers, grads)
    return value

  losses = [float(step(layers, optimizer, jax.random.fold_in(KEY, i))) for i in range(10)]
  assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses
  assert not np.array_equal(forward(layers, x, KEY), forward(layers, x, DROP_KEY))


def test_nnx_exact_is_flax_and_sows_its_weights():
  x = jax.random.normal(KEY, (2, 5, 8))

  def run(fn):
    module = nnx.MultiHeadAttention(2, 8, dropout_rate=0.4, decode=False, attention_fn=fn,
                                    deterministic=False, keep_rngs=False, rngs=nnx.Rngs(0))
    capture = nnx.capture(nnx.Intermediate)(
        lambda m: m(x, rngs=nnx.Rngs(dropout=DROP_KEY), sow_weights=True))
    return capture(module)

  (got, got_sown), (want, want_sown) = (
      run(functools.partial(jr.attention.dot_product_attention, exact=True)),
      run(nnx.dot_product_attention))
  np.testing.assert_array_equal(got, want)
  got_leaves, want_leaves = jax.tree.leaves(got_sown), jax.tree.leaves(want_sown)
  assert len(got_leaves) == len(want_leaves) == 1
  np.testing.assert_array_equal(got_leaves[0], want_leaves[0])


# Bad input -------------------------------------------------------------------------------

BAD = {
    "head depth": (dict(key=jnp.ones((2, 6, 3, 5))), "depths"),
    "heads": (dict(key=jnp.ones((2, 6, 2, 4)), value=jnp.ones((2, 6, 2, 4))), "heads"),
    "lengths": (dict(value=jnp.ones((2, 5, 3, 4))), "lengths"),
    "rank": (dict(query=jnp.ones((6, 4))), "rank"),
    "rate above 1": (dict(dropout_rate=1.5, dropout_rng=KEY), "dropout_rate"),
    "negative rate": (dict(dropout_rate=-0.1, dropout_rng=KEY), "dropout_rate"),
    "block_size 0": (dict(block_size=0), "block_size"),
    "no dropout_rng": (dict(dropout_rate=0.1), "dropout_rng"),
    "implementation": (dict(implementation="flash"), "implementation"),
    "bias shape": (dict(bias=jnp.ones((2, 3, 6, 5))), "bias"),
    "mask shape": (dict(mask=jnp.ones((4, 1, 1, 6), bool)), "mask"),
    "sow in blockwise": (dict(module=object(), implementation="blockwise"), "module"),
    "one einsum": (dict(qk_attn_weights_einsum=jnp.einsum), "together"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_naming_the_argument(case):
  overrides, message = BAD[case]
  q, k, v = qkv()
  args = dict(query=q, key=k, value=v) | overrides
  with pytest.raises(ValueError, match=message):
    jr.attention.dot_product_attention(**args)


@pytest.mark.parametrize("block_size", [2.0, True, None])
def test_a_block_size_that_is_not_an_int_is_a_type_error(block_size):
  q, k, v = qkv()
  with pytest.raises(TypeError, match="block_size must be a positive int"):
    jr.attention.dot_product_attention(q, k, v, block_size=block_size)
