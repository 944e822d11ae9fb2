"""The threshold: the one place where a key becomes a keep-mask.

Entry ``i`` is kept when the top ``b`` bits of its word (:mod:`jaxreg.masks.hashing`)
are below ``q·2^b``, with ``q`` the float32 value of ``1 - rate`` rounded down to a
multiple of ``2^-b`` (so ``|q - (1 - rate)| < 2^-b + 2^-24``): ``b = 24`` by default
and for float32 and wider, ``b = 16`` for 16-bit dtypes (:func:`resolution_bits`). So
``P(keep) = q`` exactly, and ``q`` is exact in float32: callers scale by the
probability the mask was truly drawn with (:mod:`jaxreg.masks.scaling`).

**16-bit dtypes** (bfloat16, float16: ``dtype=`` of :func:`keep_mask`) decide each
entry on 16 bits, the top half of a cheaper word of the same hash. The keep
probability is then a multiple of ``2^-16``, far finer than the 8 or 11 significant
bits of a 16-bit value, and a key's 16-bit mask is its float32 mask except where the
top half is within 1 of the threshold's 16 bits, at most 3 entries in ``2^16``.

**The exact path** (``exact=True``) is ``jax.random.bernoulli(key, 1 - rate, shape)``,
draw for draw what ``flax.linen.Dropout`` and ``flax.nnx.Dropout`` use, so results are
bit-identical to theirs for the same key; its ``keep_prob`` is ``1 - rate`` as Flax
scales by it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg.masks import hashing

__all__ = ["KeepMask", "keep_level", "keep_mask", "keep_probability", "kept", "mask_shape",
           "resolution_bits", "top_half"]

_RESOLUTION_BITS = 24  # The most a float32 keep probability can resolve exactly.
_NARROW_RESOLUTION_BITS = 16  # Dtypes of 16 bits or fewer: a word's top half.


class KeepMask(NamedTuple):
  """A boolean keep-mask and the keep probability it was drawn with."""
  mask: jax.Array
  """``bool``, of the requested shape with size 1 along the broadcast dims."""
  keep_prob: jax.Array
  """``float32`` scalar ``q``: ``P(mask_i = True)``, the factor to scale by."""


def mask_shape(shape: Sequence[int], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
  """``shape`` with the dims in ``broadcast_dims`` set to 1 (one draw shared along them).

  >>> mask_shape((2, 3, 4), (0, -1))
  (1, 3, 1)
  """
  ndim = len(shape)
  if isinstance(broadcast_dims, (str, bytes)) or not hasattr(broadcast_dims, "__iter__"):
    raise TypeError("broadcast_dims must be a sequence of ints (dims that share one mask "
                    f"entry), got {type(broadcast_dims).__name__}: {broadcast_dims!r}; "
                    "write (1,) for one dim")
  dims = set()
  for dim in broadcast_dims:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
      raise TypeError(f"broadcast_dims entries must be ints, got {dim!r} in {broadcast_dims!r}")
    if not -ndim <= dim < ndim:
      raise ValueError(
          f"broadcast_dims entry {dim} is out of range for an array of shape {tuple(shape)}")
    dims.add(dim % ndim)
  return tuple(1 if i in dims else int(size) for i, size in enumerate(shape))


def resolution_bits(dtype=None) -> int:
  """How many bits of its word decide an entry's keep, for a mask applied to an array
  of ``dtype``: 16 for dtypes of 16 bits or fewer (bfloat16, float16), else 24
  (float32 and wider, and ``None``). The keep probability is a multiple of
  ``2^-bits``.

  >>> import jax.numpy as jnp
  >>> resolution_bits(jnp.float32), resolution_bits(jnp.bfloat16)
  (24, 16)
  """
  if dtype is None:
    return _RESOLUTION_BITS
  try:
    itemsize = np.dtype(dtype).itemsize
  except TypeError:
    raise TypeError(f"dtype must be a dtype or None, got {dtype!r}") from None
  return _NARROW_RESOLUTION_BITS if itemsize <= 2 else _RESOLUTION_BITS


def keep_mask(key, shape: Sequence[int], rate, *, broadcast_dims: Sequence[int] = (),
              exact: bool = False, start: Sequence | None = None,
              block_shape: Sequence[int] | None = None, dtype=None) -> KeepMask:
  """Draws a keep-mask with ``P(keep) = 1 - rate``, shared along ``broadcast_dims``.

  Args:
    key: a typed (``jax.random.key``) or legacy (``jax.random.PRNGKey``) key.
    shape: the shape of the array the mask applies to.
    rate: the drop probability: a float in ``[0, 1]``, or a traced scalar, which is
      clipped to ``[0, 1]`` (NaN drops everything).
    broadcast_dims: dims along which one draw is shared (size 1 in the mask).
    exact: draw with ``jax.random.bernoulli`` as Flax does, instead of the fast path.
    start, block_shape: draw only the block ``[start, start + block_shape)`` of the
      mask of ``shape``, bit for bit the same as slicing the whole mask (entries along
      ``broadcast_dims`` are ignored there). The fast path draws the block alone, so a
      loop over blocks or a shard inside ``shard_map`` pays for its own part only;
      ``start`` may be traced. With ``exact=True`` the whole mask is drawn and sliced.
    dtype: the dtype of the array the mask applies to, which sets the threshold's
      resolution (:func:`resolution_bits`): a 16-bit dtype draws from the top 16 bits
      of a cheaper word, at ``2^-16``; ``None`` and wider dtypes at ``2^-24``. The
      exact path ignores it.

  Returns:
    A :class:`KeepMask`; ``mask`` broadcasts against ``shape`` (or ``block_shape``).

  >>> import jax, numpy as np
  >>> m = keep_mask(jax.random.key(0), (2, 3), 0.5, broadcast_dims=(0,))
  >>> m.mask.shape, float(m.keep_prob)
  ((1, 3), 0.5)
  >>> whole = keep_mask(jax.random.key(0), (4, 6), 0.5).mask
  >>> part = keep_mask(jax.random.key(0), (4, 6), 0.5, start=(2, 3), block_shape=(2, 3))
  >>> bool(np.array_equal(part.mask, whole[2:, 3:]))
  True
  """
  key = _checks.check_key(key)
  rate = _checks.check_rate(rate)
  bits = resolution_bits(dtype)
  full = tuple(int(n) for n in shape)
  shape = mask_shape(full, broadcast_dims)
  if (start is None) != (block_shape is None):
    raise ValueError("start and block_shape go together: give both or neither, got "
                     f"start={start!r}, block_shape={block_shape!r}")
  if block_shape is not None:
    if len(tuple(start)) != len(full):
      raise ValueError(f"start {tuple(start)} needs one entry per dim of {full}")
    # Along a broadcast dim the mask has one entry: the block takes it whole.
    start = tuple(0 if n == 1 else s for s, n in zip(start, shape))
    block_shape = mask_shape(tuple(block_shape), broadcast_dims)
  if exact:
    keep = jnp.asarray(1.0 - rate, jnp.float32)
    # Flax passes 1 - rate as a Python float, which bernoulli draws against in the
    # default float dtype: float64 under x64. A known rate does the same, for Flax's bits.
    mask = jax.random.bernoulli(key, 1.0 - rate if isinstance(rate, float) else keep, shape)
    if block_shape is not None:
      start, block_shape = hashing.check_block(shape, start, block_shape)
      mask = jax.lax.dynamic_slice(mask, start, block_shape)
    return KeepMask(mask, keep)
  keep = jnp.asarray(keep_probability(rate, dtype), jnp.float32)
  words = hashing.hashed_words(key, shape, start, block_shape, top_half=top_half(bits))
  return KeepMask(kept(words, keep_level(keep, bits), bits), keep)


def top_half(bits: int) -> bool:
  """Whether masks of ``bits`` bits are decided on the top half of each hashed word
  (16 bits or fewer: the hash skips its last step).

  >>> top_half(resolution_bits(jnp.bfloat16)), top_half(resolution_bits(jnp.float32))
  (True, False)
  """
  return bits <= _NARROW_RESOLUTION_BITS


def keep_level(keep_prob, bits: int) -> jax.Array:
  r"""The threshold :math:`q\cdot 2^{b}` as a uint32: exact, since ``keep_prob`` (from
  :func:`keep_probability`) is a multiple of :math:`2^{-b}`.

  >>> keep_level(0.75, 16)
  Array(49152, dtype=uint32)
  """
  return (jnp.asarray(keep_prob, jnp.float32) * 2**bits).astype(jnp.uint32)


def kept(words, level, bits: int) -> jax.Array:
  """The keep bits: ``True`` where a word's top ``bits`` bits are below ``level``
  (:func:`keep_level`), which happens with probability exactly ``level / 2^bits``.
  :func:`keep_mask` and the Pallas attention kernel decide every mask here.

  >>> import jax.numpy as jnp
  >>> kept(jnp.array([0, 2**31], jnp.uint32), keep_level(0.5, 24), 24)
  Array([ True, False], dtype=bool)
  """
  return (words >> (32 - bits)) < level


def keep_probability(rate, dtype=None):
  r"""The keep probability ``q`` that :func:`keep_mask`'s fast path draws with, for
  ``rate`` :math:`p` and an array of ``dtype``:
  :math:`q = \lfloor \mathrm{fl}_{32}(1 - p)\cdot 2^b \rfloor / 2^b`, the float32 value
  of ``1 - rate`` rounded down to a multiple of ``2^-b``, ``b`` from
  :func:`resolution_bits`.

  A concrete ``rate`` gives a Python float, known while tracing:
  :func:`jaxreg.masks.scale_kept` uses it to pick its rounding once, at trace time. A
  traced ``rate`` gives a float32 scalar; being float32 already, its ``1 - rate`` is a
  float32 subtraction.

  >>> import jax.numpy as jnp
  >>> keep_probability(0.1), keep_probability(0.1, jnp.bfloat16)
  (0.8999999761581421, 0.899993896484375)
  """
  rate = _checks.check_rate(rate)
  levels = 2.0**resolution_bits(dtype)
  # q·2^bits and its floor are exact in float32, and so is the realized q = level/2^bits.
  xp = jnp if isinstance(rate, jax.Array) else np
  q = xp.floor(xp.float32(1.0 - rate) * levels) / levels
  return q if xp is jnp else float(q)
