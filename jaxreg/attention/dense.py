"""The dense path: Flax's computation op for op, forming the ``(batch..., heads, q, k)``
weights, with the dropout drawn by :mod:`jaxreg.masks`.

With ``exact=True`` it is bit-identical to Flax, dropout included. By default the
backward pass stores no mask: it is drawn again from the key (``residual``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg import masks
from jaxreg.attention import _dropout
from jaxreg.attention import _scores

__all__ = ["dense"]


def dense(query, key, value, bias, mask, is_causal, dropout, residual, module,
          weights_dtype, qk_einsum, wv_einsum):
  """Flax's computation, op for op, with the dropout drawn by :mod:`jaxreg.masks`."""
  dtype = query.dtype
  logits = qk_einsum(_scores.QK, query, key)
  if bias is not None:
    logits = logits + bias
  if is_causal:
    causal = _scores.causal(0, logits.shape[-2], 0, logits.shape[-1])
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
    return wv_einsum(_scores.WV, weights, value)

  # Everything the mask touches is recomputed in the backward pass, which then keeps
  # only the weights (that the softmax needs anyway) and, if packed, the packed mask.
  def dropped_product(weights, value):
    kept = _dropout.unfused(masks.as_residual(dropout.keep().mask, residual), weights.shape)
    return wv_einsum(_scores.WV, dropout.scale(weights, kept, dtype), value)

  # prevent_cse=False lets XLA fuse the recomputed mask into the backward's consumers
  # (with the barrier it materializes a (batch, heads, q, k) temporary instead).
  return jax.checkpoint(dropped_product, policy=masks.residual_policy(residual),
                        prevent_cse=False)(weights, value)
