"""Keep-masks: the one place where a PRNG key becomes random bits.

Every dropout variant in :mod:`jaxreg.dropout` asks :func:`keep_mask` for its mask, and
the noise variants ask :func:`standard_normal`, so how bits are drawn is decided here
alone.

**The fast path** (default). Dropout is a memory-bound elementwise op, yet drawing one
threefry word per element costs tens of times a copy of the array. Here the key is run
through threefry once, for a 64-bit seed ``(s0, s1)``, and each element gets its 32
bits from a keyed hash of its own index ``i`` in the (mask-shaped) array:

.. math::
  x = i \\oplus s_0,\\qquad
  h(i) = f\\big((f(x) + s_1)\\cdot m\\big) + x,\\qquad m = f(s_0) \\,|\\, 1,

where ``f`` is MurmurHash3's 32-bit finalizer (Appleby), a bijection with full
avalanche, and arithmetic is modulo ``2^32``. Two things in it are deliberate:

* *Adding* ``x`` *back* (a feed-forward, as in the Davies–Meyer construction) makes
  ``h`` a function that is not a bijection of the index: within one call words repeat
  at the birthday rate, about ``n^2/2^33`` times among ``n`` elements, as they do for
  threefry. A bijection draws its ``n`` words without replacement from ``2^32``
  values, which under-disperses the keep count of a mask by the factor
  ``1 - n/2^32``: a quarter of its variance at ``2^30`` elements.
* *The multiplier* ``m``, *derived from* ``s0`` *and applied after* ``s1``, ties the
  second round to both seed words. Without it (``h = f(f(i ⊕ s0) + s1)``), two keys
  whose ``s1`` agree, which among ``K`` keys happens for about ``K^2/2^33`` pairs,
  give masks that are exact copies of each other permuted by ``i -> i ⊕ s0 ⊕ s0'``.
  Here the second round's inputs for the same ``x`` agree only when ``s1`` and
  ``m`` both do, 63 bits of the seed (the odds of two threefry keys colliding are
  ``2^-64``); otherwise a relation ``mask'[i] = mask[π(i)]`` would need the two
  second-round outputs to differ by exactly ``x' - x`` at every element, an event of
  odds ``2^-32`` each.

Both cost two integer operations per element (one multiply, one add) over the bare
two rounds: nothing measurable where dropout waits on memory, about a tenth of a
float32 dropout's time (6 to 18% measured) where a busy CPU is the bottleneck.

**16-bit dtypes** (bfloat16, float16: ``dtype=`` of :func:`keep_mask`) decide each
entry on 16 bits, the top half of a word of the same hash whose second ``f`` leaves
out its last step ``h ^ (h >> 16)``. That step changes only the low half of ``f``'s
output, so the top half is that of ``h(i)`` but for the carry of the final ``+ x``
out of the low half: the same generator, read at 16 bits, two integer operations per
element cheaper. The feed-forward and the multiplier work as above, and the
dispersion and related-key tests run on these words too. On a CPU, where a 16-bit
dropout waits on the hash rather than on memory, the saving is 8% of its time
(measured side by side at ``2^22`` elements). The keep probability is then a multiple
of ``2^-16``, far finer than the 8 or 11 significant bits of a 16-bit value, and a
key's 16-bit mask is its float32 mask except where the top half is within 1 of the
threshold's 16 bits, at most 3 entries in ``2^16``.

The index is built from per-dimension iotas, so every device of a sharded array
computes the bits of its own elements, identical whatever the sharding, with no
communication, and a block of the mask can be drawn alone (``start``,
``block_shape``). This is a counter-based generator in the spirit of Philox and
threefry (Salmon et al., 2011) with a much cheaper round function: about twenty
integer operations per element. The statistical tests in ``tests/test_masks.py``
check what dropout relies on: keep fraction, keep-count dispersion, repeated words,
independence of neighbours, of bits and of keys, and of keys forced to share ``s1``.

**Arrays of** ``2^32`` **elements or more** (attention weights ``B·H·T^2`` in long
context) cannot be indexed by one uint32. Their shape is split at the dim ``k`` that
leaves the fewest rows: ``r`` is the row-major index over dims ``[:k]``, ``j`` the one
over dims ``[k:]``, both below ``2^32``, so the flat index is ``r·n + j`` for rows of
``n`` elements. The key then gives four threefry words, and every row its own seed:

.. math::
  s_0(r) = h_{w_0, w_1}(r),\\qquad s_1(r) = h_{w_2, w_3}(r),\\qquad
  \\text{bits}(r, j) = h_{s_0(r), s_1(r)}(j),

``h`` as above, multiplier ``f(s_0(r)) | 1`` included, all per element from iotas: a
block or a shard still draws its own part alone, with no communication. The two
properties carry over. Within a row ``h`` is the same feed-forward hash, and rows are
hashed under unrelated seeds, so words repeat at the birthday rate over the whole
array, which is nowhere a bijection. Two rows are related-key copies of each other
only if their ``s1`` and ``m`` agree, 63 bits from two hashes of distinct ``r`` under
independent 64-bit seeds: odds of about ``R^2/2^64`` among ``R`` rows (``R = 8`` for
``B, H, T = 8, 16, 8192``). Arrays below ``2^32`` keep the single index and exactly
their bits. A shape with no such split (one dim of ``2^32`` entries or more, or
``2^32`` rows) still falls back to threefry bits of the whole shape, and a block of it
draws the whole array and slices it.

Why one hash per element, even for 16-bit dtypes, rather than one word for two
elements: sharing a word saves generator work only where the compiled loop can share
it. XLA emits one computation per output element, so a word shared by two elements
is hashed twice (even laid out as ``(..., n/2, 2)``, where the pair is adjacent), or
written to memory and read back, or packed into a uint32 whose bitcast to two 16-bit
values is a pass of its own (XLA's CPU backend expands it into shifts and a
reduction): measured on CPU, 1.2 to 4.5 times slower than one hash per element. One
hash per element needs no data movement between elements, which is what keeps it
sharding-invariant. Timings against Flax and a copy floor are in
``benchmarks/results/``.

**The threshold.** Entry ``i`` is kept when the top ``b`` bits of its word are below
``q·2^b``, with ``q`` the float32 value of ``1 - rate`` rounded down to a multiple of
``2^-b`` (so ``|q - (1 - rate)| < 2^-b + 2^-24``): ``b = 24`` by default and for
float32 and wider, ``b = 16`` for 16-bit dtypes (:func:`resolution_bits`). So
``P(keep) = q`` exactly, and ``q`` is exact in float32: callers scale by the
probability the mask was truly drawn with, and ``E[m·x/q] = x`` holds up to the
rounding of the product. :func:`scale_kept` multiplies by ``s = 1/q`` rounded once to
float32 (``|q·s - 1| <= 2^-24``), on every backend and whether the rate is a constant
or traced. For bfloat16 and float16 the product is taken in float32 and rounded once,
so the 16-bit scale is still the realized ``q`` and not ``q`` rounded to 8 or 11 bits.

**The exact path** (``exact=True``) is ``jax.random.bernoulli(key, 1 - rate, shape)``,
draw for draw what ``flax.linen.Dropout`` and ``flax.nnx.Dropout`` use, so results are
bit-identical to theirs for the same key; its ``keep_prob`` is ``1 - rate`` as Flax
scales by it.

**The backward pass** of a masked op needs the mask. :func:`residual_policy` and
:func:`as_residual` let a caller keep it as 1 bit per element (``"packed"``) or keep
nothing and draw it again from the key (``"recompute"``), through ``jax.checkpoint``,
which leaves forward mode (``jvp``, ``jacfwd``) untouched.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from jaxreg import _checks
from jaxreg import _dtypes

_RESOLUTION_BITS = 24  # The most a float32 keep probability can resolve exactly.
_NARROW_RESOLUTION_BITS = 16  # Dtypes of 16 bits or fewer: a word's top half.
_HASHABLE_SIZE = 2**32  # Indices (flat, or of a row and in it) must fit a uint32.
RESIDUALS = ("recompute", "packed")
_MASK_NAME = "jaxreg_packed_mask"


class KeepMask(NamedTuple):
  """A boolean keep-mask and the keep probability it was drawn with."""
  mask: jax.Array
  """``bool``, of the requested shape with size 1 along the broadcast dims."""
  keep_prob: jax.Array
  """``float32`` scalar ``q``: ``P(mask_i = True)``, the factor to scale by."""


def mask_shape(shape: Sequence[int], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
  """``shape`` with the dims in ``broadcast_dims`` set to 1 (one draw shared along them)."""
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


def _finalize(h, top_half: bool = False):
  """MurmurHash3's ``fmix32``: a bijection of uint32 in which every input bit flips
  each output bit with probability close to 1/2.

  With ``top_half``, its last step ``h ^ (h >> 16)`` is left out: that step changes
  only the low 16 bits, so the top 16 are the same either way."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h if top_half else h ^ (h >> 16)


def _keyed_hash(index: jax.Array, seed: jax.Array, top_half: bool = False) -> jax.Array:
  """The fast path's ``h(i)`` (module docstring) for uint32 ``index`` and ``seed = (s0,
  s1)``: ``x = i ⊕ s0``, ``h = f((f(x) + s1)·m) + x`` with ``m = f(s0) | 1``. With
  ``top_half``, only the word's top 16 bits are meant to be read: ``f``'s last step
  is left out of the second round (the 16-bit words of the module docstring)."""
  x = index ^ seed[0]
  multiplier = _finalize(seed[0]) | jnp.uint32(1)  # Odd: multiplying stays a bijection.
  return _finalize((_finalize(x) + seed[1]) * multiplier, top_half) + x


def _flat_index(shape: tuple[int, ...], start=None, block_shape=None) -> jax.Array:
  """Row-major index in an array of ``shape`` of every element of the block of
  ``block_shape`` at ``start`` (the whole array by default), as uint32, from
  per-dimension iotas.

  One iota per dimension (rather than a reshaped 1-D iota) lets the SPMD partitioner
  give each shard its own global indices without moving data; ``start`` may be traced
  (a loop counter, ``lax.axis_index``), which is what lets a block or a shard draw
  exactly its own part of a larger mask.
  """
  block_shape = shape if block_shape is None else block_shape
  index = jnp.zeros(block_shape, jnp.uint32)
  stride = 1
  for dim in reversed(range(len(shape))):
    coord = jax.lax.broadcasted_iota(jnp.uint32, block_shape, dim)
    if start is not None:
      coord = coord + jnp.asarray(start[dim]).astype(jnp.uint32)
    index = index + coord * jnp.uint32(stride)
    stride *= shape[dim]
  return index


def _check_block(shape: tuple[int, ...], start, block_shape) -> tuple[tuple, tuple[int, ...]]:
  """``start`` and ``block_shape`` checked against ``shape``: one entry per dim, the
  block inside the array wherever ``start`` is concrete."""
  block_shape = tuple(int(n) for n in block_shape)
  start = tuple(start)
  if len(start) != len(shape) or len(block_shape) != len(shape):
    raise ValueError(
        f"start {start} and block_shape {block_shape} need one entry per dim of {shape}")
  for dim, (begin, size, full) in enumerate(zip(start, block_shape, shape)):
    if not 0 <= size <= full:
      raise ValueError(f"block_shape {block_shape} does not fit in shape {shape}")
    if not isinstance(begin, jax.core.Tracer) and not 0 <= int(begin) <= full - size:
      raise ValueError(f"start {start} puts the block of shape {block_shape} outside "
                       f"an array of shape {shape} (dim {dim})")
  return start, block_shape


def random_bits(key, shape: Sequence[int], *, start: Sequence | None = None,
                block_shape: Sequence[int] | None = None) -> jax.Array:
  """32 random bits per element (``uint32`` of ``shape``), by the fast path above.

  With ``start`` and ``block_shape``, only the block ``[start, start + block_shape)``
  of those bits, equal to ``random_bits(key, shape)[start:start + block_shape]``;
  ``start`` may hold traced integers, whose range is the caller's to keep.
  """
  return _hashed_words(key, shape, start, block_shape, top_half=False)


def _hashed_words(key, shape: Sequence[int], start, block_shape, top_half: bool):
  """:func:`random_bits`, or with ``top_half`` words of which only the top 16 bits are
  random (the 16-bit words of the module docstring)."""
  shape = tuple(int(n) for n in shape)
  blocked = block_shape is not None
  if blocked:
    start, block_shape = _check_block(shape, start, block_shape)
  split = _row_split(shape)
  if split is None:
    bits = jax.random.bits(key, shape, jnp.uint32)
    return jax.lax.dynamic_slice(bits, start, block_shape) if blocked else bits
  if split == 0:
    seed = jax.random.bits(key, (2,), jnp.uint32)
    return _keyed_hash(_flat_index(shape, start, block_shape), seed, top_half)
  return _keyed_hash_by_rows(key, shape, split, start, block_shape, top_half)


def _row_split(shape: tuple[int, ...]) -> int | None:
  """How ``shape`` is indexed: ``0`` when one uint32 index covers it, else the dim
  ``k`` that splits it into rows (dims ``[:k]``) and positions in a row (dims ``[k:]``),
  with as few rows as possible and both counts below ``2^32``; ``None`` when no
  split exists (a single dim of ``2^32`` entries or more, or ``2^32`` rows)."""
  def indexable(dims):
    return np.prod(dims, dtype=np.int64) < _HASHABLE_SIZE
  split = next(k for k in range(len(shape) + 1) if indexable(shape[k:]))
  return split if split == 0 or indexable(shape[:split]) else None


def _keyed_hash_by_rows(key, shape, split, start, block_shape, top_half) -> jax.Array:
  """The bits of an array of ``2^32`` elements or more, split at dim ``split``: row
  ``r`` gets its own seed ``(h(r), h'(r))`` and its elements the hash of their index
  in the row under it (module docstring)."""
  blocked = block_shape is not None
  block_shape = block_shape if blocked else shape
  start = start if blocked else (0,) * len(shape)
  rows_shape = block_shape[:split] + (1,) * (len(shape) - split)
  rows = _flat_index(shape[:split], start[:split], block_shape[:split])
  rows = rows.reshape(rows_shape)
  words = jax.random.bits(key, (4,), jnp.uint32)
  row_seed = (_keyed_hash(rows, words[:2]), _keyed_hash(rows, words[2:]))
  in_row = _flat_index(shape[split:], start[split:], block_shape[split:])
  return _keyed_hash(in_row, row_seed, top_half)  # Row seeds stay whole words.


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
      start, block_shape = _check_block(shape, start, block_shape)
      mask = jax.lax.dynamic_slice(mask, start, block_shape)
    return KeepMask(mask, keep)
  keep = jnp.asarray(keep_probability(rate, dtype), jnp.float32)
  level = (keep * 2**bits).astype(jnp.uint32)  # Exact: keep is a multiple of 2^-bits.
  words = _hashed_words(key, shape, start, block_shape,
                        top_half=bits <= _NARROW_RESOLUTION_BITS)
  return KeepMask((words >> (32 - bits)) < level, keep)


def keep_probability(rate, dtype=None):
  r"""The keep probability ``q`` that :func:`keep_mask`'s fast path draws with, for
  ``rate`` :math:`p` and an array of ``dtype``:
  :math:`q = \lfloor \mathrm{fl}_{32}(1 - p)\cdot 2^b \rfloor / 2^b`, the float32 value
  of ``1 - rate`` rounded down to a multiple of ``2^-b``, ``b`` from
  :func:`resolution_bits`.

  A concrete ``rate`` gives a Python float, known while tracing: :func:`scale_kept`
  uses it to pick its rounding once, at trace time. A traced ``rate`` gives a float32
  scalar; being float32 already, its ``1 - rate`` is a float32 subtraction.

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
  q = jnp.asarray(keep_prob, jnp.float32)
  wide = _dtypes.wide(x.dtype)
  scale = 1 / jnp.where(q > 0, q, 1.0).astype(wide)
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
  return _away_matches_even_at(float(np.float32(1) / (q if q > 0 else np.float32(1))))


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


def standard_normal(key, shape: Sequence[int], dtype) -> jax.Array:
  """Independent ``N(0, 1)`` draws of ``shape`` and ``dtype``, for the noise variants."""
  return jax.random.normal(_checks.check_key(key), tuple(shape), dtype)


def check_residual(residual: str | None, exact: bool) -> str:
  """The backward residual to use: ``None`` picks ``"recompute"`` for the fast path
  (a hash is as cheap as unpacking bits) and ``"packed"`` for the exact one (threefry
  is not)."""
  if residual is None:
    return "packed" if exact else "recompute"
  if residual not in RESIDUALS:
    raise ValueError(f"residual must be one of {RESIDUALS} or None, got {residual!r}")
  return residual


def residual_policy(residual: str):
  """The ``jax.checkpoint`` policy that saves what ``residual`` names and nothing else."""
  if residual == "packed":
    return jax.checkpoint_policies.save_only_these_names(_MASK_NAME)
  return jax.checkpoint_policies.nothing_saveable


def as_residual(mask: jax.Array, residual: str) -> jax.Array:
  """``mask`` routed so that, under :func:`residual_policy`, the backward pass keeps
  it as 1 bit per element (``"packed"``) or nothing (``"recompute"``)."""
  if residual != "packed":
    return mask
  packed = checkpoint_name(pack(mask), _MASK_NAME)
  return unpack(packed, mask.shape)


def pack(mask: jax.Array) -> jax.Array:
  """Packs a bool mask into uint32 words along its last axis (padded to 32):
  bit ``j`` of word ``k`` is entry ``32k + j``."""
  mask = jnp.atleast_1d(mask)
  if mask.size == 0:  # No entry to pack: reshaping to (..., -1, 32) would divide by 0.
    return jnp.zeros((*mask.shape[:-1], -(-mask.shape[-1] // 32)), jnp.uint32)
  pad = -mask.shape[-1] % 32
  mask = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)])
  lanes = mask.reshape(*mask.shape[:-1], -1, 32).astype(jnp.uint32)
  return jnp.sum(lanes << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def unpack(words: jax.Array, shape: Sequence[int]) -> jax.Array:
  """The inverse of :func:`pack` for a mask of ``shape``."""
  shape = tuple(shape)
  if math.prod(shape) == 0:
    return jnp.zeros(shape, bool)
  lanes = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
  flat = lanes.reshape(*words.shape[:-1], -1)[..., :(shape[-1] if shape else 1)]
  return flat.astype(bool).reshape(shape)
