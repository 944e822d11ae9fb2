"""Noise in place of a mask: alpha dropout (SELU's saturation value in place of 0),
Gaussian dropout (multiplicative) and Gaussian noise (additive).

Each computes in float32 (float64 for a float64 ``x``) and rounds its result once to
``x``'s dtype (:mod:`jaxreg._dtypes`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import _safe
from jaxreg import masks
from jaxreg.stochastic import _draws

__all__ = ["alpha_dropout", "gaussian_dropout", "gaussian_noise"]

# SELU's constants (Klambauer et al., 2017): selu(x) -> -scale·alpha as x -> -inf.
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_ALPHA_PRIME = -_SELU_SCALE * _SELU_ALPHA


def alpha_dropout(key, x, rate, *, broadcast_dims: Sequence[int] = (),
                  deterministic: bool = False, exact: bool = False) -> jax.Array:
  r"""Alpha dropout (Klambauer et al., 2017), the dropout for SELU networks.

  A dropped entry is set to SELU's negative saturation value
  :math:`\alpha' = -\lambda\alpha \approx -1.7581` instead of 0, then an affine map
  restores zero mean and unit variance for standard-normal input:

  .. math::
    y = a\,(m \odot x + \alpha' (1 - m)) + b,\quad
    a = \big(q + \alpha'^2 q (1-q)\big)^{-1/2},\quad b = -a\,\alpha' (1-q).

  ``rate=1`` returns zeros (as PyTorch does), where the affine map is undefined.
  ``broadcast_dims`` shares one mask entry along those dims, as in
  :func:`jaxreg.dropout` (Keras's ``noise_shape``; ``(1, 2)`` on ``NHWC`` is PyTorch's
  ``FeatureAlphaDropout``); ``a`` and ``b`` are unchanged, since each entry is still
  kept with probability ``q``. ``exact`` draws the mask as in :func:`jaxreg.dropout`.

  >>> import jax, jax.numpy as jnp
  >>> alpha_dropout(jax.random.key(0), jnp.ones(3), 0.1).dtype
  dtype('float32')
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  if (shortcut := _draws.without_mask(x, rate, deterministic)) is not None:
    return shortcut
  keep = masks.keep_mask(key, x.shape, rate, broadcast_dims=broadcast_dims, exact=exact,
                         dtype=x.dtype)
  wide = _dtypes.wide(x.dtype)
  q = keep.keep_prob.astype(wide)
  a = jnp.where(q > 0, jax.lax.rsqrt(jnp.where(q > 0, q + _ALPHA_PRIME**2 * q * (1 - q), 1.0)), 0.0)
  b = -a * _ALPHA_PRIME * (1 - q)
  kept = jnp.where(keep.mask, x.astype(wide), jnp.asarray(_ALPHA_PRIME, wide))
  return (a * kept + b).astype(x.dtype)  # In float32 or wider, rounded once.


def gaussian_dropout(key, x, rate, *, deterministic: bool = False) -> jax.Array:
  r"""Gaussian dropout: multiplicative noise with the variance of dropout.

  :math:`y = x \odot \epsilon`, :math:`\epsilon \sim \mathcal{N}(1, p/(1-p))`
  (Srivastava et al., 2014, §10; Keras ``GaussianDropout``). ``E[y] = x``.
  ``rate=1`` (infinite variance) returns zeros.

  >>> import jax, jax.numpy as jnp
  >>> gaussian_dropout(None, jnp.ones(2), 0.5, deterministic=True)
  Array([1., 1.], dtype=float32)
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  if (shortcut := _draws.without_mask(x, rate, deterministic)) is not None:
    return shortcut
  wide = _dtypes.wide(x.dtype)
  rate = jnp.asarray(rate, wide)
  below_one = rate < 1
  # The true d(stddev)/d(rate) is infinite at 0; a traced rate gets 0 there, not NaN.
  stddev = _safe.safe_sqrt(_safe.safe_divide(rate, 1.0 - rate))
  # Noise in float32 (float64 for a float64 x), the product rounded once to x's dtype.
  noise = 1.0 + stddev * masks.standard_normal(key, x.shape, wide)
  return jnp.where(below_one, (x.astype(wide) * noise).astype(x.dtype),
                   jnp.zeros((), x.dtype))


def gaussian_noise(key, x, stddev, *, deterministic: bool = False) -> jax.Array:
  r"""Additive Gaussian noise: :math:`y = x + \sigma\,\epsilon`, :math:`\epsilon \sim \mathcal{N}(0, 1)`.

  ``stddev`` must be ``>= 0``; a traced negative or NaN ``stddev`` acts as 0.

  >>> import jax, jax.numpy as jnp
  >>> gaussian_noise(jax.random.key(0), jnp.zeros(4), 0.0)
  Array([0., 0., 0., 0.], dtype=float32)
  """
  x = _checks.check_floating(x)
  stddev = _checks.check_nonnegative(stddev, "stddev")
  if deterministic or not _draws.draws_at_stddev(stddev):
    return x
  wide = _dtypes.wide(x.dtype)
  noise = masks.standard_normal(key, x.shape, wide)
  # Drawn in float32 (float64 for a float64 x), the sum rounded once to x's dtype.
  return (x.astype(wide) + jnp.asarray(stddev, wide) * noise).astype(x.dtype)
