r"""Proximal operators on arrays.

The proximal map of a penalty :math:`R` with step :math:`t \ge 0` is

.. math::
  \operatorname{prox}_{tR}(v) = \arg\min_z\; t\,R(z) + \tfrac12 \lVert z - v \rVert_2^2 .

A proximal gradient step ``w <- prox_{lr·R}(w - lr·∇L0(w))`` minimizes ``L0 + R``
without differentiating ``R``; for the L1 penalty the prox is soft-thresholding, which
sets small coordinates to exactly 0 (a plain gradient step with ``λ·sign(w)`` only
oscillates around 0). The penalties follow jaxreg's convention: ``λΣ|w|`` and
``λΣw²`` (no ½). ``t`` may be a scalar or an array that broadcasts against ``x`` (one
threshold per coordinate, as preconditioned methods need).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_threshold(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_1`: :math:`\operatorname{sign}(x)\max(|x| - t, 0)`.

  Entries with :math:`|x| \le t` become exactly 0.

  >>> import jax.numpy as jnp
  >>> soft_threshold(jnp.array([-2.0, 0.5, 3.0]), 1.0)
  Array([-1.,  0.,  2.], dtype=float32)
  """
  x = jnp.asarray(x)
  t = jnp.asarray(t, x.dtype)
  # The same map as sign(x)·max(|x| - t, 0), but a zeroed entry is +0.0 (the product
  # gives -0.0 for negative x) and a NaN stays NaN.
  return x - jnp.clip(x, -t, t)


def hard_threshold(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_0` (the count of non-zeros).

  :math:`z_i = x_i` where :math:`|x_i| > \sqrt{2t}`, else 0: keeping :math:`x_i` costs
  :math:`t`, zeroing it costs :math:`x_i^2/2`. At :math:`|x_i| = \sqrt{2t}` both are
  minimizers and 0 is returned.

  >>> import jax.numpy as jnp
  >>> hard_threshold(jnp.array([-2.0, 0.5, 3.0]), 0.5)
  Array([-2.,  0.,  3.], dtype=float32)
  """
  x = jnp.asarray(x)
  t = jnp.asarray(t, x.dtype)
  return jnp.where(jnp.abs(x) > jnp.sqrt(2 * t), x, jnp.zeros((), x.dtype))


def ridge(x, t) -> jax.Array:
  r"""Prox of :math:`t\lVert z\rVert_2^2`: :math:`x / (1 + 2t)`.

  >>> import jax.numpy as jnp
  >>> ridge(jnp.array([3.0]), 1.0)
  Array([1.], dtype=float32)
  """
  x = jnp.asarray(x)
  return x / (1 + 2 * jnp.asarray(t, x.dtype))


def elastic_net(x, t1, t2) -> jax.Array:
  r"""Prox of :math:`t_1\lVert z\rVert_1 + t_2\lVert z\rVert_2^2`.

  :math:`\operatorname{soft\_threshold}(x, t_1) / (1 + 2t_2)`: the two maps compose
  because both act coordinate-wise and the second is a positive scaling.

  >>> import jax.numpy as jnp
  >>> elastic_net(jnp.array([-2.0, 0.5, 4.0]), 1.0, 0.5)
  Array([-0.5,  0. ,  1.5], dtype=float32)
  """
  return ridge(soft_threshold(x, t1), t2)


def group_norm(x, axis, keepdims: bool = False) -> jax.Array:
  r""":math:`\lVert x_g \rVert_2` over ``axis``, like ``jnp.linalg.norm(x, axis=axis)``.

  Its gradient at a zero group is 0 (a subgradient) instead of NaN.

  >>> import jax.numpy as jnp
  >>> group_norm(jnp.array([[3.0, 0.0], [4.0, 0.0]]), axis=0)
  Array([5., 0.], dtype=float32)
  """
  x = jnp.asarray(x)
  squares = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
  positive = squares > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1)), 0)


def group_soft_threshold(x, t, axis) -> jax.Array:
  r"""Prox of :math:`t\sum_g \lVert z_g\rVert_2`, groups reduced over ``axis``.

  :math:`z_g = \max(1 - t/\lVert x_g\rVert_2,\ 0)\,x_g`: a group whose norm is at most
  :math:`t` becomes exactly 0 as a whole, the others shrink towards 0 by :math:`t`
  in norm. ``axis`` means what it means in ``jnp.linalg.norm(x, axis=axis)``: for a
  Dense kernel of shape ``(in, out)``, ``axis=0`` makes one group per output unit.

  >>> import jax.numpy as jnp
  >>> group_soft_threshold(jnp.array([[3.0, 0.1], [4.0, 0.1]]), 1.0, axis=0)
  Array([[2.4, 0. ],
         [3.2, 0. ]], dtype=float32)
  """
  x = jnp.asarray(x)
  norms = group_norm(x, axis, keepdims=True)
  positive = norms > 0
  shrink = jnp.maximum(1 - jnp.asarray(t, x.dtype) / jnp.where(positive, norms, 1), 0)
  return jnp.where(positive, shrink, 0).astype(x.dtype) * x
