r"""Dot-product attention with dropout on the attention weights, drawn by :mod:`jaxreg.masks`.

:func:`dot_product_attention` has the signature and semantics of
``flax.linen.dot_product_attention`` (and takes ``is_causal`` as
``flax.nnx.dot_product_attention`` does), so it is a drop-in ``attention_fn=`` for
``flax.linen.MultiHeadDotProductAttention`` and ``flax.nnx.MultiHeadAttention``:

.. math::
  W = \mathrm{softmax}\Big(\frac{QK^\top}{\sqrt{d}} + B,\ \text{masked}\Big),\qquad
  Y = \Big(W \odot \frac{M}{q}\Big)\,V,\qquad M_{ij} \sim \mathrm{Bernoulli}(q),\ q = 1 - p,

per batch entry and head; masked-out logits are set to the dtype's most negative
value, as in Flax, so a row with every key masked attends uniformly to all keys.

Where the dropout mask ``M`` comes from decides what attention dropout costs. Flax
draws it with ``jax.random.bernoulli`` over the ``(batch, heads, q, k)`` weights and
keeps it for the backward pass. Here it is :func:`jaxreg.masks.keep_mask`: by default
a keyed hash of each weight's global index, so

* the backward pass stores no mask: it is drawn again from the key (``residual``);
* a block of the weights can draw exactly its own part of the mask. That is what lets
  ``implementation="blockwise"`` (key/value blocks with an online softmax, Milakov &
  Gimelshein, 2018; Rabe & Staats, 2021) apply the *same* dropout as the dense path
  without ever forming the ``T×T`` weights.

``exact=True`` draws Flax's mask instead, ``jax.random.bernoulli(dropout_rng, 1 - p,
shape)``, and scales as Flax does, so the dense path equals Flax bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import _sharding
from jaxreg import masks

__all__ = [
    "IMPLEMENTATIONS",
    "dot_product_attention",
]

IMPLEMENTATIONS = ("dense", "blockwise")
_QK = "...qhd,...khd->...hqk"  # (batch..., heads, q, k) scores from q and k.
_WV = "...hqk,...khd->...qhd"  # Weighted values, back to (batch..., q, heads, depth).


def dot_product_attention(
    query, key, value, bias=None, mask=None, broadcast_dropout: bool = True,
    dropout_rng=None, dropout_rate=0.0, deterministic: bool = False, dtype=None,
    precision=None, module=None, force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable | None = None,
    qk_attn_weights_einsum: Callable | None = None,
    attn_weights_value_einsum: Callable | None = None, is_causal: bool = False, *,
    exact: bool = False, residual: str | None = None, implementation: str = "dense",
    block_size: int = 128) -> jax.Array:
  """Dot-product attention, ``softmax(q·kᵀ/√d + bias, masked)·v``, with attention dropout.

  Shapes, arguments and semantics are those of ``flax.linen.dot_product_attention``.

  Args:
    query: ``[batch..., q_length, num_heads, qk_depth]``.
    key: ``[batch..., kv_length, num_kv_heads, qk_depth]``, where ``num_kv_heads``
      divides ``num_heads``: grouped-query attention (as in
      ``flax.nnx.dot_product_attention``) when it is smaller, query head ``h`` then
      attending with key/value head ``h // (num_heads // num_kv_heads)``.
    value: ``[batch..., kv_length, num_kv_heads, v_depth]``.
    bias: added to the logits; broadcastable to ``[batch..., num_heads, q_length,
      kv_length]``.
    mask: where ``False`` (or 0), the logit is replaced by the dtype's most negative
      value; broadcastable like ``bias``.
    broadcast_dropout: one dropout mask shared by every batch entry and head.
    dropout_rng: the PRNG key of the dropout; needed when dropout is on.
    dropout_rate: the drop probability ``p`` of the attention weights, in ``[0, 1]``.
    deterministic: no dropout.
    dtype: the computation dtype (default: promoted from the inputs).
    precision: of the two einsums, as in ``jnp.einsum``.
    module: a linen or NNX module; the attention weights (before dropout) are sown
      into its ``'intermediates'`` as ``'attention_weights'``. Dense only.
    force_fp32_for_softmax: compute the softmax in float32 (Flax's output is then
      float32 too, and so is this one's).
    einsum_dot_general: the ``dot_general`` of the default einsums.
    qk_attn_weights_einsum, attn_weights_value_einsum: replacements for the two
      einsums (e.g. quantized ones), given together, as in Flax.
    is_causal: also mask out keys after the query (``flax.nnx``'s argument).
    exact: draw the mask as Flax does (``jax.random.bernoulli``): bit-identical to
      Flax on the dense path, slower. The blockwise path then draws the whole mask
      once and keeps it (1 byte per weight), since threefry cannot draw a block alone.
    residual: what the dense backward keeps of the dropout mask: ``"recompute"``
      (nothing, the default on the fast path), ``"packed"`` (1 bit per weight, the
      default with ``exact=True``). See :func:`jaxreg.dropout`.
    implementation: ``"dense"`` forms the weights as Flax does; ``"blockwise"`` never
      does: scores for ``block_size`` queries × ``block_size`` keys at a time, an
      online softmax over key blocks, and ``jax.checkpoint`` per block, so ``grad``
      keeps ``O(batch·heads·q_length·depth)`` instead of ``O(batch·heads·q·k)``.
      Same mask, same values and gradients to rounding. A length that
      ``block_size`` does not divide is fine: the last block is moved back to end at
      the last position, and the keys it repeats are excluded.
    block_size: a positive int, the block length along queries and keys (clipped to
      the lengths).

  Returns:
    ``[batch..., q_length, num_heads, v_depth]``.

  Unlike Flax, ``dropout_rate=1`` gives zeros rather than ``0/0``, a traced
  ``dropout_rate`` is allowed (clipped to ``[0, 1]``), and bad input raises a
  ``ValueError`` naming the argument rather than an ``AssertionError``.

  >>> import jax, jax.numpy as jnp
  >>> q = k = v = jnp.ones((2, 5, 3, 4))  # batch 2, length 5, 3 heads, depth 4
  >>> dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=jax.random.key(0)).shape
  (2, 5, 3, 4)
  >>> y = dot_product_attention(q, k, v, implementation="blockwise", block_size=2)
  >>> bool(jnp.allclose(y, v))
  True
  """
  qk_einsum, wv_einsum = _einsums(precision, einsum_dot_general, qk_attn_weights_einsum,
                                  attn_weights_value_einsum)
  query, key, value = _promote(query, key, value, dtype)
  dtype = query.dtype
  shape = _weights_shape(query, key, value)
  # Grouped-query heads: query head h attends with key/value head h // group, as in
  # flax.nnx.dot_product_attention.
  group = query.shape[-2] // key.shape[-2]
  if group > 1:
    key, value = (_repeat_heads(x, group) for x in (key, value))
  bias = _broadcastable(bias, "bias", shape)
  mask = _broadcastable(mask, "mask", shape)
  if mask is not None:
    mask = mask.astype(bool)
  rate = _checks.check_rate(dropout_rate, "dropout_rate")
  drops = not deterministic and not (isinstance(rate, float) and rate == 0.0)
  if drops:
    if dropout_rng is None:
      raise ValueError(
          f"dropout_rng is None, but dropout is on (dropout_rate={dropout_rate}, "
          "deterministic=False): pass a key, or deterministic=True")
    dropout_rng = _checks.check_key(dropout_rng, "dropout_rng")
  residual = masks.check_residual(residual, exact)
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
    raise ValueError(f"block_size must be a positive int, got {block_size!r}")

  # Both paths scale the query first, as Flax does, so their logits agree bit for bit.
  query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
  weights_dtype = jnp.float32 if force_fp32_for_softmax else dtype
  dropout = (_Dropout(dropout_rng, rate, broadcast_dropout, exact, shape, weights_dtype)
             if drops else None)
  if implementation == "dense":
    return _dense(query, key, value, bias, mask, is_causal, dropout, residual, module,
                  weights_dtype, qk_einsum, wv_einsum)
  if module is not None:
    raise ValueError("module= (Flax's sow_weights=True) needs implementation='dense': "
                     "the blockwise path never forms the attention weights")
  return _blockwise(query, key, value, bias, mask, is_causal, dropout, weights_dtype,
                    block_size, qk_einsum, wv_einsum)


def _repeat_heads(x, group: int):
  """``jnp.repeat(x, group, axis=-2)``, as a broadcast and a reshape that merges the head
  axis with the new one after it: on an explicit-axis mesh a heads-sharded ``x`` stays
  sharded so, where ``jnp.repeat`` would ask for an output sharding."""
  *lead, heads, depth = x.shape
  grouped = jnp.broadcast_to(x[..., None, :], (*lead, heads, group, depth))
  return grouped.reshape(*lead, heads * group, depth)


def _einsums(precision, dot_general, qk_einsum, wv_einsum):
  """The two einsums, with Flax's rules: custom ones come in pairs, and exclude
  ``precision`` and ``einsum_dot_general``."""
  if (qk_einsum is None) != (wv_einsum is None):
    raise ValueError("qk_attn_weights_einsum and attn_weights_value_einsum must be "
                     "given together")
  if qk_einsum is not None:
    if precision is not None or dot_general is not None:
      raise ValueError("precision/einsum_dot_general and qk_attn_weights_einsum/"
                       "attn_weights_value_einsum are mutually exclusive")
    return qk_einsum, wv_einsum
  einsum = functools.partial(jnp.einsum, precision=precision)
  if dot_general is not None:
    einsum = functools.partial(einsum, _dot_general=dot_general)
  return einsum, einsum


def _promote(query, key, value, dtype):
  """Flax's ``promote_dtype``: all three in ``dtype``, or in their common dtype."""
  dtype = jnp.result_type(query, key, value) if dtype is None else jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"attention needs floating-point query, key and value, got dtype {dtype}")
  return (jnp.asarray(x, dtype) for x in (query, key, value))


def _weights_shape(query, key, value) -> tuple[int, ...]:
  """``(batch..., heads, q_length, kv_length)``, after checking the three shapes agree."""
  shapes = f"query {query.shape}, key {key.shape}, value {value.shape}"
  if not query.ndim == key.ndim == value.ndim >= 3:
    raise ValueError(f"query, key and value need the same rank, at least 3 "
                     f"([batch..., length, heads, depth]), got {shapes}")
  if not query.shape[:-3] == key.shape[:-3] == value.shape[:-3]:
    raise ValueError(f"query, key and value batch dims must match, got {shapes}")
  if key.shape[-2] != value.shape[-2] or query.shape[-2] % key.shape[-2]:
    raise ValueError(f"key and value need the same number of heads (axis -2), and the "
                     f"query a multiple of it (grouped-query attention), got {shapes}")
  if query.shape[-1] != key.shape[-1]:
    raise ValueError(f"query and key head depths (axis -1) must match, got {shapes}")
  if key.shape[-3] != value.shape[-3]:
    raise ValueError(f"key and value lengths (axis -3) must match, got {shapes}")
  return (*query.shape[:-3], query.shape[-2], query.shape[-3], key.shape[-3])


def _broadcastable(x, name: str, shape: tuple[int, ...]):
  """``x`` with its rank raised to that of the weights, after checking it broadcasts
  to them; ``None`` stays ``None``."""
  if x is None:
    return None
  x = jnp.asarray(x)
  try:
    fits = x.ndim <= len(shape) and jnp.broadcast_shapes(x.shape, shape) == shape
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(f"{name} of shape {x.shape} does not broadcast to the attention "
                     f"weights' shape {shape} ([batch..., heads, q_length, kv_length])")
  return x.reshape((1,) * (len(shape) - x.ndim) + x.shape)


class _Dropout:
  """The attention dropout: its mask is that of the whole ``(batch..., heads, q, k)``
  weights, whichever block of them asks."""

  def __init__(self, rng, rate, broadcast: bool, exact: bool, shape, dtype):
    self.rng, self.rate, self.exact, self.shape = rng, rate, exact, shape
    # The weights' dtype sets the mask's resolution, the same in the dense and the
    # blockwise path (whose float32 or wider probabilities stand in for the weights).
    self.dtype = dtype
    # Flax's broadcast_dropout shares the mask over every batch dim and the heads.
    self.broadcast_dims = tuple(range(len(shape) - 2)) if broadcast else ()

  def keep(self, start=None, block_shape=None) -> masks.KeepMask:
    return masks.keep_mask(self.rng, self.shape, self.rate, broadcast_dims=self.broadcast_dims,
                           exact=self.exact, start=start, block_shape=block_shape,
                           dtype=self.dtype)

  def scale(self, x, kept, keep_prob, dtype):
    """``x``'s kept entries over the keep probability, 0 elsewhere. The fast path
    scales as ``jr.dropout`` does (:func:`jaxreg.masks.scale_kept`: by ``1/q`` in
    float32, rounded once to ``x``'s dtype). ``exact=True`` keeps Flax's arithmetic,
    ``x · (keep / (1 - p))`` with ``1 - p`` formed in Python and the factor in the
    computation ``dtype``: bit-exact to Flax, and like Flax off by the rounding of
    ``q`` in bfloat16. ``q = 0`` (everything dropped) divides by 1, so no ``0/0``."""
    if not self.exact:  # keep_prob's value, a Python float for a constant rate.
      return masks.scale_kept(x, kept, masks.keep_probability(self.rate, self.dtype))
    if isinstance(self.rate, float):
      q = jnp.asarray(1.0 - self.rate, dtype)
    else:
      q = keep_prob.astype(dtype)
    return x * (kept.astype(dtype) / jnp.where(q > 0, q, jnp.ones((), dtype)))


def _unfused(mask, shape):
  """``mask``, computed on its own when it is broadcast (``broadcast_dropout``): fused
  into the ops on the weights, XLA would hash it again for every batch entry and head."""
  if mask.size < np.prod(shape):
    return jax.lax.optimization_barrier(mask)
  return mask


def _causal(q_start, q_length, k_start, k_length):
  """``True`` where key ``j`` is not after query ``i``, for the block at the starts."""
  rows = q_start + jax.lax.broadcasted_iota(jnp.int32, (q_length, k_length), 0)
  cols = k_start + jax.lax.broadcasted_iota(jnp.int32, (q_length, k_length), 1)
  return rows >= cols


def _dense(query, key, value, bias, mask, is_causal, dropout, residual, module,
           weights_dtype, qk_einsum, wv_einsum):
  """Flax's computation, op for op, with the dropout drawn by :mod:`jaxreg.masks`."""
  dtype = query.dtype
  logits = qk_einsum(_QK, query, key)
  if bias is not None:
    logits = logits + bias
  if is_causal:
    causal = _causal(0, logits.shape[-2], 0, logits.shape[-1])
    mask = causal if mask is None else mask & causal
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
  if weights_dtype != dtype:
    weights = jax.nn.softmax(logits.astype(weights_dtype))
  else:
    weights = jax.nn.softmax(logits).astype(dtype)
  if module is not None:
    module.sow("intermediates", "attention_weights", weights)
  if dropout is None:
    return wv_einsum(_WV, weights, value)

  # Everything the mask touches is recomputed in the backward pass, which then keeps
  # only the weights (that the softmax needs anyway) and, if packed, the packed mask.
  def dropped_product(weights, value):
    keep = dropout.keep()
    kept = _unfused(masks.as_residual(keep.mask, residual), weights.shape)
    return wv_einsum(_WV, dropout.scale(weights, kept, keep.keep_prob, dtype), value)

  # prevent_cse=False lets XLA fuse the recomputed mask into the backward's consumers
  # (with the barrier it materializes a (batch, heads, q, k) temporary instead).
  return jax.checkpoint(dropped_product, policy=masks.residual_policy(residual),
                        prevent_cse=False)(weights, value)


def _block(x, starts: dict[int, Any], sizes: dict[int, int]):
  """The block of ``x`` at ``starts`` (by axis) of ``sizes``; an axis of size 1 is
  broadcast, so it is kept whole."""
  for axis, start in starts.items():
    if x.shape[axis] != 1:
      x = jax.lax.dynamic_slice_in_dim(x, start, sizes[axis], axis)
  return x


def _blockwise(query, key, value, bias, mask, is_causal, dropout, weights_dtype,
               block_size, qk_einsum, wv_einsum):
  """Attention one ``(query block, key block)`` tile at a time.

  The outer loop maps over query blocks, the inner one scans key blocks with the
  online softmax: a running row max ``m``, normalizer ``l = Σ exp(s - m)`` and
  output ``acc = Σ exp(s - m)·(mask/q)·v``, rescaled by ``exp(m_old - m_new)`` as
  ``m`` grows; the output is ``acc / l``, the softmax taken before the dropout as in
  the dense path. Both loop bodies are checkpointed, so ``grad`` keeps one query
  block's running state per key block, and recomputes the scores.

  When a block length does not divide a length, the last block starts at
  ``length - block`` instead of running past the end: every slice stays in range (so
  an exact mask is sliced right), and the keys it shares with the block before are
  excluded from its softmax terms.
  """
  dtype = query.dtype
  *batch, q_length, heads, _ = query.shape
  k_length = key.shape[-3]
  bq, bk = min(block_size, q_length), min(block_size, k_length)
  nq, nk = -(-q_length // bq), -(-k_length // bk)
  weights_axes = len(batch) + 3  # The rank of bias, mask and dropout mask.
  big_neg = jnp.finfo(dtype).min
  out_dtype = jnp.result_type(weights_dtype, value.dtype)
  # The running statistics, in float32 (float64 for float64 inputs).
  stats = _dtypes.wide(dtype)
  whole_mask = None
  if dropout is not None and dropout.exact:
    whole_mask = dropout.keep()  # threefry cannot draw a block on its own.

  def query_block(i):
    q_start = jnp.minimum(i * bq, q_length - bq)
    q_block = jax.lax.dynamic_slice_in_dim(query, q_start, bq, axis=-3)
    tile = {weights_axes - 2: bq, weights_axes - 1: bk}

    def key_block(carry, j):
      row_max, normalizer, acc = carry
      k_start = jnp.minimum(j * bk, k_length - bk)
      starts = {weights_axes - 2: q_start, weights_axes - 1: k_start}
      k_block = jax.lax.dynamic_slice_in_dim(key, k_start, bk, axis=-3)
      v_block = jax.lax.dynamic_slice_in_dim(value, k_start, bk, axis=-3)
      logits = qk_einsum(_QK, q_block, k_block)
      if bias is not None:
        logits = logits + _block(bias, starts, tile)
      allowed = None if mask is None else _block(mask, starts, tile)
      if is_causal:
        causal = _causal(q_start, bq, k_start, bk)
        allowed = causal if allowed is None else allowed & causal
      if allowed is not None:
        logits = jnp.where(allowed, logits, big_neg)
      fresh = k_start + jnp.arange(bk) >= j * bk  # Keys no earlier block has seen.
      logits = jnp.where(fresh, logits.astype(stats), -jnp.inf)
      new_max = jnp.maximum(row_max, logits.max(-1))
      # A row whose logits so far are all -inf (a -inf bias) must not give -inf - -inf.
      safe_max = jnp.where(new_max == -jnp.inf, 0.0, new_max)
      probs = jnp.exp(logits - safe_max[..., None])
      rescale = jnp.exp(row_max - safe_max)
      normalizer = normalizer * rescale + probs.sum(-1)
      if dropout is not None:
        if whole_mask is None:
          keep = dropout.keep(start=(0,) * (weights_axes - 2) + (q_start, k_start),
                              block_shape=(*batch, heads, bq, bk))
          kept, keep_prob = keep.mask, keep.keep_prob
        else:
          kept, keep_prob = _block(whole_mask.mask, starts, tile), whole_mask.keep_prob
        probs = dropout.scale(probs, _unfused(kept, probs.shape), keep_prob, stats)
      update = wv_einsum(_WV, probs.astype(weights_dtype), v_block).astype(stats)
      acc = acc * jnp.swapaxes(rescale, -1, -2)[..., None] + update
      return (new_max, normalizer, acc), None

    rows = (*batch, heads, bq)
    init = (jnp.full(rows, -jnp.inf, stats), jnp.zeros(rows, stats),
            jnp.zeros((*batch, bq, heads, value.shape[-1]), stats))
    body = jax.checkpoint(key_block, prevent_cse=False)
    init = _sharding.typed_as_returned(body, init, jnp.zeros((), jnp.int32))
    (_, normalizer, acc), _ = jax.lax.scan(body, init, jnp.arange(nk))
    return (acc / jnp.swapaxes(normalizer, -1, -2)[..., None]).astype(out_dtype)

  # Inside loops, the barriers that prevent_cse adds are not needed (jax.checkpoint's docs).
  blocks = jax.lax.map(jax.checkpoint(query_block, prevent_cse=False), jnp.arange(nq))
  # blocks: (nq, batch..., bq, heads, depth); the last block repeats the rows before it.
  blocks = jnp.moveaxis(blocks, 0, -4)
  full = blocks[..., :nq - 1, :, :, :].reshape(*batch, (nq - 1) * bq, heads, value.shape[-1])
  last = blocks[..., nq - 1, (nq - 1) * bq - (q_length - bq):, :, :]
  return jnp.concatenate([full, last], axis=-3)
