"""The linen modules: against flax.linen.Dropout, in training loops, under nn.scan,
nn.remat and nn.vmap, with activity penalties and penalties on params.

Expected values come from the definitions (masks read off the outputs, penalties
written out in numpy or jnp) or from Flax's own Dropout, never from jaxreg. Work is
jitted in few, large functions: on CPU, compiling dominates these tests.
"""

import functools
from typing import Callable

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg as jr
from jaxreg import linen as jl
from jaxreg import transforms

from flax_cases import KEY
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


# Every random module, as (class, args); all take ``deterministic``.
MODULES = {name: (getattr(jl, name), args) for name, args in MODULE_ARGS.items()}


# Against flax.linen.Dropout ------------------------------------------------------


def test_dropout_has_flax_distribution_and_gradient():
  n = 100_000
  rngs = {"dropout": KEY}

  @jax.jit
  def draws(x):
    out = {}
    for rate in RATES:
      ours = lambda x, rate=rate: jl.Dropout(rate, deterministic=False).apply({}, x, rngs=rngs)
      theirs = nn.Dropout(rate, deterministic=False).apply({}, x, rngs=rngs)
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


def flax_and_exact(rate, dims):
  """``x -> output`` for flax.linen.Dropout and for ours with ``exact=True``."""
  def apply(cls, x):
    return cls(rate, broadcast_dims=dims, deterministic=False).apply(
        {}, x, rngs={"dropout": key(7)})
  return (functools.partial(apply, functools.partial(jl.Dropout, exact=True)),
          functools.partial(apply, nn.Dropout))


def test_exact_is_bit_identical_to_flax():
  x = normal(1, (8, 5, 7))
  cases = [(0.1, ()), (0.3, (0,)), (0.5, (1, 2)), (0.9, (-1,))]

  @jax.jit
  def outputs_and_grads(x):
    return [[(fn(x), jax.grad(lambda x: jnp.sum(fn(x) ** 2))(x))
             for fn in flax_and_exact(rate, dims)] for rate, dims in cases]

  for (rate, dims), (ours, theirs) in zip(cases, outputs_and_grads(x)):
    chex.assert_trees_all_equal(ours, theirs, custom_message=f"rate={rate} dims={dims}")
    assert np.any(np.asarray(ours[0]) == 0) and np.any(np.asarray(ours[0]) != 0)


class TwoDropouts(nn.Module):
  """Two dropout layers in a model: both must get the keys Flax's would."""
  make: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x, train: bool):
    x = self.make(0.3, deterministic=not train)(nn.Dense(6)(x))
    x = nn.Dense(6)(x)
    return self.make(0.6, broadcast_dims=(0,))(x, deterministic=not train)


def test_exact_gets_flax_keys_inside_a_model():
  # Threefry keys, the default: what users of flax.linen.Dropout have.
  x = normal(2, (4, 3))
  ours = TwoDropouts(functools.partial(jl.Dropout, exact=True))
  theirs = TwoDropouts(nn.Dropout)

  @jax.jit
  def outputs(dropout_key):
    variables = theirs.init(jax.random.key(0), x, train=False)
    rngs = {"dropout": dropout_key}
    return (ours.apply(variables, x, train=True, rngs=rngs),
            theirs.apply(variables, x, train=True, rngs=rngs),
            ours.apply(variables, x, train=False), theirs.apply(variables, x, train=False))

  ours_train, theirs_train, ours_eval, theirs_eval = outputs(jax.random.key(3))
  chex.assert_trees_all_equal(ours_train, theirs_train)
  assert np.any(np.asarray(ours_train) == 0)
  chex.assert_trees_all_equal(ours_eval, theirs_eval)


def test_rng_argument_is_the_key_as_in_flax():
  x = jnp.ones(1000)
  given, other = jax.random.key(5), jax.random.key(6)

  @jax.jit
  def outputs(x):
    exact = jl.Dropout(0.5, deterministic=False, exact=True)
    fast = jl.Dropout(0.5, deterministic=False)
    return (exact.apply({}, x, rng=given, rngs={"dropout": other}),
            nn.Dropout(0.5, deterministic=False).apply({}, x, rng=given),
            fast.apply({}, x, rng=given), fast.apply({}, x, rng=other))

  ours, theirs, fast, fast_other_key = outputs(x)
  chex.assert_trees_all_equal(ours, theirs)
  assert not np.array_equal(fast, fast_other_key)


def test_deterministic_and_trivial_rates_need_no_rng():
  x = jnp.arange(1.0, 5.0)
  chex.assert_trees_all_equal(jl.Dropout(0.5, deterministic=True).apply({}, x), x)
  chex.assert_trees_all_equal(jl.Dropout(0.5).apply({}, x, deterministic=True), x)
  chex.assert_trees_all_equal(jl.Dropout(0.0, deterministic=False).apply({}, x), x)
  chex.assert_trees_all_equal(jl.Dropout(1.0, deterministic=False).apply({}, x), jnp.zeros(4))
  chex.assert_trees_all_equal(jl.GaussianNoise(0.0, deterministic=False).apply({}, x), x)
  chex.assert_trees_all_close(
      jl.Dropout(0.25, mode="classic").apply({}, x, deterministic=True), 0.75 * x)
  ones = jnp.ones(SHAPE)
  for cls, args in MODULES.values():
    chex.assert_trees_all_equal(cls(*args, deterministic=True).apply({}, ones), ones)


def test_rng_collection_names_the_stream():
  layer = jl.DropPath(0.5, deterministic=False, rng_collection="depth")
  y = layer.apply({}, jnp.ones((64, 3)), rngs={"depth": KEY})
  assert 0 < np.sum(np.asarray(y[:, 0]) == 0) < 64
  with pytest.raises(flax.errors.InvalidRngError, match='"depth"'):
    layer.apply({}, jnp.ones((64, 3)), rngs={"dropout": KEY})


# Bad input ----------------------------------------------------------------------


def test_missing_rng_fails_as_in_flax():
  with pytest.raises(flax.errors.InvalidRngError, match='needs PRNG for "dropout"'):
    nn.Dropout(0.5, deterministic=False).apply({}, jnp.ones(3))
  for cls, args in MODULES.values():
    with pytest.raises(flax.errors.InvalidRngError, match='needs PRNG for "dropout"'):
      cls(*args, deterministic=False).apply({}, jnp.ones(SHAPE))


def test_deterministic_given_never_or_twice_fails_as_in_flax():
  x = jnp.ones(3)
  for cls in (nn.Dropout, jl.Dropout):
    with pytest.raises(ValueError, match='"deterministic" must be passed'):
      cls(0.5).apply({}, x)
    with pytest.raises(ValueError, match='"deterministic" was passed to the constructor and'):
      cls(0.5, deterministic=True).apply({}, x, deterministic=True)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_rate_raises_the_core_error_before_asking_for_a_key(rate):
  for cls in (jl.Dropout, jl.AlphaDropout, jl.GaussianDropout, jl.DropPath):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
      cls(rate, deterministic=False).apply({}, jnp.ones((2, 3)))
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
    jl.DropBlock(rate, 2, deterministic=False).apply({}, jnp.ones((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="stddev must be finite and >= 0"):
    jl.GaussianNoise(-abs(rate), deterministic=False).apply({}, jnp.ones(3))


def test_other_bad_arguments_raise_the_core_errors():
  rngs = {"dropout": KEY}
  with pytest.raises(TypeError, match="floating-point"):
    jl.Dropout(0.5, deterministic=False).apply({}, jnp.ones(3, jnp.int32), rngs=rngs)
  with pytest.raises(ValueError, match="mode must be one of"):
    jl.Dropout(0.5, deterministic=False, mode="scaled").apply({}, jnp.ones(3), rngs=rngs)
  with pytest.raises(ValueError, match="block_size"):
    jl.DropBlock(0.5, 5, deterministic=False).apply({}, jnp.ones((1, 4, 4, 1)), rngs=rngs)
  for mutable in (jl.LOSSES, False):
    with pytest.raises(ValueError, match="l1 must be finite and >= 0"):
      jl.ActivityRegularization(l1=-1.0).apply({}, jnp.ones(3), mutable=mutable)


# Training -----------------------------------------------------------------------


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(nn.Dense(32)(x))
    x = jl.Dropout(0.1, deterministic=not train)(x)
    return nn.Dense(1)(x)


class CNN(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.relu(nn.Conv(8, (3, 3))(x))
    h = jl.DropBlock(0.1, 3, deterministic=not train)(h)
    branch = nn.Conv(8, (3, 3))(nn.relu(h))
    h = h + jl.DropPath(0.2, deterministic=not train)(branch)
    return nn.Dense(2)(jnp.mean(h, axis=(1, 2)))


def mse(model, params, x, y, **kwargs):
  return jnp.mean((model.apply({"params": params}, x, **kwargs) - y) ** 2)


def cross_entropy(model, params, x, y, **kwargs):
  logits = model.apply({"params": params}, x, **kwargs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.mark.parametrize("model, data, loss", [
    (MLP(), regression_data, mse), (CNN(), stripes_data, cross_entropy)],
    ids=["mlp", "cnn"])
def test_trains_under_jit_with_dropout_on_only_in_training(model, data, loss):
  x, y = data()
  reg = jr.L2(1e-4, where=jr.select.kernels())
  tx = optax.adam(1e-2)

  @jax.jit
  def train(params, train_key):
    def step(carry, dropout_key):
      params, opt_state = carry
      def objective(params):
        return (loss(model, params, x, y, train=True, rngs={"dropout": dropout_key})
                + reg(params))
      updates, opt_state = tx.update(jax.grad(objective)(params), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(train_key, 100))
    return params

  @jax.jit
  def evaluate(params):
    variables = {"params": params}
    noisy = jax.vmap(lambda k: model.apply(variables, x, train=True, rngs={"dropout": k}))(
        jax.random.split(key(1)))
    return (loss(model, params, x, y, train=False), model.apply(variables, x, train=False),
            model.apply(variables, x, train=False), noisy)

  params = jax.jit(functools.partial(model.init, train=False))(KEY, x)["params"]
  before = evaluate(params)[0]
  after, first, second, noisy = evaluate(train(params, KEY))
  assert after < 0.5 * before
  chex.assert_trees_all_equal(first, second)
  assert not np.allclose(noisy[0], noisy[1])
  assert not np.allclose(noisy[0], first)


# Activity penalties ---------------------------------------------------------------


class Regularized(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = jl.ActivityRegularization(l1=0.1, l2=0.02, reduction="sum")(nn.Dense(5)(x))
    return jl.ActivityRegularization(l2=0.5, reduction="sum")(nn.Dense(2)(h))


def hand_activity_penalty(params, x):
  """``0.1Σ|h| + 0.02Σh² + 0.5Σo²``, written out."""
  h = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
  o = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  return 0.1 * jnp.sum(jnp.abs(h)) + 0.02 * jnp.sum(h ** 2) + 0.5 * jnp.sum(o ** 2)


def test_activity_regularization_records_the_penalty_and_its_gradient():
  x = normal(4, (3, 4))
  model = Regularized()

  @jax.jit
  def run(init_key):
    variables = model.init(init_key, x)
    params = variables["params"]
    y, mutated = model.apply({"params": params}, x, mutable=jl.LOSSES)

    def penalty(params):
      return jl.activity_loss(model.apply({"params": params}, x, mutable=jl.LOSSES)[1])

    return (variables, y, mutated, model.apply({"params": params}, x),
            jax.grad(penalty)(params), jax.grad(hand_activity_penalty)(params, x))

  variables, y, mutated, y_not_recorded, grads, expected_grads = run(KEY)
  assert set(variables) == {"params"}  # init records nothing
  p = jax.tree.map(np.asarray, variables["params"])
  h = np.asarray(x) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  o = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  np.testing.assert_allclose(y, o, rtol=1e-5)
  chex.assert_trees_all_equal(y_not_recorded, y)

  losses = mutated[jl.LOSSES]
  assert set(losses) == {"ActivityRegularization_0", "ActivityRegularization_1"}
  (first,) = losses["ActivityRegularization_0"]["activity"]
  (second,) = losses["ActivityRegularization_1"]["activity"]
  np.testing.assert_allclose(first, 0.1 * np.abs(h).sum() + 0.02 * (h ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(second, 0.5 * (o ** 2).sum(), rtol=1e-5)
  total = float(first) + float(second)
  np.testing.assert_allclose(jl.activity_loss(mutated), total, rtol=1e-6)
  np.testing.assert_allclose(jl.activity_loss(losses), total, rtol=1e-6)
  assert float(jl.activity_loss({})) == 0.0

  chex.assert_trees_all_close(grads, expected_grads, rtol=1e-5, atol=1e-6)
  assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))


# Penalties on params ----------------------------------------------------------------


class Tagger(nn.Module):
  """Every kind of leaf the kernels rule must tell apart."""

  @nn.compact
  def __call__(self, tokens):
    h = nn.Embed(10, 4)(tokens)
    h = nn.LayerNorm()(nn.Dense(8)(h))
    h = nn.BatchNorm(use_running_average=True)(nn.Dense(6)(nn.relu(h)))
    return nn.Dense(3)(h)


TOKENS = jnp.zeros((2, 5), jnp.int32)


def test_kernels_selects_exactly_dense_and_conv_kernels():
  # Shapes and dtypes are all a selector reads.
  params = jax.eval_shape(Tagger().init, KEY, TOKENS)["params"]
  assert paths(params) == {
      "Embed_0/embedding", "Dense_0/kernel", "Dense_0/bias", "LayerNorm_0/scale",
      "LayerNorm_0/bias", "Dense_1/kernel", "Dense_1/bias", "BatchNorm_0/scale",
      "BatchNorm_0/bias", "Dense_2/kernel", "Dense_2/bias"}
  selected = jr.select.mask(jr.select.kernels(), params)
  assert paths(selected, keep=bool) == {"Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel"}

  cnn = jax.eval_shape(functools.partial(CNN().init, train=False), KEY, jnp.zeros((1, 8, 8, 1)))
  selected = jr.select.mask(jr.select.kernels(), cnn["params"])
  assert paths(selected, keep=bool) == {"Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel"}


def test_penalties_on_linen_params_and_their_gradient():
  params = jax.jit(Tagger().init)(KEY, TOKENS)["params"]
  reg = jr.L2(0.1, where=jr.select.kernels())
  value, grads, l1 = jax.jit(lambda p: (reg(p), jax.grad(reg)(p), jr.L1(0.5)(p)))(params)

  dense = ("Dense_0", "Dense_1", "Dense_2")
  kernels = [np.asarray(params[name]["kernel"]) for name in dense]
  np.testing.assert_allclose(value, 0.1 * sum((k ** 2).sum() for k in kernels), rtol=1e-5)
  for name, kernel in zip(dense, kernels):
    np.testing.assert_allclose(grads[name]["kernel"], 0.2 * kernel, rtol=1e-6)
  for name, leaf in (("Embed_0", "embedding"), ("LayerNorm_0", "scale"),
                     ("BatchNorm_0", "scale"), ("Dense_0", "bias")):
    chex.assert_trees_all_equal(grads[name][leaf], jnp.zeros_like(params[name][leaf]))
  everything = np.concatenate([np.ravel(w) for w in jax.tree.leaves(params)])
  np.testing.assert_allclose(l1, 0.5 * np.abs(everything).sum(), rtol=1e-5)


def test_penalties_on_full_variables_equal_those_on_params():
  # A BatchNorm model after one training step: batch_stats hold real statistics.
  model = Tagger()

  @jax.jit
  def trained_variables():
    variables = model.init(KEY, TOKENS)
    _, mutated = model.apply(variables, jnp.arange(10).reshape(2, 5), mutable=["batch_stats"])
    return {"params": variables["params"], **mutated}

  variables = trained_variables()
  params = variables["params"]
  regs = [jr.L2(0.1), jr.L1(0.5), jr.L2(0.1, where=jr.select.kernels())]
  every_param = np.concatenate([np.ravel(w) for w in jax.tree.leaves(params)])

  @jax.jit
  def values(variables):
    return ([reg(variables) for reg in regs], [reg(variables["params"]) for reg in regs],
            jax.grad(regs[0])(variables), regs[0].prox(variables, 0.5))

  on_variables, on_params, grads, proxed = values(variables)
  chex.assert_trees_all_close(on_variables, on_params, rtol=1e-6)
  np.testing.assert_allclose(on_variables[0], 0.1 * (every_param ** 2).sum(), rtol=1e-5)
  # Counting the running statistics would have given more.
  stats = np.concatenate([np.ravel(w) for w in jax.tree.leaves(variables["batch_stats"])])
  assert (stats ** 2).sum() > 1
  # prox and grad keep the variables' structure, and touch the params only.
  chex.assert_trees_all_equal_structs(proxed, variables)
  chex.assert_trees_all_equal(proxed["batch_stats"], variables["batch_stats"])
  chex.assert_trees_all_close(proxed["params"], jax.tree.map(lambda w: w / 1.1, params),
                              rtol=1e-6)
  chex.assert_trees_all_equal(grads["batch_stats"],
                              jax.tree.map(jnp.zeros_like, variables["batch_stats"]))
  assert regs[2].selected(variables) == regs[2].selected(params) == {
      "Dense_0/kernel": (4, 8), "Dense_1/kernel": (8, 6), "Dense_2/kernel": (6, 3)}


class ScannedBlock(nn.Module):
  """A residual block, stacked four times by ``nn.scan``."""
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.normal(1.0)

  @nn.compact
  def __call__(self, x, _):
    y = nn.Dense(6, kernel_init=self.kernel_init, bias_init=self.bias_init)(nn.LayerNorm()(x))
    return x + nn.relu(y), None


class Stack(nn.Module):
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.normal(1.0)
  out_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(6)(x)
    blocks = nn.scan(ScannedBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                     length=4)
    x, _ = blocks(self.kernel_init, self.bias_init, name="blocks")(x, None)
    return nn.Dense(2, kernel_init=self.out_init)(x)


X6 = jnp.ones((3, 5))


def test_kernels_of_a_four_layer_nn_scan_model_are_exactly_the_dense_kernels():
  params = jax.eval_shape(Stack().init, KEY, X6)["params"]
  # The scanned LayerNorm scales and Dense biases have a layer axis: 2-D, not kernels.
  assert params["blocks"]["LayerNorm_0"]["scale"].shape == (4, 6)
  assert params["blocks"]["Dense_0"]["bias"].shape == (4, 6)
  assert jr.L2(0.1, where=jr.select.kernels()).selected(params) == {
      "Dense_0/kernel": (5, 6), "blocks/Dense_0/kernel": (4, 6, 6), "Dense_1/kernel": (6, 2)}


A, B = 0.03, 0.2
L1_KERNELS, L2_BIASES = jr.L1(A), jr.L2(B)   # one object each, declared on several layers


def per_layer_stack():
  lecun = nn.initializers.lecun_normal()
  return Stack(kernel_init=jl.with_regularizer(lecun, L1_KERNELS),
               bias_init=jl.with_regularizer(nn.initializers.normal(1.0), L2_BIASES),
               out_init=jl.with_regularizer(lecun, L1_KERNELS))


def test_per_layer_form_is_the_where_form_under_jit_and_scan():
  model = per_layer_stack()
  variables = jax.jit(model.init)(KEY, X6)
  params = variables["params"]
  reg = jl.regularizer(variables)
  where_form = (jr.L1(A, where=jr.select.by_path("blocks/Dense_0/kernel|Dense_1/kernel"))
                + jr.L2(B, where=jr.select.by_path("blocks/Dense_0/bias")))
  assert reg.selected(params) == where_form.selected(params) == {
      "blocks/Dense_0/kernel": (4, 6, 6), "blocks/Dense_0/bias": (4, 6), "Dense_1/kernel": (6, 2)}
  unboxed = nn.meta.unbox(params)
  hand = (A * (np.abs(unboxed["blocks"]["Dense_0"]["kernel"]).sum()
               + np.abs(unboxed["Dense_1"]["kernel"]).sum())
          + B * (np.asarray(unboxed["blocks"]["Dense_0"]["bias"]) ** 2).sum())

  @jax.jit
  def both(variables):
    params = variables["params"]
    # The per-layer penalty inside a training loss, through the scanned model.
    data_loss = lambda p: jnp.sum(model.apply({"params": p}, X6) ** 2)
    grads = jax.grad(lambda p: data_loss(p) + jl.param_loss(p))(params)
    return grads, [(penalty(variables), jax.grad(penalty)(params), penalty.prox(params, 0.7))
                   for penalty in (jl.regularizer(variables), where_form)]

  grads, ((loss_reg, grad_reg, prox_reg), (loss_where, grad_where, prox_where)) = (
      both(variables))
  np.testing.assert_allclose(loss_reg, hand, rtol=1e-5)
  chex.assert_trees_all_close((loss_reg, grad_reg), (loss_where, grad_where), rtol=1e-6)
  chex.assert_trees_all_equal(prox_reg, prox_where)
  unboxed_grads = nn.meta.unbox(grads)
  assert np.abs(unboxed_grads["Dense_0"]["kernel"]).sum() > 0   # the data loss reached them
  assert (np.asarray(nn.meta.unbox(prox_reg)["blocks"]["Dense_0"]["kernel"]) == 0).any()
  # The same regularizer objects under jaxreg.transforms: one prox-SGD step.
  steps = []
  for penalty in (reg, where_form):
    tx = transforms.prox_sgd(0.1, penalty)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    steps.append(optax.apply_updates(params, updates))
  chex.assert_trees_all_equal(*steps)


def test_per_layer_form_under_nn_vmap_and_jax_vmap():
  member = functools.partial(nn.Dense, 3, kernel_init=jl.with_regularizer(
      nn.initializers.lecun_normal(), jr.L2(0.5)))
  Ensemble = nn.vmap(member, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=None, out_axes=0, axis_size=5)
  variables = jax.jit(Ensemble().init)(KEY, jnp.ones((2, 4)))
  kernel = nn.meta.unbox(variables)["params"]["kernel"]
  assert kernel.shape == (5, 4, 3)
  np.testing.assert_allclose(jax.jit(jl.param_loss)(variables),
                             0.5 * (np.asarray(kernel) ** 2).sum(), rtol=1e-5)
  # jax.vmap over a batch of models: one penalty per model.
  batch = jax.jit(jax.vmap(member().init, in_axes=(0, None)))(jax.random.split(KEY, 3),
                                                               jnp.ones((2, 4)))
  kernels = np.asarray(nn.meta.unbox(batch)["params"]["kernel"])
  np.testing.assert_allclose(jax.jit(jax.vmap(jl.param_loss))(batch),
                             0.5 * (kernels ** 2).sum(axis=(1, 2)), rtol=1e-5)


def test_per_layer_form_keeps_partitioning_metadata():
  init = jl.with_regularizer(nn.with_partitioning(nn.initializers.ones, ("embed", "mlp")),
                             jr.L1(1.0))
  variables = nn.Dense(3, kernel_init=init).init(KEY, jnp.ones((1, 2)))
  assert jl.param_loss(variables) == 6.0
  assert nn.get_partition_spec(variables)["params"]["kernel"] == jax.P("embed", "mlp")


def test_per_layer_declarations_fail_loudly():
  # The declarations are read from the tree's structure: shapes are enough.
  variables = jax.eval_shape(Stack().init, KEY, X6)
  with pytest.raises(ValueError, match="no parameter carries a regularizer: declare one with "
                     "jaxreg.linen.with_regularizer"):
    jl.param_loss(variables)
  boxed = jax.eval_shape(per_layer_stack().init, KEY, X6)
  with pytest.raises(ValueError, match="no parameter carries a regularizer"):
    jl.param_loss(nn.meta.unbox(boxed))           # unboxing drops the declarations
  with pytest.raises(TypeError, match="regularizer must be a jaxreg regularizer, got 0.01"):
    jl.with_regularizer(nn.initializers.ones, 0.01)
  with_where = jl.with_regularizer(nn.initializers.ones, jr.L1(0.1, where=jr.select.kernels()))
  with pytest.raises(ValueError, match="was declared on a parameter, so it applies to that "
                     "parameter; give it no where="):
    jl.regularizer(jax.eval_shape(nn.Dense(2, kernel_init=with_where).init, KEY,
                                  jnp.ones((1, 2))))


# Monte-Carlo dropout ----------------------------------------------------------------


class Linear(nn.Module):
  """Dense -> dropout -> Dense with no nonlinearity: the moments have a closed form."""

  @nn.compact
  def __call__(self, x):
    hidden = jl.Dropout(0.5, deterministic=False)(nn.Dense(8)(x))
    return nn.Dense(1)(hidden)


def test_mc_predict_matches_the_closed_form_moments():
  x = normal(8, (3, 2))
  model = Linear()
  n = 2000

  @jax.jit
  def run(sample_key):
    params = model.init(KEY, x)["params"]
    predict = lambda k, x: model.apply({"params": params}, x, rngs={"dropout": k})
    return params, jr.mc_predict(predict, sample_key, x, num_samples=n)

  params, (mean, variance) = run(key(9))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  h = np.asarray(x, np.float64) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  assert_mc_moments(mean[:, 0], variance[:, 0], h, p["Dense_1"]["kernel"][:, 0],
                    p["Dense_1"]["bias"][0], q=0.5, n=n)


# nn.scan, nn.remat, nn.vmap ---------------------------------------------------------


class Member(nn.Module):
  """One layer or ensemble member: a parameter (equal in every copy), then each
  random module on the same input, so outputs differ only if the randomness does."""

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, ())
    return {name: cls(*args, deterministic=False)(x * scale)
            for name, (cls, args) in MODULES.items()}


class ScanBody(nn.Module):
  @nn.compact
  def __call__(self, carry, _):
    return carry, Member()(carry)


def test_scan_over_layers_draws_fresh_randomness_per_layer():
  layers = nn.scan(ScanBody, variable_axes={"params": 0},
                   split_rngs={"params": True, "dropout": True}, length=3)()
  x = jnp.ones(SHAPE)

  @jax.jit
  def run(x, dropout_key):
    variables = layers.init({"params": KEY, "dropout": KEY}, x, None)
    return variables, layers.apply(variables, x, None, rngs={"dropout": dropout_key})[1]

  variables, ys = run(x, key(1))
  chex.assert_shape(variables["params"]["Member_0"]["scale"], (3,))
  for name, y in ys.items():
    chex.assert_shape(y, (3, *SHAPE))
    assert_all_differ([*y, x], name)


def test_vmap_ensemble_draws_fresh_randomness_per_member():
  ensemble = nn.vmap(Member, variable_axes={"params": 0},
                     split_rngs={"params": True, "dropout": True},
                     in_axes=None, out_axes=0, axis_size=4)()
  x = jnp.ones(SHAPE)

  @jax.jit
  def run(x, dropout_key):
    variables = ensemble.init({"params": KEY, "dropout": KEY}, x)
    return variables, ensemble.apply(variables, x, rngs={"dropout": dropout_key})

  variables, ys = run(x, key(1))
  chex.assert_shape(variables["params"]["scale"], (4,))
  for name, y in ys.items():
    chex.assert_shape(y, (4, *SHAPE))
    assert_all_differ([*y, x], name)


class TwoOfEach(nn.Module):
  """Every module twice, remat'd or not, under fixed names (so fixed rng paths)."""
  remat: bool

  @nn.compact
  def __call__(self, x):
    out = {}
    for name, (cls, args) in MODULES.items():
      cls = nn.remat(cls) if self.remat else cls
      out[name] = tuple(cls(*args, deterministic=False, name=f"{name}_{i}")(x) for i in (0, 1))
    return out


def test_remat_keeps_values_and_gradients_and_draws_per_layer():
  x = normal(3, SHAPE)
  rngs = {"dropout": key(4)}

  @jax.jit
  def run(x):
    out = {}
    for remat in (True, False):
      def total(x, model=TwoOfEach(remat)):
        outputs = model.apply({}, x, rngs=rngs)
        return sum(jnp.sum(jnp.sin(y)) for y in jax.tree.leaves(outputs)), outputs
      (_, outputs), grad = jax.value_and_grad(total, has_aux=True)(x)
      out[remat] = outputs, grad
    return out

  out = run(x)
  # Recomputation may fuse differently: equal to rounding.
  chex.assert_trees_all_close(out[True], out[False], rtol=1e-5, atol=1e-6)
  for name, pair in out[True][0].items():
    assert_all_differ([*pair, x], name)


def test_activity_losses_stack_under_scan():
  class Body(nn.Module):
    @nn.compact
    def __call__(self, carry, _):
      scale = self.param("scale", nn.initializers.ones, ())
      return jl.ActivityRegularization(l1=0.5, reduction="sum")(carry * scale), None

  layers = nn.scan(Body, variable_axes={"params": 0, jl.LOSSES: 0},
                   split_rngs={"params": True}, length=3)()
  x = -jnp.ones((2, 3))
  variables = layers.init(KEY, x, None)
  _, mutated = layers.apply(variables, x, None, mutable=jl.LOSSES)
  (stacked,) = mutated[jl.LOSSES]["ActivityRegularization_0"]["activity"]
  chex.assert_trees_all_close(stacked, jnp.full(3, 0.5 * 6))
  np.testing.assert_allclose(jl.activity_loss(mutated), 3 * 0.5 * 6)


def test_peer_options_reach_the_functions():
  x, k = normal(20, (8, 4, 6, 6)), key(21)

  @jax.jit
  def outputs(x, k):
    return [(layer.apply({}, x, deterministic=False, rng=k), expected) for layer, expected in peer_option_cases(jl, x, k)]

  for ours, expected in outputs(x, k):
    chex.assert_trees_all_equal(ours, expected)


def test_constraints_declared_per_layer_are_projected_by_proximal():
  # Keras's kernel_constraint=MaxNorm(1.0), written next to the layer.
  dense = nn.Dense(3, kernel_init=jl.with_regularizer(nn.initializers.normal(3.0),
                                                      jr.MaxNorm(1.0)))
  params = dense.init(key(30), jnp.ones((1, 4)))["params"]
  reg = jl.regularizer({"params": params})
  assert float(jl.param_loss({"params": params})) == 0.0
  tx = optax.chain(optax.sgd(0.1), jr.transforms.proximal(0.1, reg))
  grads = jax.tree.map(jnp.ones_like, params)  # boxed, as jax.grad gives them
  updates, _ = tx.update(grads, tx.init(params), params)
  kernel = nn.meta.unbox(optax.apply_updates(params, updates))["kernel"]
  expected = jr.prox.max_norm(nn.meta.unbox(params)["kernel"] - 0.1, 1.0)
  chex.assert_trees_all_close(kernel, expected, rtol=1e-6)
  assert float(jnp.linalg.norm(nn.meta.unbox(params)["kernel"], axis=0).min()) > 1.0
