"""Scaling the kept entries: inverted dropout's ``m·x/q``, the one home for its arithmetic.

The fast path's ``q`` is exact in float32 (:mod:`jaxreg.masks.threshold`), so callers
scale by the probability the mask was truly drawn with, and ``E[m·x/q] = x`` holds up
to the rounding of the product. :func:`scale_kept` multiplies by ``s = 1/q`` rounded
once to float32 (``|q·s - 1| <= 2^-24``), on every backend and whether the rate is a
constant or traced. For bfloat16 and float16 the product is taken in float32 and
rounded once, so the 16-bit scale is still the realized ``q`` and not ``q`` rounded to
8 or 11 bits.

The exact path scales as Flax does, by :func:`exact_keep_prob`, so that it is
bit-identical to Flax. :func:`apply_keep` picks between the two (and classic dropout's
unscaled ``m·x``) for every caller: :func:`jaxreg.dropout` and the attention dropout of
:mod:`jaxreg.attention` alike.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _dtypes
from jaxreg import _safe
from jaxreg.masks import threshold

__all__ = ["apply_keep", "exact_keep_prob", "scale_kept"]


def apply_keep(x: jax.Array, mask: jax.Array, rate, *, mode: str = "inverted",
               exact: bool = False, mask_dtype=None, multiplier_dtype=None) -> jax.Array:
  r"""Dropout's output from its keep-mask: ``x``'s kept entries, scaled as ``mode``
  says, and 0 elsewhere.

  * ``mode="classic"``: :math:`m \odot x`, unscaled.
  * ``mode="inverted"``: :math:`m \odot x / q`. The fast path is :func:`scale_kept`
    by the ``q`` the mask was drawn with, :func:`keep_probability` of ``rate`` for
    ``mask_dtype`` (``x``'s dtype by default). ``exact=True`` is Flax's arithmetic
    with :func:`exact_keep_prob`, bit for bit: ``flax.linen.Dropout``'s ``x / q`` in
    ``x``'s dtype, or, given ``multiplier_dtype``, Flax attention's ``x · (m / q)``
    with the factor formed in ``multiplier_dtype`` (like Flax, off by the rounding of
    ``q`` in bfloat16).

  ``rate`` is the drop probability the mask was drawn at, checked (a Python float) or
  traced.

  >>> import jax.numpy as jnp
  >>> x, m = jnp.ones(3), jnp.array([True, False, True])
  >>> apply_keep(x, m, 0.5)
  Array([2., 0., 2.], dtype=float32)
  >>> apply_keep(x, m, 0.5, mode="classic")
  Array([1., 0., 1.], dtype=float32)
  """
  if mode == "classic":
    return jnp.where(mask, x, jnp.zeros((), x.dtype))
  if not exact:  # keep_prob's value, a Python float for a constant rate: rounds faster.
    keep_prob = threshold.keep_probability(rate, x.dtype if mask_dtype is None else mask_dtype)
    return scale_kept(x, mask, keep_prob)
  if multiplier_dtype is None:
    return jnp.where(mask, x / exact_keep_prob(rate, x.dtype), jnp.zeros((), x.dtype))
  keep = jnp.asarray(exact_keep_prob(rate, multiplier_dtype), multiplier_dtype)
  return x * (mask.astype(multiplier_dtype) / keep)


def exact_keep_prob(rate, dtype):
  """Flax's divisor ``1 - rate``: a Python float for a known rate, as Flax has it (so a
  weak type, which takes ``dtype``, float64 under x64 included); a traced rate's
  float32 ``1 - rate`` in ``dtype``. 1 where it is 0 (a rate of 1, where the mask keeps
  nothing), so no ``0/0``.

  >>> exact_keep_prob(0.25, None), exact_keep_prob(1.0, None)
  (0.75, 1.0)
  """
  if isinstance(rate, float):
    return 1.0 - rate if rate < 1.0 else 1.0
  keep = (1.0 - rate).astype(dtype)
  return jnp.where(keep > 0, keep, jnp.ones((), dtype))


def scale_kept(x: jax.Array, mask: jax.Array, keep_prob) -> jax.Array:
  r"""Inverted dropout's :math:`m \odot x / q`: ``x · s`` where ``mask``, else 0, with
  :math:`s = 1/q` rounded once to float32 (or to ``x``'s dtype, if wider).

  ``q`` is the keep probability as the mask was drawn. The product is taken in float32
  (or ``x``'s dtype, if wider) and rounded once to ``x``'s dtype: a bfloat16 or float16
  ``x`` is scaled by the realized keep probability itself, not by ``q`` first rounded
  to 8 or 11 bits, which would bias :math:`E[y]` by up to :math:`2^{-9}` of ``x``.
  The product by ``s`` is what XLA makes of a division by a scalar anyway (on CPU, for
  a constant and a traced ``q`` alike); written out, it is the same on every backend.
  It differs from the correctly rounded ``x/q`` by at most one unit in the last place
  of the float32 product. ``keep_prob == 0`` (a traced rate of 1, where the mask keeps
  nothing) gives zeros. A concrete ``keep_prob`` (a Python float, as
  :func:`keep_probability` gives for a constant rate) lets a bfloat16 ``x`` on CPU use
  a cheaper rounding, chosen while tracing only where it gives the same bits.

  >>> import jax.numpy as jnp
  >>> scale_kept(jnp.ones(3, jnp.bfloat16), jnp.array([True, False, True]), 0.75)
  Array([1.33594, 0, 1.33594], dtype=bfloat16)
  """
  q = jnp.asarray(keep_prob, jnp.float32).astype(_dtypes.wide(x.dtype))
  scale = _safe.safe_reciprocal(q, zero_as=1.0)  # At q = 0 nothing is kept.
  if x.dtype == jnp.bfloat16:
    return _scale_kept_bfloat16(x, mask, scale, _away_matches_even(keep_prob))
  return _scale_kept_converting(x, mask, scale)


def _scale_kept_converting(x, mask, scale):
  return jnp.where(mask, x.astype(scale.dtype) * scale, 0).astype(x.dtype)


def _away_matches_even(keep_prob) -> bool:
  """Whether rounding half away from zero gives the same bits as ties to even for every
  bfloat16 ``x`` times ``s = 1/q`` in float32. ``False`` when ``keep_prob`` is traced
  (or not a scalar)."""
  if isinstance(keep_prob, jax.core.Tracer) or np.ndim(keep_prob) != 0:
    return False
  q = np.float32(keep_prob)
  # At q = 0, s = 1 (scale_kept): a bfloat16 times 1 is a bfloat16, with no tie.
  return not q > 0 or _away_matches_even_at(float(np.float32(1) / q))


@functools.lru_cache(maxsize=64)
def _away_matches_even_at(scale: float) -> bool:
  """:func:`_away_matches_even`, checked on every bfloat16 value (2^16 products, about
  0.2 ms once per scale). The two differ only on a product exactly halfway between two
  bfloat16 values whose lower one is even: low 17 bits ``0 1000...0``. Where XLA
  flushes subnormals to zero, its products are those checked here or zeros."""
  every_bfloat16 = (np.arange(2**16, dtype=np.uint32) << 16).view(np.float32)
  with np.errstate(over="ignore", invalid="ignore"):  # inf, and signalling NaNs.
    bits = (every_bfloat16 * np.float32(scale)).view(np.uint32)
  return not np.any(bits & 0x1FFFF == 0x8000)


def _scale_kept_rounding_bits(x, mask, scale, round_away):
  """bfloat16 ``m·x·s`` with the float32 -> bfloat16 rounding (to nearest, ties to
  even) done on the integer bits: on CPU, XLA's own conversion makes this loop about
  1.5 times slower (``benchmarks/``), enough to make bfloat16 dropout slower than
  float32.

  With ``round_away`` (:func:`_away_matches_even`, decided while tracing), it rounds
  half away from zero instead, in two integer operations fewer, where that gives the
  same bits: the loop is 7 to 9% faster. That is every rate from 0.001 to 0.999 in
  steps of 0.001 at the 16-bit resolution of :func:`keep_probability`, and all but
  about 0.04% of its ``2^16`` levels; a traced rate rounds to even.

  NaN needs no case of its own: ``s`` is finite and positive, so the product is NaN
  only where ``x`` is, and IEEE multiplication returns that NaN made quiet (or the
  default NaN): either way its low 16 bits are those of a widened bfloat16, zero, the
  rounding adds no carry, and the top half is a quiet NaN with ``x``'s sign and
  payload."""
  product = x.astype(jnp.float32) * scale
  bits = jax.lax.bitcast_convert_type(product, jnp.uint32)
  if round_away:
    rounded = (bits + jnp.uint32(0x8000)) >> 16
  else:
    rounded = (bits + jnp.uint32(0x7FFF) + ((bits >> 16) & jnp.uint32(1))) >> 16
  kept = jnp.where(mask, rounded, jnp.uint32(0)).astype(jnp.uint16)
  return jax.lax.bitcast_convert_type(kept, jnp.bfloat16)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _scale_kept_bfloat16(x, mask, scale, round_away):
  # Elsewhere the backend's own conversion is native and fast.
  cpu = functools.partial(_scale_kept_rounding_bits, round_away=round_away)
  return jax.lax.platform_dependent(x, mask, scale, cpu=cpu,
                                    default=_scale_kept_converting)


@_scale_kept_bfloat16.defjvp
def _scale_kept_bfloat16_jvp(round_away, primals, tangents):
  # Integer bit operations have no transpose: tangents take the converting form,
  # which rounds the same way, so that reverse mode works through them.
  x, mask, scale = primals
  dx, _, dscale = tangents
  wide = jnp.where(mask, x.astype(jnp.float32), 0)
  tangent = jnp.where(mask, dx.astype(jnp.float32) * scale, 0) + wide * dscale
  return _scale_kept_bfloat16(x, mask, scale, round_away), tangent.astype(jnp.bfloat16)
