r"""Proximal maps against their definition, ``prox_{tR}(v) = argmin_z t·R(z) + ½||z - v||²``.

Each map is checked by brute force: the objective at the map's output is compared with
the smallest objective found on a fine grid (plus the points where the penalty is not
smooth). Objectives, not argmins, are compared, so ties (``hard_threshold`` at
``|v| = sqrt(2t)``) are fine; for the strongly convex penalties a small objective gap
also bounds the distance to the argmin, ``||z - z*||² <= 2 (f(z) - f(z*))``.
Penalties and reference formulas are written here in numpy, from their definitions.
"""

import chex
import hypothesis
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
import scipy.optimize

from jaxreg import prox

# The penalty R of each coordinate-wise map, scaled by its thresholds: t1·R(z) for the
# one-threshold maps, t1·|z| + t2·z² for the elastic net.
PENALTIES = {
    "soft_threshold": lambda z, t1, t2: t1 * np.abs(z),
    "hard_threshold": lambda z, t1, t2: t1 * (z != 0),
    "ridge": lambda z, t1, t2: t1 * z ** 2,
    "elastic_net": lambda z, t1, t2: t1 * np.abs(z) + t2 * z ** 2,
}
MAPS = {
    "soft_threshold": lambda v, t1, t2: prox.soft_threshold(v, t1),
    "hard_threshold": lambda v, t1, t2: prox.hard_threshold(v, t1),
    "ridge": lambda v, t1, t2: prox.ridge(v, t1),
    "elastic_net": prox.elastic_net,
}
JIT_MAPS = {name: jax.jit(fn) for name, fn in MAPS.items()}
NAMES = list(MAPS)

# The closed forms, in numpy, for the exact-value tests below.
REFERENCE = {
    "soft_threshold": lambda v, t1, t2: np.sign(v) * np.maximum(np.abs(v) - t1, 0),
    "hard_threshold": lambda v, t1, t2: np.where(v ** 2 > 2 * t1, v, 0),
    "ridge": lambda v, t1, t2: v / (1 + 2 * t1),
    "elastic_net": lambda v, t1, t2: np.sign(v) * np.maximum(np.abs(v) - t1, 0) / (1 + 2 * t2),
}

GRID = 4001


def f32(**kwargs):
  return st.floats(width=32, allow_nan=False, allow_infinity=False, **kwargs)


def vectors(min_value=-10.0, max_value=10.0, size=8):
  # A fixed size: each jitted map then compiles once per test, not once per draw.
  return hnp.arrays(np.float32, size, elements=f32(min_value=min_value, max_value=max_value))


def brute_force_min(penalty, v, t1, t2):
  """Per coordinate, the smallest ``penalty(z) + ½(z - v)²`` over a grid and 0 and v.

  Every minimizer lies between 0 and v (each penalty only grows away from 0), so the
  grid spans that interval with a margin; 0 is added because the L1 and L0 minimizers
  sit there exactly, where a grid would miss them.
  """
  v = np.asarray(v, np.float64)[:, None]
  t1 = np.broadcast_to(np.asarray(t1, np.float64), v.shape[:1])[:, None]
  t2 = np.broadcast_to(np.asarray(t2, np.float64), v.shape[:1])[:, None]
  lo, hi = np.minimum(v, 0) - 1, np.maximum(v, 0) + 1
  z = np.concatenate([lo + (hi - lo) * np.linspace(0, 1, GRID), np.zeros_like(v), v], axis=1)
  return np.min(penalty(z, t1, t2) + 0.5 * (z - v) ** 2, axis=1)


def objective(penalty, z, v, t1, t2):
  z, v = np.asarray(z, np.float64), np.asarray(v, np.float64)
  t1, t2 = np.asarray(t1, np.float64), np.asarray(t2, np.float64)
  return penalty(z, t1, t2) + 0.5 * (z - v) ** 2


@pytest.mark.parametrize("name", NAMES)
@given(v=vectors(), t1=f32(min_value=0, max_value=5), t2=f32(min_value=0, max_value=5),
       per_coordinate=st.booleans(), data=st.data())
def test_map_minimizes_its_objective(name, v, t1, t2, per_coordinate, data):
  if per_coordinate:
    # One threshold per coordinate, as preconditioned methods pass them.
    t1, t2 = (data.draw(hnp.arrays(np.float32, v.shape, elements=f32(min_value=0, max_value=5)))
              for _ in range(2))
  z = np.asarray(JIT_MAPS[name](v, t1, t2))
  assert z.shape == v.shape
  reached = objective(PENALTIES[name], z, v, t1, t2)
  best = brute_force_min(PENALTIES[name], v, t1, t2)
  # The slack covers float32 rounding of z (and of sqrt(2t) at a hard-threshold tie).
  np.testing.assert_array_less(reached, best + 1e-6 * (1 + np.asarray(v, np.float64) ** 2))


@pytest.mark.parametrize("name", NAMES)
def test_map_equals_closed_form(name):
  v = np.linspace(-4, 4, 33, dtype=np.float32)
  t1 = np.float32(1.5)
  t2 = np.float32(0.75)
  np.testing.assert_allclose(MAPS[name](jnp.asarray(v), t1, t2),
                             REFERENCE[name](v.astype(np.float64), t1, t2), rtol=1e-6, atol=1e-7)


@given(t=f32(min_value=2.0 ** -10, max_value=1e3),
       u=hnp.arrays(np.float32, 16, elements=f32(min_value=-1, max_value=1)))
def test_soft_threshold_zeros_are_exact_positive_zeros(t, u):
  # |t·u| <= t also after rounding to float32, since t itself is representable.
  x = np.concatenate([(t * u).astype(np.float32), np.float32([t, -t, 0.0, -0.0])])
  out = np.asarray(JIT_MAPS["soft_threshold"](x, t, 0.0))
  # Bitwise +0.0: not -0.0, which compares equal to 0 but is another bit pattern.
  np.testing.assert_array_equal(out.view(np.uint32), np.zeros(x.shape, np.uint32))
  np.testing.assert_array_equal(np.asarray(JIT_MAPS["elastic_net"](x, t, 0.5)).view(np.uint32),
                                np.zeros(x.shape, np.uint32))


@given(t=f32(min_value=2.0 ** -10, max_value=10), v=vectors(-100, 100))
def test_soft_threshold_shrinks_the_rest_by_t_keeping_the_sign(t, v):
  outside = np.abs(v) > t
  out = np.asarray(JIT_MAPS["soft_threshold"](v, t, 0.0))
  np.testing.assert_array_equal(np.sign(out[outside]), np.sign(v[outside]))
  np.testing.assert_allclose(np.abs(out[outside]),
                             np.abs(v[outside]).astype(np.float64) - t, rtol=1e-6, atol=1e-5)


def test_soft_threshold_keeps_nan():
  out = prox.soft_threshold(jnp.array([jnp.nan, 1.0]), 0.5)
  assert np.isnan(out[0]) and out[1] == 0.5


@pytest.mark.parametrize("name", NAMES)
def test_per_coordinate_thresholds_act_coordinate_by_coordinate(name):
  rng = np.random.default_rng(0)
  v = rng.normal(size=(3, 5)).astype(np.float32) * 3
  t1 = rng.uniform(0, 2, size=(3, 5)).astype(np.float32)
  t2 = rng.uniform(0, 2, size=(3, 1)).astype(np.float32)  # broadcast along rows
  out = np.asarray(MAPS[name](jnp.asarray(v), jnp.asarray(t1), jnp.asarray(t2)))
  for i in range(3):
    for j in range(5):
      alone = MAPS[name](jnp.asarray(v[i, j]), float(t1[i, j]), float(t2[i, 0]))
      np.testing.assert_allclose(out[i, j], alone, rtol=1e-6, err_msg=str((i, j)))
  np.testing.assert_allclose(out, REFERENCE[name](v.astype(np.float64), t1, t2), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("name", NAMES + ["group_soft_threshold"])
def test_dtype_is_kept(name, dtype):
  v = jnp.linspace(-3, 3, 12, dtype=jnp.float32).reshape(3, 4)
  if name == "group_soft_threshold":
    fn = lambda x: prox.group_soft_threshold(x, 0.7, axis=0)
    expected = np.asarray(v, np.float64) * np.maximum(
        1 - 0.7 / np.linalg.norm(np.asarray(v, np.float64), axis=0), 0)
  else:
    fn = lambda x: MAPS[name](x, 0.7, 0.3)
    expected = REFERENCE[name](np.asarray(v, np.float64), 0.7, 0.3)
  out = fn(v.astype(dtype))
  assert out.dtype == dtype
  # Within a few units of the dtype's rounding, from the float64 closed form.
  tol = 4 * float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=tol, atol=tol)


def test_hard_threshold_tie_and_boundaries():
  # sqrt(2·2) = 2: at the tie both 0 and v are minimizers and 0 is returned.
  out = prox.hard_threshold(jnp.array([-2.5, -2.0, 1.9, 2.0, 2.1]), 2.0)
  np.testing.assert_array_equal(out, np.float32([-2.5, 0.0, 0.0, 0.0, 2.1]))


# Group soft-thresholding ------------------------------------------------------------

def group_objective(z, v, t, axis):
  z, v = np.asarray(z, np.float64), np.asarray(v, np.float64)
  return t * np.sum(np.linalg.norm(z, axis=axis)) + 0.5 * np.sum((z - v) ** 2)


def group_brute_force_min(v, t, axis):
  r"""``min_z t·Σ_g ||z_g|| + ½||z - v||²`` in polar coordinates.

  The objective is a sum over disjoint groups. In one group, for ``||z_g|| = r``,
  ``||z_g - v_g|| >= |r - ||v_g|||`` with equality when ``z_g`` points along ``v_g``,
  so the group's minimum is ``min_{r >= 0} t·r + ½(r - ||v_g||)²``, which a grid over
  ``r`` in ``[0, ||v_g||]`` (both ends included) finds.
  """
  norms = np.linalg.norm(np.asarray(v, np.float64), axis=axis).reshape(-1, 1)
  r = np.concatenate([norms * np.linspace(0, 1, GRID), np.zeros_like(norms)], axis=1)
  return np.sum(np.min(t * r + 0.5 * (r - norms) ** 2, axis=1))


# (shape, axis): vectors, matrices by columns and rows, conv-like kernels. numpy reads a
# 2-tuple axis as a matrix norm: Frobenius, the same as the vector norm of the group.
GROUPINGS = [((5,), 0), ((3, 4), 0), ((3, 4), 1), ((3, 4), -1), ((3, 4), (0, 1)),
             ((2, 3, 2), (0, 1)), ((2, 3, 2), (1, 2)), ((2, 3, 2), 1)]
JIT_GROUP = jax.jit(prox.group_soft_threshold, static_argnums=2)


@st.composite
def grouped_arrays(draw):
  shape, axis = draw(st.sampled_from(GROUPINGS))
  v = draw(hnp.arrays(np.float32, shape, elements=f32(min_value=-5, max_value=5)))
  return v, axis


@given(va=grouped_arrays(), t=f32(min_value=0, max_value=5))
def test_group_soft_threshold_minimizes_its_objective(va, t):
  v, axis = va
  z = np.asarray(JIT_GROUP(v, t, axis))
  assert z.shape == v.shape
  reached = group_objective(z, v, t, axis)
  best = group_brute_force_min(v, t, axis)
  assert reached <= best + 1e-6 * (1 + np.sum(np.asarray(v, np.float64) ** 2)), (reached, best)


@hypothesis.settings(max_examples=10)
@given(v=hnp.arrays(np.float32, 3, elements=f32(min_value=-3, max_value=3)),
       t=f32(min_value=0, max_value=4))
def test_group_soft_threshold_matches_scipy_minimize(v, t):
  # One group: a generic derivative-free minimizer, started from v and from near 0,
  # must not find a smaller objective than the closed form.
  fun = lambda z: group_objective(z, v, t, None)
  starts = [v.astype(np.float64), np.full(v.shape, 1e-3)]
  found = min(scipy.optimize.minimize(fun, x0, method="Nelder-Mead",
                                      options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}).fun
              for x0 in starts)
  found = min(found, fun(np.zeros(v.shape)))
  z = np.asarray(JIT_GROUP(v, t, 0))
  assert fun(z) <= found + 1e-6, (fun(z), found)


def test_group_soft_threshold_zeroes_small_groups_exactly():
  # Columns (axis=0 groups) of norm 5, 0.5, 0 and 2 under t = 2.
  x = jnp.array([[3.0, 0.3, 0.0, -2.0],
                 [4.0, -0.4, 0.0, 0.0]])
  out = np.asarray(prox.group_soft_threshold(x, 2.0, axis=0))
  np.testing.assert_array_equal(out[:, 1:], 0.0)
  np.testing.assert_allclose(out[:, 0], [3.0 * 0.6, 4.0 * 0.6], rtol=1e-6)
  # Rows as groups instead: norms ~5.02 and ~4.47, both kept and shrunk by 2 in norm.
  rows = np.asarray(prox.group_soft_threshold(x, 2.0, axis=1))
  np.testing.assert_allclose(np.linalg.norm(rows, axis=1),
                             np.linalg.norm(np.asarray(x), axis=1) - 2.0, rtol=1e-6)


def test_group_norm_is_the_euclidean_norm_over_axis():
  x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
  norm = jax.jit(prox.group_norm, static_argnums=(1, 2))
  for axis in [0, 1, 2, -1, (0, 1), (1, 2)]:
    np.testing.assert_allclose(norm(x, axis),
                               np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=axis)), rtol=1e-6)
  assert prox.group_norm(jnp.asarray(x), 1, keepdims=True).shape == (2, 1, 4)


# Gradients ----------------------------------------------------------------------------

def test_group_norm_gradient_at_a_zero_group_is_zero():
  x = jnp.array([[0.0, 3.0], [0.0, 4.0]])
  total = lambda x: jnp.sum(prox.group_norm(x, 0))
  np.testing.assert_allclose(jax.jit(jax.grad(total))(x), [[0.0, 0.6], [0.0, 0.8]], rtol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.jacfwd(total))(x), [[0.0, 0.6], [0.0, 0.8]], rtol=1e-6)
  assert np.all(np.isfinite(jax.jit(jax.hessian(total))(x)))


@pytest.mark.parametrize("jac", [jax.jacrev, jax.jacfwd], ids=["rev", "fwd"])
def test_group_soft_threshold_derivatives_are_finite_at_zero_groups(jac):
  x = jnp.array([[0.0, 3.0, 0.1], [0.0, 4.0, 0.1]])
  d_x = jax.jit(jac(lambda x: prox.group_soft_threshold(x, 1.0, axis=0)))(x)
  d_t = jax.jit(jac(lambda t: prox.group_soft_threshold(x, t, axis=0)))(1.0)
  assert np.all(np.isfinite(d_x)) and np.all(np.isfinite(d_t))
  # Zeroed groups do not move when x or t move a little.
  np.testing.assert_array_equal(np.asarray(d_x)[:, [0, 2]], 0.0)
  np.testing.assert_array_equal(np.asarray(d_t)[:, [0, 2]], 0.0)


def test_soft_threshold_gradient_at_zero_is_finite():
  g = jax.grad(lambda x: jnp.sum(prox.soft_threshold(x, 0.5)))(jnp.array([0.0, 0.2, -1.0]))
  np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])


# Away from the kinks (|x| = t, ||x_g|| = t, x = 0) every map is smooth.
SMOOTH_CASES = [
    ("soft_threshold", lambda x: prox.soft_threshold(x, 0.5), jnp.array([-2.0, 1.3, 0.2])),
    ("hard_threshold", lambda x: prox.hard_threshold(x, 0.5), jnp.array([-2.0, 1.3, 0.2])),
    ("ridge", lambda x: prox.ridge(x, 0.5), jnp.array([-2.0, 1.3, 0.2])),
    ("elastic_net", lambda x: prox.elastic_net(x, 0.5, 0.25), jnp.array([-2.0, 1.3, 0.2])),
    ("group_soft_threshold", lambda x: prox.group_soft_threshold(x, 0.5, axis=0),
     jnp.array([[1.0, -2.0], [0.5, 1.5]])),
    ("group_norm", lambda x: prox.group_norm(x, axis=1), jnp.array([[1.0, -2.0], [0.5, 1.5]])),
]


@pytest.mark.parametrize("fn,x", [c[1:] for c in SMOOTH_CASES], ids=[c[0] for c in SMOOTH_CASES])
def test_check_grads_away_from_kinks(fn, x):
  check_grads(jax.jit(fn), (x,), order=1, modes=("fwd", "rev"), eps=1e-3)


def test_thresholds_are_differentiable():
  # d/dt soft_threshold(x, t) = -sign(x) outside [-t, t]; d/dt ridge = -2x/(1+2t)².
  x = jnp.array([-2.0, 0.1, 3.0])
  np.testing.assert_array_equal(jax.jit(jax.jacfwd(lambda t: prox.soft_threshold(x, t)))(0.5),
                                [1.0, 0.0, -1.0])
  np.testing.assert_allclose(jax.jit(jax.jacrev(lambda t: prox.ridge(x, t)))(0.5),
                             -2 * np.array([-2.0, 0.1, 3.0]) / 4.0, rtol=1e-6)


# Under jit ----------------------------------------------------------------------------

class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_maps_with_traced_thresholds(self):
    v = np.linspace(-3, 3, 13, dtype=np.float32)
    t1 = np.linspace(0, 2, 13, dtype=np.float32)
    for name in NAMES:
      out = self.variant(MAPS[name])(jnp.asarray(v), jnp.asarray(t1), jnp.float32(0.4))
      expected = REFERENCE[name](v.astype(np.float64), t1, 0.4).astype(np.float32)
      chex.assert_trees_all_close(out, expected, rtol=1e-6, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_group_soft_threshold_with_traced_threshold(self):
    x = jnp.array([[3.0, 0.3], [4.0, -0.4]])
    out = self.variant(lambda x, t: prox.group_soft_threshold(x, t, axis=0))(x, jnp.float32(1.0))
    chex.assert_trees_all_close(out, np.array([[2.4, 0.0], [3.2, 0.0]], np.float32), rtol=1e-6)

  def test_jit_equals_eager(self):
    v = jnp.asarray(np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32))
    for name in NAMES:
      fn = lambda v, t: MAPS[name](v, t, t / 2)
      chex.assert_trees_all_close(jax.jit(fn)(v, 0.6), fn(v, 0.6), rtol=1e-6)
    fn = lambda v, t: prox.group_soft_threshold(v, t, axis=(0, 1))
    chex.assert_trees_all_close(jax.jit(fn)(v, 2.0), fn(v, 2.0), rtol=1e-6)


# Non-negative proxes and projections ------------------------------------------------


@given(v=vectors(), t=f32(min_value=0.0, max_value=5.0))
def test_nonneg_proxes_minimize_their_objective_on_the_orthant(v, t):
  grid = np.concatenate([np.linspace(0, 10, GRID), [0.0]])
  for fn, penalty in [(prox.nonneg_soft_threshold, lambda z: t * z),
                      (prox.nonneg_ridge, lambda z: t * z ** 2)]:
    z = np.asarray(fn(v, t), np.float64)
    assert (z >= 0).all()
    objective = penalty(z) + 0.5 * (z - v) ** 2
    best = (penalty(grid[None]) + 0.5 * (grid[None] - v[:, None]) ** 2).min(axis=1)
    assert (objective <= best + 1e-5 * (1 + np.abs(best))).all()


def test_nonneg_proxes_equal_jaxopt():
  jaxopt_prox = pytest.importorskip("jaxopt.prox", reason="jaxopt is a test extra")
  v = jax.random.normal(jax.random.key(0), (50,)) * 2
  for t in [0.0, 0.3, 1.5]:
    chex.assert_trees_all_close(prox.nonneg_soft_threshold(v, t),
                                jaxopt_prox.prox_non_negative_lasso(v, t), atol=1e-7)
    # jaxopt's l2reg is the coefficient of (l2reg/2)·||z||² (1/(1 + l2reg) in its code,
    # whatever its docstring says): jaxreg's t·||z||² is l2reg = 2t.
    chex.assert_trees_all_close(prox.nonneg_ridge(v, t),
                                jaxopt_prox.prox_non_negative_ridge(v, 2 * t), rtol=1e-6)
    chex.assert_trees_all_close(prox.non_negative(v),
                                jaxopt_prox.prox_non_negative_lasso(v, 0.0))


def _norms(x, axis):
  return np.sqrt((np.asarray(x, np.float64) ** 2).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axis", [0, 1, (0, 1)])
def test_exact_norm_projections_are_the_nearest_feasible_points(axis):
  x = np.asarray(jax.random.normal(jax.random.key(1), (6, 5)), np.float64) * 2
  n = _norms(x, axis)
  c = float(np.median(n))  # Some groups inside the ball, some outside.
  z = np.asarray(prox.max_norm(x, c, axis, epsilon=0.0), np.float64)
  assert (_norms(z, axis) <= c * (1 + 1e-6)).all()
  np.testing.assert_allclose(np.where(n <= c, x, z), z, rtol=1e-6)  # inside: unchanged
  # Optimality: no feasible point is nearer, group by group (random feasible points).
  rng = np.random.default_rng(0)
  for _ in range(20):
    w = rng.normal(size=x.shape)
    w = w * np.minimum(1, c / _norms(w, axis)) * rng.uniform()
    assert (((z - x) ** 2).sum(axis=axis) <= ((w - x) ** 2).sum(axis=axis) + 1e-9).all()
  u = np.asarray(prox.unit_norm(x, axis, epsilon=0.0), np.float64)
  np.testing.assert_allclose(_norms(u, axis), 1.0, rtol=1e-6)
  np.testing.assert_allclose(u * n, x, rtol=1e-5, atol=1e-6)  # same direction
  shell = np.asarray(prox.min_max_norm(x, 0.5 * c, c, 1.0, axis, epsilon=0.0), np.float64)
  np.testing.assert_allclose(_norms(shell, axis), np.clip(n, 0.5 * c, c), rtol=1e-6)


def test_projections_are_idempotent_and_keep_zero_groups_and_dtype():
  x = jnp.array([[3.0, 0.0, -1.0], [4.0, 0.0, 2.0]], jnp.bfloat16)
  for fn in [lambda x: prox.max_norm(x, 1.0, 0, epsilon=0.0),
             lambda x: prox.unit_norm(x, 0, epsilon=0.0),
             lambda x: prox.min_max_norm(x, 0.5, 1.0, 1.0, 0, epsilon=0.0),
             prox.non_negative]:
    once = fn(x)
    assert once.dtype == jnp.bfloat16
    chex.assert_trees_all_close(fn(once.astype(jnp.float32)), once.astype(jnp.float32),
                                rtol=1e-2)
    assert (np.asarray(once)[:, 1] == 0).all()  # the zero group stays 0, no NaN


def test_min_max_norm_rate_moves_part_of_the_way():
  x = jnp.array([[3.0], [4.0]])  # norm 5
  z = prox.min_max_norm(x, 0.0, 1.0, 0.25, 0, epsilon=0.0)
  np.testing.assert_allclose(_norms(z, 0), 0.25 * 1.0 + 0.75 * 5.0, rtol=1e-6)


def test_projection_gradients_are_finite_at_zero_groups():
  fns = [lambda x: prox.max_norm(x, 1.0, 0), lambda x: prox.unit_norm(x, 0),
         lambda x: prox.max_norm(x, 1.0, 0, epsilon=0.0)]
  grads = jax.jit(lambda x: [jax.grad(lambda x: jnp.sum(fn(x) ** 2))(x) for fn in fns])(
      jnp.zeros((3, 2)))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_jaxopt_conventions_documented_in_docs_keras_md():
  jaxopt_prox = pytest.importorskip("jaxopt.prox", reason="jaxopt is a test extra")
  jaxopt_projection = pytest.importorskip("jaxopt.projection", reason="jaxopt is a test extra")
  x = jax.random.normal(jax.random.key(3), (4, 5)) * 2
  lam, gam, s = 0.4, 0.7, 1.5
  pairs = jax.jit(lambda x: [
      (jaxopt_prox.prox_lasso(x, lam, s), prox.soft_threshold(x, s * lam)),
      (jaxopt_prox.prox_non_negative_lasso(x, lam, s), prox.nonneg_soft_threshold(x, s * lam)),
      (jaxopt_prox.prox_ridge(x, lam, s), prox.ridge(x, s * lam / 2)),
      (jaxopt_prox.prox_non_negative_ridge(x, lam, s), prox.nonneg_ridge(x, s * lam / 2)),
      (jaxopt_prox.prox_elastic_net(x, (lam, gam), s),
       prox.elastic_net(x, s * lam, s * lam * gam / 2)),
      (jaxopt_prox.prox_group_lasso(x, lam, s),
       prox.group_soft_threshold(x, s * lam, axis=None)),
      (jaxopt_projection.projection_non_negative(x), prox.non_negative(x)),
      (jaxopt_projection.projection_l2_ball(x, 1.5),
       prox.max_norm(x, 1.5, axis=None, epsilon=0.0)),
  ])(x)
  for theirs, ours in pairs:
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7)
