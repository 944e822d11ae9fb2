"""The generator: 32 random bits per element, a keyed hash of the element's index.

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

**16-bit words** (``top_half``; what a bfloat16 or float16 mask is decided on, see
:mod:`jaxreg.masks.threshold`) are the top half of a word of the same hash whose
second ``f`` leaves out its last step ``h ^ (h >> 16)``. That step changes only the
low half of ``f``'s output, so the top half is that of ``h(i)`` but for the carry of
the final ``+ x`` out of the low half: the same generator, read at 16 bits, two
integer operations per element cheaper. The feed-forward and the multiplier work as
above, and the dispersion and related-key tests run on these words too. On a CPU,
where a 16-bit dropout waits on the hash rather than on memory, the saving is 8% of
its time (measured side by side at ``2^22`` elements).

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

The noise variants draw no bits here: :func:`standard_normal` is threefry's normal.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks

__all__ = ["check_block", "hashed_words", "random_bits", "seed_words", "standard_normal",
           "words_at"]

_HASHABLE_SIZE = 2**32  # Indices (flat, or of a row and in it) must fit a uint32.


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


def _coordinates(block_shape: tuple[int, ...], start=None) -> list[jax.Array]:
  """Each dim's coordinate of the block of ``block_shape`` at ``start`` (the origin by
  default), as uint32: one iota of the block's shape per dimension.

  One iota per dimension (rather than a reshaped 1-D iota) lets the SPMD partitioner
  give each shard its own global indices without moving data; ``start`` may be traced
  (a loop counter, ``lax.axis_index``), which is what lets a block or a shard draw
  exactly its own part of a larger mask.
  """
  coords = []
  for dim in range(len(block_shape)):
    coord = jax.lax.broadcasted_iota(jnp.uint32, block_shape, dim)
    if start is not None:
      coord = coord + jnp.asarray(start[dim]).astype(jnp.uint32)
    coords.append(coord)
  return coords


def _flat_index(shape: tuple[int, ...], coords: Sequence) -> jax.Array:
  """Row-major index in an array of ``shape`` of the elements at ``coords`` (one
  integer array per dim, broadcasting against each other), as uint32."""
  index = jnp.zeros((), jnp.uint32)
  stride = 1
  for dim in reversed(range(len(shape))):
    index = index + jnp.asarray(coords[dim]).astype(jnp.uint32) * jnp.uint32(stride)
    stride *= shape[dim]
  return index


def check_block(shape: tuple[int, ...], start, block_shape) -> tuple[tuple, tuple[int, ...]]:
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

  >>> import jax
  >>> random_bits(jax.random.key(0), (2, 3)).dtype
  dtype('uint32')
  """
  return hashed_words(key, shape, start, block_shape, top_half=False)


def hashed_words(key, shape: Sequence[int], start, block_shape, top_half: bool):
  """:func:`random_bits`, or with ``top_half`` words of which only the top 16 bits are
  random (the 16-bit words of the module docstring)."""
  shape = tuple(int(n) for n in shape)
  blocked = block_shape is not None
  if blocked:
    start, block_shape = check_block(shape, start, block_shape)
  if _row_split(shape) is None:
    bits = jax.random.bits(key, shape, jnp.uint32)
    return jax.lax.dynamic_slice(bits, start, block_shape) if blocked else bits
  coords = _coordinates(block_shape if blocked else shape, start)
  return words_at(seed_words(key, shape), shape, coords, top_half)


def seed_words(key, shape: Sequence[int]) -> jax.Array:
  """The uint32 words the fast path draws from ``key`` (by threefry, once) for an
  array of ``shape``: ``(s0, s1)`` when one uint32 index covers it, four (two per row
  seed) when it is split into rows. ``ValueError`` for a shape with no such split,
  whose bits are threefry's own (module docstring).

  >>> import jax
  >>> seed_words(jax.random.key(0), (4, 8)).shape, seed_words(jax.random.key(0), (4, 2**30)).shape
  ((2,), (4,))
  """
  shape = tuple(int(n) for n in shape)
  split = _row_split(shape)
  if split is None:
    raise ValueError(f"an array of shape {shape} has no split into rows of fewer than "
                     "2^32 elements: its bits are threefry's, not a keyed hash")
  return jax.random.bits(key, (2 if split == 0 else 4,), jnp.uint32)


def words_at(seed, shape: Sequence[int], coords: Sequence, top_half: bool = False):
  """The words of the elements at ``coords`` of an array of ``shape``, from
  ``seed = seed_words(key, shape)``: :func:`hashed_words` at those elements, bit for
  bit, for any ``coords`` (one integer array or scalar per dim, broadcasting against
  each other: a kernel's tile, its program ids and two iotas).

  Row seeds are hashed from the row index alone, so the arrays of coordinates along
  the rows' dims may be smaller than the result (one row seed per batch entry and
  head, not per element).

  >>> import jax, jax.numpy as jnp, numpy as np
  >>> key, shape = jax.random.key(0), (3, 5)
  >>> rows, cols = jnp.arange(1, 3)[:, None], jnp.arange(2, 5)[None, :]
  >>> tile = words_at(seed_words(key, shape), shape, (rows, cols))
  >>> bool(np.array_equal(tile, random_bits(key, shape)[1:3, 2:5]))
  True
  """
  shape = tuple(int(n) for n in shape)
  split = _row_split(shape)
  if split == 0:
    return _keyed_hash(_flat_index(shape, coords), seed, top_half)
  rows = _flat_index(shape[:split], coords[:split])
  row_seed = (_keyed_hash(rows, seed[:2]), _keyed_hash(rows, seed[2:]))
  in_row = _flat_index(shape[split:], coords[split:])
  return _keyed_hash(in_row, row_seed, top_half)  # Row seeds stay whole words.


def _row_split(shape: tuple[int, ...]) -> int | None:
  """How ``shape`` is indexed: ``0`` when one uint32 index covers it, else the dim
  ``k`` that splits it into rows (dims ``[:k]``) and positions in a row (dims ``[k:]``),
  with as few rows as possible and both counts below ``2^32``; ``None`` when no
  split exists (a single dim of ``2^32`` entries or more, or ``2^32`` rows)."""
  def indexable(dims):
    return np.prod(dims, dtype=np.int64) < _HASHABLE_SIZE
  split = next(k for k in range(len(shape) + 1) if indexable(shape[k:]))
  return split if split == 0 or indexable(shape[:split]) else None


def standard_normal(key, shape: Sequence[int], dtype) -> jax.Array:
  """Independent ``N(0, 1)`` draws of ``shape`` and ``dtype``, for the noise variants.

  >>> import jax, jax.numpy as jnp
  >>> standard_normal(jax.random.key(0), (3,), jnp.float32).shape
  (3,)
  """
  return jax.random.normal(_checks.check_key(key), tuple(shape), dtype)
