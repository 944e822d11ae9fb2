"""The public entry point: :func:`dot_product_attention`, with Flax's signature and
argument rules (einsum overrides, dtype promotion, shapes, grouped-query heads), which
checks its input and hands it to the dense, the blockwise or the Pallas path."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import masks
from jaxreg.attention import _dropout
from jaxreg.attention import blockwise
from jaxreg.attention import dense
from jaxreg.attention import pallas

__all__ = ["IMPLEMENTATIONS", "dot_product_attention"]

IMPLEMENTATIONS = ("dense", "blockwise", "pallas")


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
      the last position, and the keys it repeats are excluded. ``"pallas"``: one
      fused kernel (flash attention, :mod:`~jaxreg.attention.pallas`; Triton on a GPU,
      interpret mode on CPU) with the same mask drawn inside it, forward and
      backward. It takes no ``bias``, no custom einsums and no ``exact=True``, and of
      masks only ``is_causal`` and a key mask (no query dim): anything else raises a
      ``ValueError`` pointing to the other two.
    block_size: a positive int, the block length along queries and keys (clipped to
      the lengths); a power of 2 for ``"pallas"``, whose tiles are at least 16.

  Returns:
    ``[batch..., q_length, num_heads, v_depth]``.

  Unlike Flax, ``dropout_rate=1`` gives zeros rather than ``0/0``, a traced
  ``dropout_rate`` is allowed (clipped to ``[0, 1]``), and bad input raises a
  ``ValueError`` (a ``TypeError`` for a wrongly typed ``block_size``) naming the
  argument rather than an ``AssertionError``.

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
  block_size = _checks.check_positive_int(block_size, "block_size")
  if implementation == "pallas":
    pallas.check_arguments(bias, mask, exact, block_size,
                           custom_einsums=(einsum_dot_general, qk_attn_weights_einsum))
  if module is not None and implementation != "dense":
    raise ValueError(f"module= (Flax's sow_weights=True) needs implementation='dense': "
                     f"the {implementation} path never forms the attention weights")

  # Every path scales the query first, as Flax does, so their logits agree bit for bit.
  query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
  weights_dtype = jnp.float32 if force_fp32_for_softmax else dtype
  dropout = (_dropout.AttentionDropout(dropout_rng, rate, broadcast_dropout, exact, shape,
                                      weights_dtype) if drops else None)
  if implementation == "pallas":  # Its programs read key/value head h // group.
    return pallas.pallas(query, key, value, mask, is_causal, dropout, weights_dtype,
                         block_size, precision)
  # Grouped-query heads: query head h attends with key/value head h // group, as in
  # flax.nnx.dot_product_attention.
  group = query.shape[-2] // key.shape[-2]
  if group > 1:
    key, value = (_repeat_heads(x, group) for x in (key, value))
  if implementation == "dense":
    return dense.dense(query, key, value, bias, mask, is_causal, dropout, residual,
                       module, weights_dtype, qk_einsum, wv_einsum)
  return blockwise.blockwise(query, key, value, bias, mask, is_causal, dropout,
                             weights_dtype, block_size, qk_einsum, wv_einsum)


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
