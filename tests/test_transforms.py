r"""Optax transforms: each against its definition, against Optax's own pieces, and
under jit, vmap, masking and low precision.

The definitions checked here are written out in numpy (soft-thresholding,
``λ·sign(w)``, FISTA's recursion, Adam's moments), never taken from jaxreg.
Convergence against scikit-learn is in ``tests/integration/test_sparse_regression.py``.
"""

import warnings

import chex
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg as jr
from jaxreg import transforms

LR = 0.1

# Every transform, as a function of its regularizer.
FACTORIES = {
    "add_gradient": transforms.add_gradient,
    "proximal": lambda reg: transforms.proximal(LR, reg),
    "prox_sgd": lambda reg: transforms.prox_sgd(LR, reg),
    "prox_sgd_nesterov": lambda reg: transforms.prox_sgd(LR, reg, momentum=0.9, nesterov=True),
    "fista": lambda reg: transforms.prox_sgd(LR, reg, accelerated=True),
    "prox_adam": lambda reg: transforms.prox_adam(LR, reg),
}
NAMES = list(FACTORIES)


def f32(lo, hi):
  return st.floats(lo, hi, width=32, allow_subnormal=False)


def make_params(dtype=jnp.float32):
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"w": jax.random.normal(k1, (4, 3), dtype), "b": jax.random.normal(k2, (3,), dtype)}


def quadratic_grads(params):
  """Gradient of ``½||p - 0.3||²``: pulls every coordinate towards 0.3."""
  return jax.tree.map(lambda p: p - jnp.asarray(0.3, p.dtype), params)


def as_optimizer(name, tx):
  """The transform where it is used: coupled before SGD, proximal after it."""
  if name == "add_gradient":
    return optax.chain(tx, optax.sgd(LR))
  if name == "proximal":
    return optax.chain(optax.sgd(LR), tx)
  return tx


def run(tx, params, steps=3, grads_fn=quadratic_grads):
  """``steps`` updates; returns the list of updates, the final params and state."""
  state = tx.init(params)
  history = []
  for _ in range(steps):
    updates, state = tx.update(grads_fn(params), state, params)
    params = optax.apply_updates(params, updates)
    history.append(updates)
  return history, params, state


def lasso_problem(n=64, d=12, k=3, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  X = rng.standard_normal((n, d))
  w = np.zeros(d)
  w[:k] = [2.0, -1.5, 1.0][:k]
  y = X @ w + 0.1 * rng.standard_normal(n)
  return jnp.asarray(X, dtype), jnp.asarray(y, dtype)


def least_squares(X, y):
  n = X.shape[0]
  return lambda w: 0.5 / n * jnp.sum((X @ w - y) ** 2)


def train(tx, loss, w0, steps):
  """``steps`` full-batch updates in one jitted ``fori_loop``."""
  def body(_, carry):
    w, state = carry
    updates, state = tx.update(jax.grad(loss)(w), state, w)
    return optax.apply_updates(w, updates), state
  return jax.lax.fori_loop(0, steps, body, (w0, tx.init(w0)))


# add_gradient -------------------------------------------------------------------


def test_add_gradient_l1_adds_lambda_sign_and_zero_at_zero():
  params = {"w": jnp.array([2.0, 0.0, -0.5, 0.0]), "b": jnp.array([-1.0])}
  updates = {"w": jnp.array([0.1, 0.2, 0.3, -0.4]), "b": jnp.array([0.5])}
  tx = transforms.add_gradient(jr.L1(0.25))
  out, state = tx.update(updates, tx.init(params), params)
  u = np.array([0.1, 0.2, 0.3, -0.4], np.float32)
  sign = np.array([1, 0, -1, 0], np.float32)
  np.testing.assert_array_equal(out["w"], u + np.float32(0.25) * sign)
  np.testing.assert_array_equal(out["b"], [0.25])
  assert state == optax.EmptyState()


# No subnormals: XLA on CPU flushes them to 0, where sign() is 0.
@given(w=hnp.arrays(np.float32, 6, elements=f32(-4, 4)),
       u=hnp.arrays(np.float32, 6, elements=f32(-4, 4)),
       l1=st.floats(0, 2), l2=st.floats(0, 2))
def test_add_gradient_is_the_closed_form_elastic_net_gradient(w, u, l1, l2):
  tx = transforms.add_gradient(jr.ElasticNet(l1, l2))
  out, _ = tx.update(jnp.asarray(u), tx.init(w), jnp.asarray(w))
  expected = u + np.float32(l1) * np.sign(w) + 2 * np.float32(l2) * w
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_add_gradient_leaves_integer_leaves_alone():
  params = {"w": jnp.array([1.0, -1.0]), "step": jnp.array(7, jnp.int32)}
  updates = {"w": jnp.zeros(2), "step": jnp.array(0, jnp.int32)}
  tx = transforms.add_gradient(jr.L2(1.0))
  out, _ = tx.update(updates, tx.init(params), params)
  np.testing.assert_array_equal(out["w"], [2.0, -2.0])
  assert out["step"].dtype == jnp.int32 and int(out["step"]) == 0


def test_add_gradient_accepts_a_plain_penalty_function():
  tx = transforms.add_gradient(lambda p: jnp.sum(p ** 3))
  params = jnp.array([1.0, 2.0])
  out, _ = tx.update(jnp.zeros(2), tx.init(params), params)
  np.testing.assert_allclose(out, [3.0, 12.0])


# proximal -----------------------------------------------------------------------


@given(w=hnp.arrays(np.float32, 6, elements=f32(-4, 4)),
       u=hnp.arrays(np.float32, 6, elements=f32(-4, 4)),
       lam=st.floats(0, 3), lr=st.floats(0, 1))
def test_proximal_lands_on_soft_threshold_of_the_moved_point(w, u, lam, lr):
  tx = transforms.proximal(lr, jr.L1(lam))
  out, _ = tx.update(jnp.asarray(u), tx.init(w), jnp.asarray(w))
  new = np.asarray(optax.apply_updates(jnp.asarray(w), out))
  v = w + u
  threshold = np.float32(lr) * np.float32(lam)
  expected = np.sign(v) * np.maximum(np.abs(v) - threshold, 0)
  np.testing.assert_allclose(new, expected, rtol=1e-6, atol=2e-6)
  # Exact zeros, not small numbers: that is the point of the prox.
  assert np.all(new[np.abs(v) < threshold * (1 - 1e-5)] == 0)


@pytest.mark.parametrize("make", [
    lambda: optax.chain(optax.sgd(LR), transforms.proximal(LR, jr.L1(10.0))),
    lambda: transforms.prox_sgd(LR, jr.L1(10.0), accelerated=True),
], ids=["proximal", "fista"])
def test_zeros_stay_exact_with_bfloat16_updates_on_float32_params(make):
  tx = make()
  params = jnp.array([0.3, -0.7], jnp.float32)  # neither is a bfloat16 number
  grads = jnp.array([0.1, 0.2], jnp.bfloat16)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(optax.apply_updates(params, updates), [0.0, 0.0])


def test_proximal_reads_its_schedule_at_counts_0_1_2():
  schedule = lambda count: 0.1 * (count + 1)
  tx = transforms.proximal(schedule, jr.L1(1.0))
  _, params, state = run(tx, jnp.array([10.0]), steps=3, grads_fn=jnp.zeros_like)
  np.testing.assert_allclose(params, [10.0 - 0.1 - 0.2 - 0.3], rtol=1e-6)
  assert int(state.count) == 3


@pytest.mark.parametrize("momentum,nesterov", [(None, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("schedule", [False, True], ids=["constant", "schedule"])
def test_sgd_then_proximal_equals_prox_sgd_step_for_step(momentum, nesterov, schedule):
  lr = optax.exponential_decay(0.2, transition_steps=5, decay_rate=0.5) if schedule else 0.2
  X, y = lasso_problem()
  loss = least_squares(X, y)
  reg = jr.L1(0.1)
  chained = optax.chain(optax.sgd(lr, momentum=momentum, nesterov=nesterov),
                        transforms.proximal(lr, reg))
  fused = transforms.prox_sgd(lr, reg, momentum=momentum, nesterov=nesterov)
  w_chain = w_fused = jnp.zeros(X.shape[1])
  s_chain, s_fused = chained.init(w_chain), fused.init(w_fused)
  zeros_seen = 0
  for _ in range(30):
    u_chain, s_chain = chained.update(jax.grad(loss)(w_chain), s_chain, w_chain)
    u_fused, s_fused = fused.update(jax.grad(loss)(w_fused), s_fused, w_fused)
    chex.assert_trees_all_equal(u_chain, u_fused)
    w_chain = optax.apply_updates(w_chain, u_chain)
    w_fused = optax.apply_updates(w_fused, u_fused)
    zeros_seen += int(np.sum(w_fused == 0))
  assert zeros_seen > 0  # the prox did act: the comparison covers thresholded steps


@pytest.mark.parametrize("learning_rate", [LR, jnp.float32(LR), optax.linear_schedule(LR, 0.0, 5)],
                         ids=["float", "array", "schedule"])
def test_proximal_in_the_former_order_warns_and_makes_the_same_updates(learning_rate):
  reg = jr.L1(0.3)
  with pytest.warns(DeprecationWarning, match=r"write proximal\(learning_rate, reg\)"):
    former = transforms.proximal(reg, learning_rate)
  for u_former, u_new in zip(run(former, make_params())[0],
                             run(transforms.proximal(learning_rate, reg), make_params())[0]):
    chex.assert_trees_all_equal(u_former, u_new)


def test_proximal_by_keyword_and_under_inject_hyperparams_does_not_warn():
  params = jnp.array([1.0, -0.05])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    by_keyword = transforms.proximal(reg=jr.L1(1.0), learning_rate=0.5)
    injected = optax.inject_hyperparams(transforms.proximal, static_args=("reg",))(
        learning_rate=0.5, reg=jr.L1(1.0))
    for tx in (by_keyword, injected):
      np.testing.assert_allclose(run(tx, params, steps=1, grads_fn=jnp.zeros_like)[1],
                                 [0.5, 0.0])


def test_proximal_with_two_regularizers_or_two_learning_rates_is_a_type_error():
  with pytest.raises(TypeError, match=r"proximal\(learning_rate, reg\) got two regularizers, "
                     r"learning_rate=L1.*reg=L2"):
    transforms.proximal(jr.L1(0.1), jr.L2(0.1))
  with pytest.raises(TypeError, match=r"got no regularizer \(learning_rate=0.1, reg=<function"):
    transforms.proximal(0.1, lambda count: 0.1)


# prox_sgd -----------------------------------------------------------------------


def test_fista_follows_beck_teboulle_recursion():
  X, y = lasso_problem(n=32, d=6)
  loss = least_squares(X, y)
  lam, lr = 0.05, 0.3
  Xn, yn, n = np.asarray(X, np.float64), np.asarray(y, np.float64), X.shape[0]
  soft = lambda v, t: np.sign(v) * np.maximum(np.abs(v) - t, 0)
  x_prev = y_k = np.zeros(6)
  t = 1.0
  tx = transforms.prox_sgd(lr, jr.L1(lam), accelerated=True)
  w = jnp.zeros(6)
  state = tx.init(w)
  for _ in range(20):
    x = soft(y_k - lr * Xn.T @ (Xn @ y_k - yn) / n, lr * lam)
    t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
    y_k = x + (t - 1) / t_next * (x - x_prev)
    x_prev, t = x, t_next
    updates, state = tx.update(jax.grad(loss)(w), state, w)
    w = optax.apply_updates(w, updates)
    np.testing.assert_allclose(w, y_k, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.iterate, x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.t, t, rtol=1e-6)
  assert np.any(x == 0) and np.all(np.asarray(state.iterate)[x == 0] == 0)


def fista_on_a_lasso(wrap=lambda tx: tx, steps=20):
  """``steps`` FISTA steps on a Lasso with three nonzero coefficients out of twelve;
  returns the final state of ``wrap(fista)`` and the final params."""
  X, y = lasso_problem()
  loss = least_squares(X, y)
  tx = wrap(transforms.prox_sgd(0.5, jr.L1(0.1), accelerated=True))
  w = jnp.zeros(X.shape[1])
  state = tx.init(w)
  for _ in range(steps):
    updates, state = tx.update(jax.grad(loss)(w), state, w)
    w = optax.apply_updates(w, updates)
  return state, w


def test_fista_iterate_is_the_sparse_iterate_of_the_state():
  state, params = fista_on_a_lasso(steps=5)
  iterate = transforms.fista_iterate(state)
  assert iterate is state.iterate
  support = np.arange(iterate.shape[0]) < 3
  np.testing.assert_array_equal(np.asarray(iterate) != 0, support)
  # The params, FISTA's extrapolated point, have not found the support yet.
  assert np.sum(np.asarray(params) != 0) > 3


@pytest.mark.parametrize("wrap", [
    lambda tx: optax.chain(optax.clip_by_global_norm(100.0), tx, optax.identity()),
    lambda tx: optax.masked(tx, True),
    lambda tx: optax.inject_hyperparams(transforms.prox_sgd, static_args=("reg",))(
        learning_rate=0.5, reg=jr.L1(0.1), accelerated=True),
], ids=["chain", "masked", "inject_hyperparams"])
def test_fista_iterate_finds_the_state_inside_optax_wrappers(wrap):
  bare, _ = fista_on_a_lasso()
  wrapped, _ = fista_on_a_lasso(wrap)
  chex.assert_trees_all_equal(transforms.fista_iterate(wrapped), bare.iterate)
  chex.assert_trees_all_equal(jax.jit(transforms.fista_iterate)(wrapped), bare.iterate)


def test_fista_iterate_under_optax_masked_leaves_masked_nodes():
  fista = transforms.prox_sgd(LR, jr.L1(0.3), accelerated=True)
  _, _, state = run(optax.masked(fista, {"w": True, "b": False}), make_params())
  iterate = transforms.fista_iterate(state)
  assert isinstance(iterate["b"], optax.MaskedNode)
  _, _, alone = run(fista, {"w": make_params()["w"]})
  chex.assert_trees_all_equal(iterate["w"], alone.iterate["w"])


def test_fista_iterate_of_an_nnx_optimizer_is_a_state_of_arrays():
  X, y = lasso_problem()
  model = nnx.Linear(X.shape[1], 1, use_bias=False, kernel_init=nnx.initializers.zeros,
                     rngs=nnx.Rngs(0))
  reg = jr.L1(0.1, where=jr.select.kernels())
  optimizer = nnx.Optimizer(
      model, optax.chain(optax.identity(), transforms.prox_sgd(0.5, reg, accelerated=True)),
      wrt=nnx.Param)
  loss = lambda model: 0.5 / X.shape[0] * jnp.sum((model(X)[:, 0] - y) ** 2)
  for _ in range(5):
    optimizer.update(model, nnx.grad(loss)(model))
  iterate = transforms.fista_iterate(optimizer.opt_state)
  assert isinstance(iterate, nnx.State)
  kernel = iterate["kernel"]
  assert isinstance(kernel, jax.Array), type(kernel)
  np.testing.assert_array_equal(kernel, optimizer.opt_state[1].iterate["kernel"][...])
  support = np.arange(X.shape[1]) < 3
  np.testing.assert_array_equal(np.asarray(kernel[:, 0]) != 0, support)
  # The sparse model: the iterate written into a copy of the model.
  sparse = nnx.clone(model)
  nnx.update(sparse, iterate)
  np.testing.assert_array_equal(sparse.kernel[...], kernel)
  assert np.sum(np.asarray(model.kernel[...]) != 0) > 3  # the params are not sparse yet


@pytest.mark.parametrize("tx", [
    optax.sgd(0.1),
    transforms.prox_sgd(0.1, jr.L1(0.1)),
], ids=["sgd", "ista"])
def test_fista_iterate_without_a_fista_state_raises(tx):
  with pytest.raises(ValueError, match="fista_iterate found no FISTA state"):
    transforms.fista_iterate(tx.init(jnp.ones(3)))


def test_fista_iterate_with_two_fista_states_raises_and_says_where():
  tx = optax.partition(
      {"a": transforms.prox_sgd(0.1, jr.L1(0.1), accelerated=True),
       "b": transforms.prox_sgd(0.2, jr.L1(0.1), accelerated=True)},
      {"w": "a", "b": "b"})
  with pytest.raises(ValueError, match=r"found 2 FISTA states in opt_state, at .*'a'.*'b'"):
    transforms.fista_iterate(tx.init(make_params()))


def test_prox_sgd_works_under_inject_hyperparams():
  # A regularizer is callable, so it must be static: else it is read as a schedule.
  tx = optax.inject_hyperparams(transforms.prox_sgd, static_args=("reg",))(
      learning_rate=0.5, reg=jr.L1(1.0))
  _, params, state = run(tx, jnp.array([1.0, -0.2]), steps=1, grads_fn=jnp.zeros_like)
  np.testing.assert_allclose(params, [0.5, 0.0])
  assert float(state.hyperparams["learning_rate"]) == 0.5


# prox_adam ----------------------------------------------------------------------


def test_prox_adam_thresholds_each_coordinate_by_adams_preconditioner():
  lam, b1, b2, eps = 0.5, 0.9, 0.999, 1e-8
  schedule = lambda count: 0.1 / (count + 1)
  w = np.array([1.0, 0.02, -0.3, 0.0], np.float32)
  grads = [np.array([0.5, -0.1, 2.0, 1e-3], np.float32),
           np.array([-0.2, 0.3, 1.0, 1e-3], np.float32)]
  tx = transforms.prox_adam(schedule, jr.L1(lam), b1=b1, b2=b2, eps=eps)
  state = tx.init(jnp.asarray(w))
  m = v = np.zeros(4)
  params = jnp.asarray(w)
  expected = w.astype(np.float64)
  for k, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g.astype(np.float64) ** 2
    m_hat, v_hat = m / (1 - b1 ** k), v / (1 - b2 ** k)
    lr = 0.1 / k  # the schedule at count k - 1
    c = np.sqrt(v_hat) + eps
    moved = expected - lr * m_hat / c
    expected = np.sign(moved) * np.maximum(np.abs(moved) - lr * lam / c, 0)
    updates, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params, expected, rtol=1e-5, atol=1e-6)
  # Coordinate 3 has a tiny gradient, yet Adam moves it by about lr, more than a shared
  # threshold lr·λ would undo; its own threshold lr·λ/(√v̂+ε) is large and zeroes it.
  assert np.asarray(params)[1] == 0 and np.asarray(params)[3] == 0


def test_prox_adam_zeroes_a_coordinate_that_never_had_a_gradient_at_once():
  tx = transforms.prox_adam(1e-3, jr.L1(1e-3))
  _, params, _ = run(tx, jnp.array([1.0, 1.0]), steps=1,
                     grads_fn=lambda p: jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(params, [0.999, 0.0], rtol=1e-5)
  assert params[1] == 0


def test_prox_adam_with_zero_penalty_is_adam():
  X, y = lasso_problem()
  loss = least_squares(X, y)
  w0 = jnp.zeros(X.shape[1])
  w_adam, _ = jax.jit(lambda: train(optax.adam(0.05), loss, w0, 100))()
  w_prox, _ = jax.jit(lambda: train(transforms.prox_adam(0.05, jr.L1(0.0)), loss, w0, 100))()
  np.testing.assert_allclose(w_prox, w_adam, rtol=1e-5, atol=1e-6)


def test_prox_adam_with_group_lasso_raises_at_construction():
  with pytest.raises(ValueError, match="prox_adam needs a penalty whose prox takes one step "
                     "per coordinate; GroupLasso"):
    transforms.prox_adam(LR, jr.GroupLasso(0.1, axis=0))
  with pytest.raises(ValueError, match="prox_adam needs"):
    transforms.prox_adam(LR, jr.L1(0.1) + jr.GroupLasso(0.1, axis=0))


# L2 and Optax's weight decay -------------------------------------------------------


def test_coupled_l2_under_sgd_is_add_decayed_weights_with_twice_the_strength():
  lam, lr = 0.05, 0.1
  ours = optax.chain(transforms.add_gradient(jr.L2(lam)), optax.sgd(lr))
  theirs = optax.chain(optax.add_decayed_weights(2 * lam), optax.sgd(lr))
  _, p_ours, _ = run(ours, make_params(), steps=20)
  _, p_theirs, _ = run(theirs, make_params(), steps=20)
  chex.assert_trees_all_close(p_ours, p_theirs, rtol=1e-6, atol=1e-7)
  # With λ itself (the λ/2·w² reading of "L2") it would not be the same.
  _, p_half, _ = run(optax.chain(optax.add_decayed_weights(lam), optax.sgd(lr)),
                     make_params(), steps=20)
  assert np.max(np.abs(p_half["w"] - p_ours["w"])) > 1e-3


def test_coupled_l2_under_adam_is_not_adamw_but_decoupled_l2_is():
  lam, lr = 0.05, 0.01
  grads_fn = lambda p: jax.tree.map(lambda w: 10.0 * (w - 0.3), p)
  coupled = optax.chain(transforms.add_gradient(jr.L2(lam)), optax.adam(lr))
  adamw = optax.adamw(lr, weight_decay=2 * lam)
  decoupled = optax.chain(optax.scale_by_adam(), transforms.add_gradient(jr.L2(lam)),
                          optax.scale_by_learning_rate(lr))
  _, p_coupled, _ = run(coupled, make_params(), steps=200, grads_fn=grads_fn)
  _, p_adamw, _ = run(adamw, make_params(), steps=200, grads_fn=grads_fn)
  _, p_decoupled, _ = run(decoupled, make_params(), steps=200, grads_fn=grads_fn)
  chex.assert_trees_all_close(p_decoupled, p_adamw, rtol=1e-5, atol=1e-6)
  # Coupled: the decay is divided by Adam's preconditioner, and the fixed point moves
  # from 0.3·10/(10 + 2λ) (coupled) towards 0.3·10/(10 + ~2λ·10·√v̂) (decoupled).
  assert np.max(np.abs(p_coupled["w"] - p_adamw["w"])) > 1e-2


# jit, vmap, dtypes ----------------------------------------------------------------


class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_every_transform_updates_alike_with_and_without_jit(self):
    for name in NAMES:
      tx = FACTORIES[name](jr.L1(0.3) + jr.L2(0.1))
      params = make_params()
      state = tx.init(params)
      update = self.variant(tx.update)
      eager = jax.tree.map(np.asarray, run(tx, params)[1])
      for _ in range(3):
        updates, state = update(quadratic_grads(params), state, params)
        params = optax.apply_updates(params, updates)
      chex.assert_trees_all_close(params, eager, rtol=1e-5, atol=1e-6, custom_message=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_traced_strength_and_learning_rate(self):
    @self.variant
    def step(lam, lr, params):
      tx = transforms.prox_sgd(lr, jr.L1(lam))
      updates, _ = tx.update(jnp.zeros_like(params), tx.init(params), params)
      return optax.apply_updates(params, updates)
    out = step(jnp.float32(1.0), jnp.float32(0.5), jnp.array([1.0, -0.2, 0.6]))
    np.testing.assert_allclose(out, [0.5, 0.0, 0.1], rtol=1e-6)


def test_vmap_over_strength_trains_a_batch_of_lassos_at_once():
  X, y = lasso_problem()
  loss = least_squares(X, y)
  lams = jnp.array([0.0, 0.05, 0.2, 3.0])  # 3 > max|Xᵀy|/n: all zeros
  w0 = jnp.zeros(X.shape[1])

  def fit(lam):
    tx = transforms.prox_sgd(0.5, jr.L1(lam), accelerated=True)
    return train(tx, loss, w0, 200)[1].iterate

  batch = jax.jit(jax.vmap(fit))(lams)
  for i, lam in enumerate(lams):
    np.testing.assert_allclose(batch[i], jax.jit(fit)(lam), rtol=1e-5, atol=1e-6)
  zeros = np.sum(np.asarray(batch) == 0, axis=1)
  assert zeros[0] == 0 and zeros[-1] == X.shape[1]
  assert np.all(np.diff(zeros) >= 0), zeros


def test_vmap_over_a_batched_regularizer_pytree():
  X, y = lasso_problem()
  loss = least_squares(X, y)
  regs = jax.vmap(jr.L1)(jnp.array([0.05, 0.2]))  # a regularizer is a pytree: map over it
  w0 = jnp.zeros(X.shape[1])
  fit = lambda reg: train(transforms.prox_adam(0.05, reg), loss, w0, 100)[0]
  batch = jax.jit(jax.vmap(fit))(regs)
  np.testing.assert_allclose(batch[1], jax.jit(fit)(jr.L1(0.2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_dtypes_are_kept(name, dtype):
  tx = FACTORIES[name](jr.L1(0.3))
  params = make_params(dtype)
  history, params, state = run(tx, params)
  for updates in history:
    chex.assert_trees_all_equal_dtypes(updates, make_params(dtype))
  chex.assert_trees_all_equal_dtypes(params, make_params(dtype))
  chex.assert_tree_all_finite(params)
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.ndim > 0:
      assert leaf.dtype == dtype, (name, leaf.dtype)


@pytest.mark.parametrize("make", [
    lambda: transforms.prox_sgd(0.5, jr.L1(0.05)),
    lambda: transforms.prox_sgd(0.5, jr.L1(0.05), accelerated=True),
    # Adam's first moment in float32, as Optax advises for bfloat16 params: with both
    # moments in bfloat16, where its steps stall is decided by rounding.
    lambda: transforms.prox_adam(0.02, jr.L1(0.05), mu_dtype=jnp.float32),
], ids=["ista", "fista", "prox_adam"])
def test_bfloat16_training_finds_the_support_with_exact_zeros(make):
  X, y = lasso_problem(dtype=jnp.bfloat16)
  loss = least_squares(X, y)
  w, _ = jax.jit(lambda: train(make(), loss, jnp.zeros(X.shape[1], jnp.bfloat16), 300))()
  assert w.dtype == jnp.bfloat16
  w = np.asarray(w, np.float32)
  np.testing.assert_array_equal(w != 0, np.arange(X.shape[1]) < 3)
  np.testing.assert_allclose(w[:3], [2.0, -1.5, 1.0], atol=0.15)


# Composition with optax.chain and optax.masked --------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_optax_masked_touches_only_the_masked_leaves(name):
  mask = {"w": True, "b": False}
  tx = optax.masked(FACTORIES[name](jr.L1(0.3)), mask)
  history, _, _ = run(tx, make_params())
  # Updates of the leaf left out pass through unchanged: the gradient itself.
  inner_history, _, _ = run(FACTORIES[name](jr.L1(0.3)), {"w": make_params()["w"]})
  params = make_params()
  for updates, inner in zip(history, inner_history):
    np.testing.assert_array_equal(updates["b"], quadratic_grads(params)["b"])
    np.testing.assert_array_equal(updates["w"], inner["w"])
    params = optax.apply_updates(params, updates)


@pytest.mark.parametrize("name", NAMES)
def test_optax_chain_composes(name):
  tx = optax.chain(optax.clip_by_global_norm(1.0), FACTORIES[name](jr.L1(0.3)),
                   optax.identity())
  alone = FACTORIES[name](jr.L1(0.3))
  clipped = lambda p: optax.clip_by_global_norm(1.0).update(quadratic_grads(p), None)[0]
  chex.assert_trees_all_close(run(tx, make_params())[1],
                              run(alone, make_params(), grads_fn=clipped)[1], rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_where_on_the_regularizer_equals_partitioning_the_transform(name):
  mask = {"w": True, "b": False}
  make = lambda reg: as_optimizer(name, FACTORIES[name](reg))
  with_where = make(jr.L1(1.0, where=mask))
  partitioned = optax.partition({"on": make(jr.L1(1.0)), "off": make(jr.L1(0.0))},
                                {"w": "on", "b": "off"})
  _, p_where, _ = run(with_where, make_params(), steps=10)
  _, p_part, _ = run(partitioned, make_params(), steps=10)
  chex.assert_trees_all_close(p_where, p_part, rtol=1e-6, atol=1e-7)
  if name != "add_gradient":
    assert np.any(np.asarray(p_where["w"]) == 0) and np.all(np.asarray(p_where["b"]) != 0)


@pytest.mark.parametrize("name", ["add_gradient", "proximal"])
def test_where_on_the_regularizer_equals_optax_masked(name):
  mask = {"w": True, "b": False}
  with_where = FACTORIES[name](jr.L1(0.3, where=mask))
  masked = optax.masked(FACTORIES[name](jr.L1(0.3)), mask)
  for (u_where, u_masked) in zip(run(with_where, make_params())[0],
                                 run(masked, make_params())[0]):
    chex.assert_trees_all_close(u_where, u_masked, rtol=1e-6, atol=1e-7)


def test_prox_sgd_with_where_equals_sgd_then_masked_proximal():
  mask = {"w": True, "b": False}
  fused = transforms.prox_sgd(LR, jr.L1(0.3, where=mask))
  chained = optax.chain(optax.sgd(LR),
                        optax.masked(transforms.proximal(LR, jr.L1(0.3)), mask))
  for u_fused, u_chained in zip(run(fused, make_params(), steps=5)[0],
                                run(chained, make_params(), steps=5)[0]):
    chex.assert_trees_all_close(u_fused, u_chained, rtol=1e-6, atol=1e-7)


# States and bad input ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES + ["proximal_schedule"])
def test_states_are_namedtuples_of_arrays(name):
  if name == "proximal_schedule":
    tx = transforms.proximal(optax.linear_schedule(0.1, 0.0, 10), jr.L1(0.1))
  else:
    tx = FACTORIES[name](jr.L1(0.1))
  params = make_params()
  for state in (tx.init(params), run(tx, params)[2]):
    assert isinstance(state, tuple) and hasattr(state, "_fields"), type(state)
    for field in state._fields:
      value = getattr(state, field)
      if isinstance(value, tuple):  # a nested state, e.g. EmptyState() without momentum
        assert hasattr(value, "_fields"), (name, field)
      for leaf in jax.tree.leaves(value):
        assert isinstance(leaf, jax.Array), (name, field, type(leaf))
  # Checkpointable: a state rebuilt from its leaves keeps working.
  leaves, treedef = jax.tree.flatten(tx.init(params))
  restored = jax.tree.unflatten(treedef, [np.asarray(leaf) for leaf in leaves])
  tx.update(quadratic_grads(params), restored, params)


@pytest.mark.parametrize("name", NAMES)
def test_update_without_params_raises_optax_message(name):
  tx = FACTORIES[name](jr.L1(0.1))
  params = make_params()
  with pytest.raises(ValueError, match="not passing `params`"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize("learning_rate", ["0.1", None, optax.sgd(0.1), [0.1], True])
@pytest.mark.parametrize("make", [
    lambda lr: transforms.proximal(lr, jr.L1(0.1)),
    lambda lr: transforms.prox_sgd(lr, jr.L1(0.1)),
    lambda lr: transforms.prox_adam(lr, jr.L1(0.1)),
], ids=["proximal", "prox_sgd", "prox_adam"])
def test_learning_rate_neither_a_float_nor_a_schedule_is_a_type_error(make, learning_rate):
  with pytest.raises(TypeError, match="learning_rate must be a float or an Optax schedule"):
    make(learning_rate)


def test_learning_rate_checks():
  with pytest.raises(ValueError, match="learning_rate must be finite and >= 0, got -0.1"):
    transforms.proximal(-0.1, jr.L1(0.1))
  with pytest.raises(ValueError, match="learning_rate must be a scalar"):
    transforms.prox_sgd(jnp.array([0.1, 0.2]), jr.L1(0.1))
  with pytest.raises(TypeError, match="order of the arguments"):
    transforms.prox_sgd(jr.L1(0.1), 0.1)
  with pytest.raises(TypeError, match="order of the arguments"):
    transforms.proximal(jr.L1(0.1), jr.L1(0.1))


def test_regularizer_and_momentum_checks():
  with pytest.raises(TypeError, match="reg must be a jaxreg regularizer"):
    transforms.proximal(0.1, 0.1)
  with pytest.raises(TypeError, match="reg must be a jaxreg regularizer"):
    transforms.prox_adam(0.1, lambda p: jnp.sum(p))
  with pytest.raises(TypeError, match="reg must be"):
    transforms.add_gradient(0.1)
  with pytest.raises(ValueError, match="own momentum"):
    transforms.prox_sgd(0.1, jr.L1(0.1), momentum=0.9, accelerated=True)
  with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
    transforms.prox_sgd(0.1, jr.L1(0.1), nesterov=True)
  with pytest.raises(ValueError, match="momentum must be finite and >= 0"):
    transforms.prox_sgd(0.1, jr.L1(0.1), momentum=-0.5)


def test_transforms_is_reachable_from_the_package():
  assert jr.transforms.prox_sgd is transforms.prox_sgd
