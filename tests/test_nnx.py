"""The NNX modules: against flax.nnx.Dropout, with train()/eval() and nnx.view, in
training loops, under nnx.scan, nnx.remat and nnx.vmap, with activity penalties and
penalties on ``nnx.state(model, nnx.Param)``.

Expected values come from the definitions (masks read off the outputs, penalties
written out in numpy or jnp) or from Flax's own Dropout, never from jaxreg. Work is
jitted in few, large functions: on CPU, compiling dominates these tests.
"""

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg as jr
from jaxreg import nnx as jn
from jaxreg import transforms

from flax_cases import MODULE_ARGS
from flax_cases import RATES
from flax_cases import SHAPE
from flax_cases import assert_all_differ
from flax_cases import assert_mc_moments
from flax_cases import key
from flax_cases import normal
from flax_cases import paths
from flax_cases import peer_option_cases
from flax_cases import regression_data
from flax_cases import stripes_data


def rngs(seed=0):
  return nnx.Rngs(key(seed))


# Every random module, as (class, args); all take ``rngs`` and ``deterministic``.
MODULES = {name: (getattr(jn, name), args) for name, args in MODULE_ARGS.items()}


# Against flax.nnx.Dropout --------------------------------------------------------


def test_dropout_has_flax_distribution_and_gradient():
  n = 100_000

  @jax.jit
  def draws(x):
    out = {}
    for rate in RATES:
      ours = lambda x, rate=rate: jn.Dropout(rate, rngs=rngs())(x)
      theirs = nnx.Dropout(rate, rngs=rngs())(x)
      out[rate] = ours(x), theirs, jax.grad(lambda x: jnp.sum(ours(x)))(x)
    return out

  for rate, (ours, theirs, grad) in draws(jnp.ones(n)).items():
    q = 1 - rate
    for y in (ours, theirs):
      kept = np.asarray(y) != 0
      assert abs(kept.mean() - q) < 5 * np.sqrt(q * (1 - q) / n), rate
      np.testing.assert_allclose(y[kept], 1 / np.float32(q), rtol=1e-6)
      assert abs(float(jnp.mean(y)) - 1) < 5 * np.sqrt((1 - q) / (q * n)), rate
    # The default fast path draws other bits than Flax: same law, not the same mask.
    assert not np.array_equal(ours != 0, theirs != 0)
    expected = np.where(np.asarray(ours) != 0, 1 / np.float32(q), 0)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


class TwoDropouts(nnx.Module):
  """A model with two dropouts: each forks its own stream, as Flax's do."""

  def __init__(self, make, rngs):
    self.first = make(0.3, rngs=rngs)
    self.linear = nnx.Linear(6, 6, rngs=rngs)
    self.second = make(0.6, broadcast_dims=(0,), rngs=rngs)

  def __call__(self, x):
    return self.second(self.linear(self.first(x)))


def exact(rate, **kwargs):
  return jn.Dropout(rate, exact=True, **kwargs)


def test_exact_is_bit_identical_to_flax():
  # What is new here is the stream handling, the same for every key impl.
  x = normal(1, (8, 6))

  @jax.jit
  def outputs(x):
    out = []
    for make in (exact, nnx.Dropout):
      layer = lambda x: make(0.3, broadcast_dims=(1,), rngs=rngs(7))(x)
      model = TwoDropouts(make, rngs(0))
      # Two calls: the stream advances alike in both.
      out.append((layer(x), jax.grad(lambda x: jnp.sum(layer(x) ** 2))(x),
                  model(x), model(x)))
    return out

  ours, theirs = outputs(x)
  chex.assert_trees_all_equal(ours, theirs)
  layer, _, model_first, model_second = ours
  assert np.any(np.asarray(layer) == 0) and np.any(np.asarray(model_first) == 0)
  assert not np.array_equal(model_first, model_second)
  # Op by op too, for the values.
  chex.assert_trees_all_equal(exact(0.5, rngs=rngs(3))(x), nnx.Dropout(0.5, rngs=rngs(3))(x))


def test_call_rngs_take_precedence_as_in_flax():
  x = jnp.ones((8, 6))
  given = key(5)

  @jax.jit
  def outputs(x):
    ours, theirs = exact(0.5, rngs=rngs(1)), nnx.Dropout(0.5, rngs=rngs(1))
    return [(layer(x, rngs=given), layer(x, rngs=nnx.Rngs(dropout=given)),
             layer(x, rngs=rngs(2).dropout), layer(x)) for layer in (ours, theirs)]

  ours, theirs = outputs(x)
  chex.assert_trees_all_equal(ours, theirs)
  assert_all_differ([ours[0], ours[2], ours[3]])


# Training and evaluation modes --------------------------------------------------


class Block(nnx.Module):
  """A layer: a parameter (equal in every copy), then each random module on the same
  input, so outputs differ only if the randomness does."""

  def __init__(self, rngs):
    self.scale = nnx.Param(jnp.ones(()))
    for name, (cls, args) in MODULES.items():
      setattr(self, name.lower(), cls(*args, rngs=rngs))

  def __call__(self, x):
    return {name: getattr(self, name.lower())(x * self.scale[...]) for name in MODULES}


def random_modules(model):
  return [getattr(model, name.lower()) for name in MODULES]


def test_train_eval_view_and_set_attributes_switch_every_module():
  model = Block(rngs())
  assert not any(m.deterministic for m in random_modules(model))
  model.eval()
  assert all(m.deterministic for m in random_modules(model))
  model.train()
  assert not any(m.deterministic for m in random_modules(model))
  view = nnx.view(model, deterministic=True)
  assert all(m.deterministic for m in random_modules(view))
  assert not any(m.deterministic for m in random_modules(model))
  model.set_attributes(jn.DropPath, deterministic=True)
  assert model.droppath.deterministic and not model.dropout.deterministic


def test_evaluation_is_deterministic_and_draws_no_key():
  model = Block(rngs())
  x = normal(2, SHAPE)
  model.eval()
  counts = lambda: jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.RngCount)))
  before = counts()
  first, second = model(x), model(x)
  chex.assert_trees_all_equal(first, second, {name: x for name in MODULES})
  chex.assert_trees_all_equal(counts(), before)
  # The call's flag wins over the attribute, and then the stream advances.
  assert np.any(np.asarray(model.dropout(x, deterministic=False)) == 0)
  assert counts()["dropout"]["rngs"]["count"] == before["dropout"]["rngs"]["count"] + 1
  # Modules built without rngs run in evaluation, and say what is missing in training.
  bare = jn.Dropout(0.5, deterministic=True)
  chex.assert_trees_all_equal(bare(x), x)
  with pytest.raises(ValueError, match="no `rngs` argument was provided to Dropout"):
    bare(x, deterministic=False)


def test_deterministic_and_trivial_rates_need_no_rng():
  x = jnp.arange(1.0, 5.0)
  chex.assert_trees_all_equal(jn.Dropout(0.0)(x), x)
  chex.assert_trees_all_equal(jn.Dropout(1.0)(x), jnp.zeros(4))
  chex.assert_trees_all_equal(jn.GaussianNoise(0.0)(x), x)
  chex.assert_trees_all_close(jn.Dropout(0.25, mode="classic")(x, deterministic=True), 0.75 * x)
  ones = jnp.ones(SHAPE)
  for cls, args in MODULES.values():
    chex.assert_trees_all_equal(cls(*args, deterministic=True)(ones), ones)


def test_rng_collection_names_the_stream():
  layer = jn.DropPath(0.5, rng_collection="depth", rngs=nnx.Rngs(depth=key(1), dropout=key(2)))
  other = jn.DropPath(0.5, rngs=nnx.Rngs(depth=key(1), dropout=key(2)))
  same_stream = jn.DropPath(0.5, rngs=nnx.Rngs(dropout=key(1)))
  x = jnp.ones((64, 3))
  chex.assert_trees_all_equal(layer(x), same_stream(x))
  assert not np.array_equal(layer(x), other(x))


# Bad input ----------------------------------------------------------------------


def test_missing_rngs_fail_as_in_flax():
  with pytest.raises(ValueError, match="no `rngs` argument was provided to Dropout"):
    nnx.Dropout(0.5)(jnp.ones(3))
  for name, (cls, args) in MODULES.items():
    with pytest.raises(ValueError, match=f"no `rngs` argument was provided to {name}"):
      cls(*args)(jnp.ones(SHAPE))


def test_bad_rngs_and_deterministic_fail_as_in_flax():
  for cls in (nnx.Dropout, jn.Dropout):
    with pytest.raises(TypeError, match="rngs must be a Rngs, RngStream or None"):
      cls(0.5, rngs=0)
    with pytest.raises(TypeError, match="rngs must be a Rngs, RngStream or jax.Array"):
      cls(0.5)(jnp.ones(3), rngs=0)
    with pytest.raises(ValueError, match="No `deterministic` argument was provided to Dropout"):
      cls(0.5, deterministic=None)(jnp.ones(3))


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_rate_raises_the_core_error_before_asking_for_a_key(rate):
  for cls in (jn.Dropout, jn.AlphaDropout, jn.GaussianDropout, jn.DropPath):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
      cls(rate)(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
    jn.DropBlock(rate, 2)(jnp.ones((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="stddev must be finite and >= 0"):
    jn.GaussianNoise(-abs(rate))(jnp.ones(3))


def test_other_bad_arguments_raise_the_core_errors():
  with pytest.raises(TypeError, match="floating-point"):
    jn.Dropout(0.5, rngs=rngs())(jnp.ones(3, jnp.int32))
  with pytest.raises(ValueError, match="mode must be one of"):
    jn.Dropout(0.5, mode="scaled", rngs=rngs())(jnp.ones(3))
  with pytest.raises(ValueError, match="block_size"):
    jn.DropBlock(0.5, 5, rngs=rngs())(jnp.ones((1, 4, 4, 1)))
  # At construction: a bad field fails before any call.
  with pytest.raises(ValueError, match="l2 must be finite and >= 0"):
    jn.ActivityRegularization(l2=float("nan"))
  with pytest.raises(ValueError, match="reduction must be one of"):
    jn.ActivityRegularization(0.1, reduction="mean")
  with pytest.raises(TypeError):
    jn.ActivityRegularization(0.1, 0.1, "sum")  # reduction is keyword-only, as before.


# Training -----------------------------------------------------------------------


class MLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(4, 32, rngs=rngs)
    self.dropout = jn.Dropout(0.1, rngs=rngs)
    self.out = nnx.Linear(32, 1, rngs=rngs)

  def __call__(self, x):
    return self.out(self.dropout(nnx.relu(self.hidden(x))))


class CNN(nnx.Module):
  def __init__(self, rngs):
    self.conv1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.dropblock = jn.DropBlock(0.1, 3, rngs=rngs)
    self.conv2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
    self.drop_path = jn.DropPath(0.2, rngs=rngs)
    self.out = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    h = self.dropblock(nnx.relu(self.conv1(x)))
    h = h + self.drop_path(self.conv2(nnx.relu(h)))
    return self.out(jnp.mean(h, axis=(1, 2)))


def mse(model, x, y):
  return jnp.mean((model(x) - y) ** 2)


def cross_entropy(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@pytest.mark.parametrize("make, data, loss", [
    (MLP, regression_data, mse), (CNN, stripes_data, cross_entropy)], ids=["mlp", "cnn"])
def test_trains_under_jit_with_dropout_on_only_in_training(make, data, loss):
  x, y = data()
  model = make(rngs())
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  reg = jr.L2(1e-4, where=jr.select.kernels())

  @nnx.jit
  def train(model, optimizer):
    model.train()

    @nnx.scan(in_axes=(nnx.Carry, None), out_axes=nnx.Carry, length=100)
    def steps(state, _):
      model, optimizer = state
      objective = lambda model: loss(model, x, y) + reg(nnx.state(model, nnx.Param))
      optimizer.update(model, nnx.grad(objective)(model))
      return model, optimizer

    steps((model, optimizer), None)

  @nnx.jit
  def evaluate(model):
    model.eval()
    first, second = model(x), model(x)
    model.train()
    return loss(nnx.view(model, deterministic=True), x, y), first, second, model(x), model(x)

  before = evaluate(model)[0]
  train(model, optimizer)
  after, first, second, noisy, noisy_again = evaluate(model)
  assert after < 0.5 * before
  chex.assert_trees_all_equal(first, second)
  assert not np.allclose(noisy, noisy_again)
  assert not np.allclose(noisy, first)


# Activity penalties ---------------------------------------------------------------


class Regularized(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(4, 5, rngs=rngs)
    self.hidden_penalty = jn.ActivityRegularization(l1=0.1, l2=0.02, reduction="sum")
    self.out = nnx.Linear(5, 2, rngs=rngs)
    self.out_penalty = jn.ActivityRegularization(l2=0.5, reduction="sum")

  def __call__(self, x):
    return self.out_penalty(self.out(self.hidden_penalty(self.hidden(x))))


def hand_activity_penalty(params, x):
  """``0.1Σ|h| + 0.02Σh² + 0.5Σo²``, written out."""
  h = x @ params["hidden"]["kernel"] + params["hidden"]["bias"]
  o = h @ params["out"]["kernel"] + params["out"]["bias"]
  return 0.1 * jnp.sum(jnp.abs(h)) + 0.02 * jnp.sum(h ** 2) + 0.5 * jnp.sum(o ** 2)


def test_activity_regularization_keeps_the_penalty_and_its_gradient():
  x = normal(4, (3, 4))
  model = Regularized(rngs())
  chex.assert_trees_all_equal(jn.activity_loss(model), jnp.zeros(()))

  @nnx.jit
  def run(model):
    def penalty(model):
      model(x)
      return jn.activity_loss(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return model(x), nnx.grad(penalty)(model), jax.grad(hand_activity_penalty)(params, x)

  y, grads, expected_grads = run(model)
  p = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  h = np.asarray(x) @ p["hidden"]["kernel"] + p["hidden"]["bias"]
  o = h @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(y, o, rtol=1e-5)

  losses = nnx.state(model, jn.ActivityLoss)
  first, second = losses["hidden_penalty"]["activity"][...], losses["out_penalty"]["activity"][...]
  np.testing.assert_allclose(first, 0.1 * np.abs(h).sum() + 0.02 * (h ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(second, 0.5 * (o ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(jn.activity_loss(model), float(first) + float(second), rtol=1e-6)

  chex.assert_trees_all_close(nnx.to_pure_dict(grads), expected_grads, rtol=1e-5, atol=1e-6)
  assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))


def test_activity_losses_stack_under_scan():
  class Layer(nnx.Module):
    def __init__(self):
      self.scale = nnx.Param(jnp.ones(()))
      self.penalty = jn.ActivityRegularization(l1=0.5, reduction="sum")

    def __call__(self, x):
      return self.penalty(x * self.scale[...])

  layers = nnx.vmap(lambda: Layer(), axis_size=3)()
  nnx.scan(lambda x, layer: layer(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(
      -jnp.ones((2, 3)), layers)
  chex.assert_trees_all_close(layers.penalty.activity[...], jnp.full(3, 0.5 * 6))
  np.testing.assert_allclose(jn.activity_loss(layers), 3 * 0.5 * 6)


# Penalties on params ----------------------------------------------------------------


class Tagger(nnx.Module):
  """Every kind of leaf but embeddings that the kernels rule must tell apart."""

  def __init__(self, rngs):
    self.dense = nnx.Linear(4, 8, rngs=rngs)
    self.layer_norm = nnx.LayerNorm(8, rngs=rngs)
    self.conv = nnx.Conv(8, 6, (3,), rngs=rngs)
    self.batch_norm = nnx.BatchNorm(6, rngs=rngs)
    self.out = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    h = self.layer_norm(self.dense(x))
    return self.out(self.batch_norm(self.conv(nnx.relu(h))))


def test_kernels_selects_exactly_dense_and_conv_kernels_of_nnx_state():
  params = nnx.state(Tagger(rngs()), nnx.Param)
  # An NNX Variable adds its ``value`` attribute to each path.
  assert paths(params) == {
      "dense/kernel/value", "dense/bias/value", "layer_norm/scale/value",
      "layer_norm/bias/value", "conv/kernel/value", "conv/bias/value",
      "batch_norm/scale/value", "batch_norm/bias/value", "out/kernel/value",
      "out/bias/value"}
  selected = jr.select.mask(jr.select.kernels(), params)
  assert paths(selected, keep=bool) == {
      "dense/kernel/value", "conv/kernel/value", "out/kernel/value"}


def test_kernels_skips_nnx_embeddings():
  params = nnx.state(nnx.Embed(10, 4, rngs=rngs()), nnx.Param)
  assert paths(jr.select.mask(jr.select.kernels(), params), keep=bool) == set()


def test_penalties_on_nnx_state_and_their_gradient():
  model = Tagger(rngs())
  reg = jr.L2(0.1, where=jr.select.kernels())

  @nnx.jit
  def run(model):
    params = nnx.state(model, nnx.Param)
    by_model = nnx.grad(lambda model: reg(nnx.state(model, nnx.Param)))(model)
    return reg(params), jax.grad(reg)(params), by_model, jr.L1(0.5)(params)

  value, grads, grads_by_model, l1 = run(model)
  p = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  kernels = {name: p[name]["kernel"] for name in ("dense", "conv", "out")}
  np.testing.assert_allclose(value, 0.1 * sum((k ** 2).sum() for k in kernels.values()),
                             rtol=1e-5)
  for g in (nnx.to_pure_dict(grads), nnx.to_pure_dict(grads_by_model)):
    for name, kernel in kernels.items():
      np.testing.assert_allclose(g[name]["kernel"], 0.2 * kernel, rtol=1e-6)
    for name, leaf in (("dense", "bias"), ("layer_norm", "scale"), ("batch_norm", "scale")):
      chex.assert_trees_all_equal(g[name][leaf], np.zeros_like(p[name][leaf]))
  everything = np.concatenate([np.ravel(w) for w in jax.tree.leaves(p)])
  np.testing.assert_allclose(l1, 0.5 * np.abs(everything).sum(), rtol=1e-5)


def test_penalties_on_a_model_and_its_full_state_equal_those_on_its_params():
  model = nnx.jit(lambda: Tagger(rngs()))()   # built under jit: compiled once, not op by op
  nnx.jit(lambda model, x: model(x))(model, normal(0, (2, 5, 4)))   # real running statistics
  regs = [jr.L2(0.1), jr.L1(0.5), jr.L2(0.1, where=jr.select.kernels())]

  @nnx.jit
  def values(model):
    params, state = nnx.state(model, nnx.Param), nnx.state(model)
    return ([reg(model) for reg in regs], [reg(state) for reg in regs],
            [reg(params) for reg in regs], regs[0].prox(state, 0.5))

  on_model, on_state, on_params, proxed = values(model)
  chex.assert_trees_all_close(on_model, on_params, rtol=1e-6)
  chex.assert_trees_all_close(on_state, on_params, rtol=1e-6)
  p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  every_param = np.concatenate([np.ravel(w) for w in jax.tree.leaves(p)])
  np.testing.assert_allclose(on_params[0], 0.1 * (every_param ** 2).sum(), rtol=1e-5)
  stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  assert sum((np.asarray(w) ** 2).sum() for w in jax.tree.leaves(stats)) > 1
  # prox of the full state: the same structure, the running statistics untouched.
  chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.filter_state(proxed, nnx.BatchStat)), stats)
  chex.assert_trees_all_close(nnx.to_pure_dict(nnx.filter_state(proxed, nnx.Param)),
                              jax.tree.map(lambda w: w / 1.1, p), rtol=1e-6)
  # Paths are the variables' own, without their ``value``.
  assert regs[2].selected(model) == regs[2].selected(nnx.state(model)) == {
      "dense/kernel": (4, 8), "conv/kernel": (3, 8, 6), "out/kernel": (6, 3)}
  assert jr.L1(0.1, where=jr.select.by_path("kernel$")).selected(model) == (
      regs[2].selected(model))


class ScannedBlock(nnx.Module):
  def __init__(self, rngs, kernel_metadata=None, bias_metadata=None):
    self.norm = nnx.LayerNorm(6, rngs=rngs)
    self.linear = nnx.Linear(6, 6, bias_init=nnx.initializers.normal(1.0), rngs=rngs,
                             kernel_metadata=kernel_metadata or {},
                             bias_metadata=bias_metadata or {})

  def __call__(self, x):
    return x + nnx.relu(self.linear(self.norm(x)))


class Stack(nnx.Module):
  """Four residual blocks created by ``nnx.vmap`` and run by ``nnx.scan``."""

  def __init__(self, rngs, kernel_metadata=None, bias_metadata=None):
    self.inp = nnx.Linear(5, 6, rngs=rngs)

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
      return ScannedBlock(rngs, kernel_metadata, bias_metadata)

    self.blocks = create(rngs)
    self.out = nnx.Linear(6, 2, rngs=rngs, kernel_metadata=kernel_metadata or {})

  def __call__(self, x):
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def forward(x, block):
      return block(x)

    return self.out(forward(self.inp(x), self.blocks))


X6 = jnp.ones((3, 5))


def test_kernels_of_a_four_layer_nnx_scan_model_are_exactly_the_linear_kernels():
  model = nnx.eval_shape(lambda: Stack(rngs()))
  state = nnx.state(model, nnx.Param)
  assert state["blocks"]["norm"]["scale"].shape == (4, 6)
  assert jr.L2(0.1, where=jr.select.kernels()).selected(state) == {
      "inp/kernel": (5, 6), "blocks/linear/kernel": (4, 6, 6), "out/kernel": (6, 2)}


A, B = 0.03, 0.2
L1_KERNELS, L2_BIASES = jr.L1(A), jr.L2(B)   # one object each, declared on several layers


def test_per_layer_form_is_the_where_form_under_jit_and_scan():
  model = nnx.jit(lambda: Stack(rngs(), kernel_metadata={"regularizer": L1_KERNELS},
                                bias_metadata={"regularizer": L2_BIASES}))()
  where_form = (jr.L1(A, where=jr.select.by_path("blocks/linear/kernel|out/kernel"))
                + jr.L2(B, where=jr.select.by_path("blocks/linear/bias")))
  reg = jn.regularizer(model)
  assert reg.selected(model) == where_form.selected(model) == {
      "blocks/linear/kernel": (4, 6, 6), "blocks/linear/bias": (4, 6), "out/kernel": (6, 2)}
  p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  hand = (A * (np.abs(p["blocks"]["linear"]["kernel"]).sum() + np.abs(p["out"]["kernel"]).sum())
          + B * (np.asarray(p["blocks"]["linear"]["bias"]) ** 2).sum())

  @nnx.jit
  def both(model):
    loss = lambda model, penalty: jnp.sum(model(X6) ** 2) + penalty(model)
    params = nnx.state(model, nnx.Param)
    return [(penalty(model), nnx.grad(loss)(model, penalty)) for penalty in (
        jn.param_loss, jn.regularizer(model), where_form)], [
            penalty.prox(params, 0.7) for penalty in (jn.regularizer(model), where_form)]

  values, (prox_reg, prox_where) = both(model)
  (loss, grad), (loss_reg, grad_reg), (loss_where, grad_where) = values
  np.testing.assert_allclose(loss, hand, rtol=1e-5)
  chex.assert_trees_all_close((loss, grad), (loss_where, grad_where), rtol=1e-6)
  chex.assert_trees_all_close((loss_reg, grad_reg), (loss_where, grad_where), rtol=1e-6)
  chex.assert_trees_all_equal(prox_reg, prox_where)
  assert (np.asarray(prox_reg["blocks"]["linear"]["kernel"][...]) == 0).any()
  # The same regularizer objects under jaxreg.transforms (as nnx.Optimizer calls them).
  params, steps = nnx.state(model, nnx.Param), []
  for penalty in (reg, where_form):
    tx = transforms.prox_sgd(0.1, penalty)
    updates, _ = jax.jit(tx.update)(grad_where, tx.init(params), params)
    steps.append(nnx.to_pure_dict(optax.apply_updates(params, updates)))
  chex.assert_trees_all_equal(*steps)


def test_per_layer_form_through_with_metadata_and_set_metadata():
  layer = nnx.Linear(3, 2, kernel_init=nnx.with_metadata(nnx.initializers.ones,
                                                         regularizer=jr.L2(0.5)),
                     rngs=rngs())
  assert jn.param_loss(layer) == 3.0
  layer.bias.set_metadata(regularizer=jr.L1(1.0))
  layer.bias[...] = jnp.array([1.0, -2.0])
  assert jn.param_loss(layer) == 6.0
  assert jn.regularizer(layer).selected(layer) == {"kernel": (3, 2), "bias": (2,)}


def test_per_layer_declarations_fail_loudly():
  with pytest.raises(ValueError, match="no parameter carries a regularizer: declare one with "
                     'kernel_metadata={"regularizer": ...}'):
    jn.param_loss(nnx.Linear(2, 2, rngs=rngs()))
  layer = nnx.Linear(2, 2, kernel_metadata={"regularizer": "l2"}, rngs=rngs())
  with pytest.raises(TypeError, match="a declared regularizer must be a jaxreg regularizer, "
                     "got 'l2'"):
    jn.param_loss(layer)


# Monte-Carlo dropout ----------------------------------------------------------------


class Linear(nnx.Module):
  """Linear -> dropout -> Linear with no nonlinearity: the moments have a closed form."""

  def __init__(self, rngs):
    self.hidden = nnx.Linear(2, 8, rngs=rngs)
    self.dropout = jn.Dropout(0.5)
    self.out = nnx.Linear(8, 1, rngs=rngs)

  def __call__(self, x, *, rngs=None):
    return self.out(self.dropout(self.hidden(x), rngs=rngs))


def test_mc_predict_matches_the_closed_form_moments():
  x = normal(8, (3, 2))
  model = Linear(rngs())
  n = 2000
  mean, variance = jax.jit(lambda key: jr.mc_predict(
      lambda k, x: model(x, rngs=k), key, x, num_samples=n))(key(9))

  p = jax.tree.map(lambda a: np.asarray(a, np.float64),
                   nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  h = np.asarray(x, np.float64) @ p["hidden"]["kernel"] + p["hidden"]["bias"]
  assert_mc_moments(mean[:, 0], variance[:, 0], h, p["out"]["kernel"][:, 0],
                    p["out"]["bias"][0], q=0.5, n=n)


# nnx.scan, nnx.remat, nnx.vmap -----------------------------------------------------


def stacked_blocks(count):
  """``count`` Blocks with independent streams, stacked along a leading axis."""
  @nnx.split_rngs(splits=count)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def create(rngs):
    return Block(rngs)
  return create(rngs())


def test_scan_over_layers_draws_fresh_randomness_per_layer():
  layers = stacked_blocks(3)
  x = jnp.ones(SHAPE)

  @nnx.jit
  def run(x, layers):
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def forward(x, layer):
      return x, layer(x)
    return forward(x, layers)[1]

  ys = run(x, layers)
  chex.assert_shape(layers.scale[...], (3,))
  for name, y in ys.items():
    chex.assert_shape(y, (3, *SHAPE))
    assert_all_differ([*y, x], name)
  assert_all_differ([run(x, layers)["Dropout"][0], ys["Dropout"][0]], "second call")


def test_vmap_ensemble_draws_fresh_randomness_per_member():
  ensemble = stacked_blocks(4)
  x = jnp.ones(SHAPE)
  ys = nnx.jit(nnx.vmap(lambda member, x: member(x), in_axes=(0, None)))(ensemble, x)
  chex.assert_shape(ensemble.scale[...], (4,))
  for name, y in ys.items():
    chex.assert_shape(y, (4, *SHAPE))
    assert_all_differ([*y, x], name)


def test_remat_keeps_values_and_gradients_and_draws_per_layer():
  x = normal(3, SHAPE)

  @jax.jit
  def run(x):
    out = {}
    for remat in (True, False):
      def total(x):
        first, second = Block(rngs(1)), Block(rngs(2))
        call = nnx.remat(lambda block, x: block(x)) if remat else (lambda block, x: block(x))
        outputs = call(first, x), call(second, x)
        return sum(jnp.sum(jnp.sin(y)) for y in jax.tree.leaves(outputs)), outputs
      (_, outputs), grad = jax.value_and_grad(total, has_aux=True)(x)
      out[remat] = outputs, grad
    return out

  out = run(x)
  # Recomputation may fuse differently: equal to rounding.
  chex.assert_trees_all_close(out[True], out[False], rtol=1e-5, atol=1e-6)
  first, second = out[True][0]
  for name in MODULES:
    assert_all_differ([first[name], second[name], x], name)


def test_peer_options_reach_the_functions():
  x, k = normal(20, (8, 4, 6, 6)), key(21)

  @jax.jit
  def outputs(x, k):
    return [(layer(x, rngs=k), expected) for layer, expected in peer_option_cases(jn, x, k)]

  for ours, expected in outputs(x, k):
    chex.assert_trees_all_equal(ours, expected)


def test_constraints_declared_per_layer_are_projected_by_proximal():
  # Keras's kernel_constraint=MaxNorm(1.0), as nnx.Param metadata.
  layer = nnx.Linear(4, 3, kernel_init=nnx.initializers.normal(3.0),
                     kernel_metadata={"regularizer": jr.MaxNorm(1.0)}, rngs=nnx.Rngs(30))
  assert float(jn.param_loss(layer)) == 0.0
  params = nnx.state(layer, nnx.Param)
  before = layer.kernel[...]
  tx = optax.chain(optax.sgd(0.1), jr.transforms.proximal(0.1, jn.regularizer(layer)))
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  nnx.update(layer, optax.apply_updates(params, updates))
  chex.assert_trees_all_close(layer.kernel[...], jr.prox.max_norm(before - 0.1, 1.0),
                              rtol=1e-6)
  assert float(jnp.linalg.norm(before, axis=0).min()) > 1.0
