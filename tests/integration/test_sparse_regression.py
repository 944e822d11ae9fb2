r"""Sparse regression with jaxreg's Optax transforms, against scikit-learn.

scikit-learn's ``Lasso(alpha)`` minimizes :math:`\frac{1}{2n}\lVert y - Xw\rVert^2 +
\alpha\lVert w\rVert_1`, which is the least-squares loss below plus ``jr.L1(alpha)``;
its ``ElasticNet(alpha, l1_ratio)`` adds :math:`\frac{\alpha(1-\rho)}{2}\lVert
w\rVert^2`, i.e. ``jr.ElasticNet(l1=alpha*l1_ratio, l2=alpha*(1-l1_ratio)/2)``.
Coordinate descent there is run to ``tol=1e-14``, so its answer is the reference.
The comparisons run in float64; the training loops are one jitted ``lax.scan`` each.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn import linear_model

import jaxreg as jr
from jaxreg import transforms


def correlated_problem(n=100, d=30, k=5, rho=0.9, seed=0):
  """Features with correlation ``rho^|i-j|``: ill-conditioned, so ISTA is slow."""
  rng = np.random.default_rng(seed)
  cov = rho ** np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
  X = rng.multivariate_normal(np.zeros(d), cov, size=n)
  w = np.zeros(d)
  w[rng.choice(d, k, replace=False)] = rng.choice([-1, 1], k) * rng.uniform(1, 3, k)
  return X, X @ w + 0.5 * rng.standard_normal(n)


def fit(tx, X, y, reg, steps):
  """Trains ``w`` from 0; returns the final params, state and the objective per step.

  The objective is taken at the proximal point: the params themselves, or FISTA's
  ``state.iterate`` (its params are the extrapolated points).
  """
  X, y = jnp.asarray(X), jnp.asarray(y)
  loss = lambda w: 0.5 / X.shape[0] * jnp.sum((X @ w - y) ** 2)

  def step(carry, _):
    w, state = carry
    updates, state = tx.update(jax.grad(loss)(w), state, w)
    w = optax.apply_updates(w, updates)
    x = state.iterate if isinstance(state, transforms.FISTAState) else w
    return (w, state), loss(x) + reg(x)

  w0 = jnp.zeros(X.shape[1], X.dtype)
  (w, state), objective = jax.jit(
      lambda: jax.lax.scan(step, (w0, tx.init(w0)), None, length=steps))()
  return np.asarray(w), state, np.asarray(objective)


def sklearn_objective(X, y, w, penalty):
  return 0.5 / len(y) * np.sum((y - X @ w) ** 2) + penalty(w)


def steps_to_gap(objective, best, gap):
  reached = (objective - best) / best <= gap
  assert reached.any(), f"relative gap {gap} never reached: {objective[-1] / best - 1}"
  return int(np.argmax(reached)) + 1


@pytest.fixture(scope="session")  # Once per worker: a few seconds, not worth sharing.
def lasso_runs():
  with jax.enable_x64(True):
    X, y = correlated_problem()
    alpha = 0.1
    reference = linear_model.Lasso(alpha=alpha, fit_intercept=False, tol=1e-14,
                                   max_iter=100_000).fit(X, y).coef_
    lr = 1 / np.linalg.eigvalsh(X.T @ X / len(y)).max()  # 1/Lipschitz of the loss gradient
    reg = jr.L1(alpha)
    runs = {name: fit(transforms.prox_sgd(lr, reg, accelerated=accelerated), X, y, reg, 3000)
            for name, accelerated in [("ista", False), ("fista", True)]}
    best = sklearn_objective(X, y, reference, lambda w: alpha * np.abs(w).sum())
  return reference, best, runs


@pytest.mark.parametrize("name", ["ista", "fista"])
def test_prox_sgd_lasso_matches_sklearn(lasso_runs, name):
  reference, _, runs = lasso_runs
  w, state, _ = runs[name]
  assert 0 < np.sum(reference != 0) < len(reference)
  points = [w, np.asarray(state.iterate)] if name == "fista" else [w]
  for point in points:
    np.testing.assert_allclose(point, reference, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(point == 0, reference == 0)


def test_fista_needs_far_fewer_steps_than_ista(lasso_runs):
  _, best, runs = lasso_runs
  ista = steps_to_gap(runs["ista"][2], best, 1e-6)
  fista = steps_to_gap(runs["fista"][2], best, 1e-6)
  # Measured: ISTA 1269 steps, FISTA 234 on this problem.
  assert 3 * fista < ista, (ista, fista)


def test_prox_sgd_elastic_net_matches_sklearn():
  with jax.enable_x64(True):
    X, y = correlated_problem(seed=1)
    alpha, l1_ratio = 0.2, 0.7
    reference = linear_model.ElasticNet(alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False,
                                        tol=1e-14, max_iter=100_000).fit(X, y).coef_
    reg = jr.ElasticNet(l1=alpha * l1_ratio, l2=alpha * (1 - l1_ratio) / 2)
    lr = 1 / np.linalg.eigvalsh(X.T @ X / len(y)).max()
    w, state, objective = fit(transforms.prox_sgd(lr, reg, accelerated=True), X, y, reg, 2000)
  assert 0 < np.sum(reference != 0) < len(reference)
  for point in (w, np.asarray(state.iterate)):
    np.testing.assert_allclose(point, reference, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(point == 0, reference == 0)
  # Same objective: scikit-learn's, evaluated at its own answer.
  best = sklearn_objective(X, y, reference, lambda w: alpha * l1_ratio * np.abs(w).sum()
                           + 0.5 * alpha * (1 - l1_ratio) * np.sum(w ** 2))
  np.testing.assert_allclose(objective[-1], best, rtol=1e-10)


def test_prox_sgd_ridge_matches_sklearn_with_strength_alpha_over_2n():
  # scikit-learn's Ridge minimizes ||y - Xw||² + alpha·||w||², without the 1/(2n).
  with jax.enable_x64(True):
    X, y = correlated_problem(seed=2)
    alpha = 5.0
    reference = linear_model.Ridge(alpha=alpha, fit_intercept=False).fit(X, y).coef_
    reg = jr.L2(alpha / (2 * len(y)))
    lr = 1 / np.linalg.eigvalsh(X.T @ X / len(y)).max()
    w, _, _ = fit(transforms.prox_sgd(lr, reg, accelerated=True), X, y, reg, 2000)
  np.testing.assert_allclose(w, reference, atol=1e-6, rtol=0)


def test_prox_adam_gives_exact_zeros_where_adam_with_l1_gradient_gives_none():
  rng = np.random.default_rng(0)
  n, d, k = 200, 50, 5
  X = rng.standard_normal((n, d)).astype(np.float32)
  truth = np.zeros(d, np.float32)
  truth[:k] = rng.choice([-1, 1], k) * rng.uniform(1, 3, k)
  y = (X @ truth + 0.5 * rng.standard_normal(n)).astype(np.float32)
  reg, lr = jr.L1(0.1), 1e-2
  w_prox, _, f_prox = fit(transforms.prox_adam(lr, reg), X, y, reg, 1500)
  w_base, _, f_base = fit(optax.chain(transforms.add_gradient(reg), optax.adam(lr)),
                          X, y, reg, 1500)
  zero = truth == 0
  prox_zeros, base_zeros = np.mean(w_prox[zero] == 0), np.mean(w_base[zero] == 0)
  # Measured: 100% for prox_adam, 0% for Adam on the L1 gradient.
  assert prox_zeros >= 0.9, prox_zeros
  assert base_zeros <= 0.1, base_zeros
  assert np.all(w_prox[~zero] != 0)
  assert f_prox[-1] <= f_base[-1], (f_prox[-1], f_base[-1])


class MLP(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Dense(self.hidden)(x))
    return nn.Dense(1)(h)[..., 0]


def test_group_lasso_through_prox_sgd_prunes_whole_neurons():
  kx, kt, ks = jax.random.split(jax.random.key(0), 3)
  X = jax.random.normal(kx, (256, 8))
  y = MLP(3).apply(MLP(3).init(kt, X), X)  # a teacher with 3 hidden units
  student = MLP(16)
  params0 = student.init(ks, X)
  loss = lambda p: 0.5 * jnp.mean((student.apply(p, X) - y) ** 2)

  def train(strength):
    # Dense kernels are (in, out): axis=0 makes one group per output unit.
    reg = jr.GroupLasso(strength, axis=0, where=jr.select.kernels())
    tx = transforms.prox_sgd(0.1, reg, momentum=0.9)

    def body(_, carry):
      p, state = carry
      updates, state = tx.update(jax.grad(loss)(p), state, p)
      return optax.apply_updates(p, updates), state
    return jax.lax.fori_loop(0, 2000, body, (params0, tx.init(params0)))[0]

  pruned, dense = jax.jit(train)(0.01), jax.jit(train)(0.0)
  kernel = np.asarray(pruned["params"]["Dense_0"]["kernel"])
  dead = np.all(kernel == 0, axis=0)
  assert dead.sum() >= 8, dead.sum()  # measured: 14 of 16
  assert not np.any(kernel[:, ~dead] == 0)  # whole groups, not scattered zeros
  assert not np.any(np.asarray(dense["params"]["Dense_0"]["kernel"]) == 0)
  assert np.any(np.asarray(pruned["params"]["Dense_1"]["kernel"]) != 0)
  assert not np.any(np.asarray(pruned["params"]["Dense_0"]["bias"]) == 0)  # not selected
  assert float(loss(pruned)) < 0.02 * float(jnp.var(y))
