"""The blockwise path: attention one ``(query block, key block)`` tile at a time.

It never forms the ``T×T`` weights: key/value blocks with an online softmax (Milakov &
Gimelshein, 2018; Rabe & Staats, 2021), and ``jax.checkpoint`` per block, so ``grad``
keeps ``O(batch·heads·q_length·depth)`` instead of ``O(batch·heads·q·k)``. Each tile
draws exactly its own part of the dense path's dropout mask (a hash of the global
index, :mod:`jaxreg.masks`), so both paths apply the *same* dropout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxreg import _dtypes
from jaxreg import _sharding
from jaxreg.attention import _dropout
from jaxreg.attention import _scores

__all__ = ["blockwise"]


def _block(x, starts: dict[int, Any], sizes: dict[int, int]):
  """The block of ``x`` at ``starts`` (by axis) of ``sizes``; an axis of size 1 is
  broadcast, so it is kept whole."""
  for axis, start in starts.items():
    if x.shape[axis] != 1:
      x = jax.lax.dynamic_slice_in_dim(x, start, sizes[axis], axis)
  return x


def blockwise(query, key, value, bias, mask, is_causal, dropout, weights_dtype,
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
    whole_mask = dropout.keep().mask  # threefry cannot draw a block on its own.

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
      logits = qk_einsum(_scores.QK, q_block, k_block)
      if bias is not None:
        logits = logits + _block(bias, starts, tile)
      allowed = None if mask is None else _block(mask, starts, tile)
      if is_causal:
        causal = _scores.causal(q_start, bq, k_start, bk)
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
          kept = dropout.keep(start=(0,) * (weights_axes - 2) + (q_start, k_start),
                              block_shape=(*batch, heads, bq, bk)).mask
        else:
          kept = _block(whole_mask, starts, tile)
        probs = dropout.scale(probs, _dropout.unfused(kept, probs.shape), stats)
      update = wv_einsum(_scores.WV, probs.astype(weights_dtype), v_block).astype(stats)
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
