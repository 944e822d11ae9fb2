r"""Adagrad-style proximal optimizers: proximal Adagrad and FTRL-proximal.

Both keep Adagrad's per-coordinate sum of squared gradients :math:`n_i`, and both
give exact zeros under L1 (the standard for sparse models of click data).

* :func:`prox_adagrad` is TensorFlow's ``ProximalAdagrad`` for any jaxreg regularizer:
  Adagrad's step, then the prox with the threshold scaled per coordinate by Adagrad's
  preconditioner, as :func:`prox_adam` does for Adam.
* :func:`ftrl` is ``keras.optimizers.Ftrl`` (McMahan et al., "Ad click prediction: a
  view from the trenches", KDD 2013), update for update at a constant learning rate;
  with a schedule it follows the paper, where Keras lets the weights shrink to 0.

>>> import jax, jax.numpy as jnp, optax, jaxreg as jr
>>> loss = lambda w: 0.5 * jnp.sum((w - jnp.array([1.0, 0.01])) ** 2)
>>> tx = jr.transforms.ftrl(0.5, l1=2.0)
>>> w = jnp.zeros(2)
>>> state = tx.init(w)
>>> for _ in range(100):
...   updates, state = tx.update(jax.grad(loss)(w), state, w)
...   w = optax.apply_updates(w, updates)
>>> w.round(2)
Array([1., 0.], dtype=float32)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxreg import _checks
from jaxreg import _safe
from jaxreg.regularizers import Regularizer
from jaxreg.transforms import _base


class ProxAdagradState(NamedTuple):
  """State of :func:`prox_adagrad` (``sum_of_squares`` as in ``optax.ScaleByRssState``)."""
  count: jax.Array  # shape=(), dtype=int32
  sum_of_squares: optax.Updates


class FtrlState(NamedTuple):
  r"""State of :func:`ftrl`: Keras's ``accumulator`` :math:`n` and ``linear`` :math:`z`,
  and the learning rate of the last step taken."""
  count: jax.Array  # shape=(), dtype=int32
  accumulator: optax.Updates
  linear: optax.Updates
  learning_rate: jax.Array  # shape=(), the default float dtype


def prox_adagrad(learning_rate: optax.ScalarOrSchedule, reg: Regularizer, *,
                 initial_accumulator_value: float = 0.1, eps: float = 1e-7
                 ) -> optax.GradientTransformation:
  r"""Proximal Adagrad: Adagrad's step, then the prox in Adagrad's metric.

  With :math:`n \leftarrow n + g^2` (from ``initial_accumulator_value``) and the
  per-coordinate step :math:`η_i = η_t/\sqrt{n_i + \epsilon}`:

  .. math:: w \leftarrow \operatorname{prox}_{η R}(w - η \odot g)

  For ``L1(λ)`` that is soft-thresholding at :math:`η_i λ`: TensorFlow's
  ``ProximalAdagrad`` with ``l1_regularization_strength=λ`` (and ``eps=0``). TF's
  ``l2_regularization_strength=μ`` divides by :math:`1 + η_i μ`, the prox of
  :math:`\tfrac{μ}{2}\sum w^2`, which is jaxreg's ``L2(μ/2)`` (jaxreg's ``L2(λ)`` is
  :math:`λ\sum w^2`). With a zero penalty it is ``optax.adagrad``. ``GroupLasso`` and
  the norm constraints have no closed-form prox with one step per coordinate and
  raise ``ValueError``; ``NonNeg`` and its sums with L1/L2 work.

  Args:
    learning_rate: a float or an Optax schedule.
    reg: a jaxreg regularizer whose prox accepts per-coordinate steps.
    initial_accumulator_value, eps: as in ``optax.adagrad``.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ProxAdagradState`.

  >>> import jax.numpy as jnp, jaxreg as jr
  >>> tx = prox_adagrad(1.0, jr.L1(0.5), initial_accumulator_value=0.0, eps=0.0)
  >>> w = jnp.array([2.0, 0.8])
  >>> updates, _ = tx.update(jnp.array([1.0, 1.0]), tx.init(w), w)
  >>> w + updates
  Array([0.5, 0. ], dtype=float32)
  """
  learning_rate = _base.check_learning_rate(learning_rate)
  reg = _base.check_separable(_base.check_regularizer(reg, prox=True), "prox_adagrad",
                             "optax.adagrad")
  _checks.check_nonnegative(initial_accumulator_value, "initial_accumulator_value")
  _checks.check_nonnegative(eps, "eps")
  rss = optax.scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps)

  def init_fn(params):
    return ProxAdagradState(count=jnp.zeros([], jnp.int32),
                            sum_of_squares=rss.init(params).sum_of_squares)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_base.NO_PARAMS_MSG)
    direction, rss_state = rss.update(updates, optax.ScaleByRssState(state.sum_of_squares))
    step = _base.learning_rate_at(learning_rate, state.count)
    # The per-coordinate step is the factor scale_by_rss applied to the gradient.
    steps = jax.tree.map(
        lambda n: step * jnp.where(n > 0, jax.lax.rsqrt(n + eps), 0.0),
        rss_state.sum_of_squares)
    updates = _base.prox_updates(reg, params, _base.descent(step, direction), steps)
    return updates, ProxAdagradState(count=optax.safe_increment(state.count),
                                     sum_of_squares=rss_state.sum_of_squares)

  return optax.GradientTransformation(init_fn, update_fn)


def ftrl(learning_rate: optax.ScalarOrSchedule, *, learning_rate_power: float = -0.5,
         initial_accumulator_value: float = 0.1, beta: float = 0.0, l1: float = 0.0,
         l2: float = 0.0, l2_shrinkage: float = 0.0) -> optax.GradientTransformation:
  r"""FTRL-proximal with Keras's update rule (``keras.optimizers.Ftrl``) at a constant rate.

  Per coordinate, with gradient :math:`g`, :math:`p =` ``-learning_rate_power``
  (:math:`\tfrac12` by default: Adagrad's :math:`\sqrt n`) and :math:`η_t` the learning
  rate:

  .. math::
    n' = n + g^2,\quad
    z \leftarrow z + g + 2 λ_s w - σ w,\quad
    w \leftarrow \frac{\mathrm{clip}(z, -λ_1, λ_1) - z}{(n'^{p} + β)/η_t + 2λ_2},
    \qquad σ = \frac{n'^{p} + β}{η_t} - \frac{n^{p} + β}{η_{t-1}},

  with :math:`λ_1 =` ``l1``, :math:`λ_2 =` ``l2``, :math:`λ_s =` ``l2_shrinkage``:
  Keras's ``l1_regularization_strength``, ``l2_regularization_strength`` and
  ``l2_shrinkage_regularization_strength``. A coordinate with :math:`|z| \le λ_1` is
  exactly 0. The L2 terms follow jaxreg's and Keras's convention :math:`λ\sum w^2`
  (gradient :math:`2λw`); ``l2_shrinkage`` acts through the gradient (it shrinks the
  weights but gives no zeros by itself). ``n`` starts at ``initial_accumulator_value``
  and ``z`` at 0. The weights are the closed-form minimizer, so they do not start from
  the initial params: the first update moves them there. Where the denominator is 0
  (``initial_accumulator_value=0``, no gradient yet, no L2 or ``beta``), Keras gives
  NaN and this gives 0.

  **Schedules.** :math:`σ` is the growth of the quadratic term :math:`(n^p + β)/η`
  from one step to the next, McMahan et al.'s :math:`σ_t = 1/η_t - 1/η_{t-1}` with
  :math:`η_{t-1}` the rate of the previous step. With a constant rate it is
  :math:`(n'^p - n^p)/η_t`, and the update is Keras's, step for step. With a schedule
  Keras divides by the current rate alone, so its weights shrink towards 0 as the
  rate decays (exactly 0 where the rate reaches 0); here a decaying rate slows the
  weights down, as it does in every other optimizer. A learning rate of 0 is a step
  not taken: weights, ``n`` and ``z`` stay.

  Args:
    learning_rate: :math:`η`, a float or an Optax schedule (read at the count before
      the step, as Keras reads its schedule at ``iterations``).
    learning_rate_power: ``<= 0``.
    initial_accumulator_value, beta, l1, l2, l2_shrinkage: ``>= 0``.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`FtrlState`.
  """
  learning_rate = _base.check_learning_rate(learning_rate)
  if not learning_rate_power <= 0:
    raise ValueError(f"learning_rate_power must be <= 0, got {learning_rate_power}")
  for name, value in [("initial_accumulator_value", initial_accumulator_value),
                      ("beta", beta), ("l1", l1), ("l2", l2),
                      ("l2_shrinkage", l2_shrinkage)]:
    _checks.check_nonnegative(value, name)
  power = -learning_rate_power

  def root(n):
    # n ** power; Adagrad's default square root is exact and cheaper as sqrt than as pow.
    return jnp.sqrt(n) if power == 0.5 else n**power

  def init_fn(params):
    # Before any step, the previous rate is the first one, as in Keras's first step.
    first = _base.learning_rate_at(learning_rate, jnp.zeros([], jnp.int32))
    return FtrlState(
        count=jnp.zeros([], jnp.int32),
        accumulator=optax.tree.full_like(params, initial_accumulator_value),
        linear=optax.tree.zeros_like(params),
        learning_rate=jnp.asarray(first, jnp.result_type(float)))

  def leaf_update(g, w, n, z, lr, previous):
    w = jnp.asarray(w)  # A Python-float leaf is a parameter too.
    lr = jnp.asarray(lr, w.dtype)
    # A learning rate of 0 is a step not taken: weights, accumulator and linear term
    # stay. (Keras's rule divides by the rate, and sets every weight to 0 there.)
    moving = lr > 0
    lr = jnp.where(moving, lr, 1)
    previous = jnp.asarray(previous, w.dtype)
    previous = jnp.where(previous > 0, previous, lr)  # No step taken yet.
    g = g.astype(w.dtype)
    new_n = n + jnp.square(g)
    old_root, new_root = root(n), root(new_n)
    # σ; its second term is exactly 0 while the rate stays the same (Keras's update).
    sigma = (new_root - old_root) / lr + (old_root + beta) * (1 / lr - 1 / previous)
    new_z = z + (g + 2 * l2_shrinkage * w) - sigma * w
    quadratic = new_root / lr + 2 * (l2 + beta / (2.0 * lr))
    numerator = jnp.clip(new_z, -l1, l1) - new_z
    new_w = _safe.safe_divide(numerator, quadratic)
    return (jnp.where(moving, new_w - w, 0).astype(w.dtype), jnp.where(moving, new_n, n),
            jnp.where(moving, new_z, z))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_base.NO_PARAMS_MSG)
    lr = _base.learning_rate_at(learning_rate, state.count)
    out = jax.tree.map(lambda g, w, n, z: leaf_update(g, w, n, z, lr, state.learning_rate),
                       updates, params, state.accumulator, state.linear)
    updates, accumulator, linear = (
        jax.tree.map(lambda _, parts: parts[i], updates, out) for i in range(3))
    lr = jnp.asarray(lr, state.learning_rate.dtype)
    return updates, FtrlState(count=optax.safe_increment(state.count),
                              accumulator=accumulator, linear=linear,
                              learning_rate=jnp.where(lr > 0, lr, state.learning_rate))

  return optax.GradientTransformation(init_fn, update_fn)
