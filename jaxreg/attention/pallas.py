r"""The Pallas path: flash attention with the dropout inside the kernel.

One kernel program per ``(query block, batch entry, head)`` keeps a ``(block, block)``
tile of scores on chip and runs the online softmax over key blocks (FlashAttention-2,
Dao, 2023); the ``T×T`` weights never reach memory:

.. math::
  m \leftarrow \max(m, \max_j s_{ij}),\quad
  \ell \leftarrow \ell\, e^{m_\text{old} - m} + \textstyle\sum_j e^{s_{ij} - m},\quad
  o \leftarrow o\, e^{m_\text{old} - m} + \big(e^{s - m} \odot \tfrac{M}{q}\big) v,
  \qquad y = o / \ell,

the normalizer summing the probabilities before dropout (the softmax comes first, as
in the dense path). The keep bit ``M_{ij}`` of each weight is :mod:`jaxreg.masks`'
keyed hash of its global index in the ``(batch..., heads, q, k)`` weights
(:func:`jaxreg.masks.hashing.words_at`, from two iotas and the program ids) against
:func:`jaxreg.masks.keep_mask`'s threshold: the dense path's mask, bit for bit,
computed in registers. The backward kernels (one for ``dq`` over key blocks, one for
``dk, dv`` over query blocks) draw the same bits again, tile by tile, from the row
statistics ``m`` and ``log ℓ``: no mask and no ``T×T`` array is stored.

With ``P̃ = e^{s - m - log ℓ} ⊙ M/q`` and ``δ = rowsum(dy ⊙ y)`` (the dropout is inside
``y``, so FlashAttention's identity holds):
``dv = P̃ᵀ dy``, ``dP = (dy vᵀ) ⊙ M/q``, ``ds = P ⊙ (dP − δ)``, ``dq = ds k``,
``dk = dsᵀ q``; ``ds`` is 0 where a key is masked, whose logit is a constant.

The kernel is written for Pallas's Triton lowering (GPUs; tested by exporting for
``cuda``): it
needs only loads, dots and elementwise integer work, all of which Triton lowers, and a
Triton kernel is serialized into the program as a custom call, so ``jax.export``
lowers it for ``cuda`` on a machine without a GPU. (Mosaic GPU is Hopper-first and
needs warpgroup-shaped tiles; Mosaic TPU would be a second kernel.) On CPU the same
kernel runs in Pallas's interpret mode, picked per platform by
``jax.lax.platform_dependent``, so the tests check it against the dense path without a
GPU. Lengths are padded to a multiple of the block (padded keys excluded, padded
queries dropped) and head depths to a power of two of at least 16, which Triton's
tiles need.

This module prepares the operands and wires the kernels
(:mod:`~jaxreg.attention._flash_kernels`) into a ``jax.custom_vjp``.
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxreg import _dtypes
from jaxreg import masks
from jaxreg.attention import _flash_kernels as kernels
from jaxreg.masks import hashing
from jaxreg.masks import threshold

__all__ = ["check_arguments", "pallas"]

_MIN_TILE = 16  # Triton's dot needs every dim of its operands to be at least 16.


def check_arguments(bias, mask, exact: bool, block_size: int, custom_einsums):
  """Raises ``ValueError`` for what the kernel cannot serve, naming the argument and
  the implementations that can. ``mask`` is raised to the weights' rank."""
  others = "use implementation='blockwise' or 'dense'"
  if bias is not None:
    raise ValueError(f"bias is not supported by implementation='pallas' (the kernel "
                     f"reads no q×k array): {others}")
  if mask is not None and mask.shape[-2] != 1:
    raise ValueError(
        f"mask of shape {mask.shape} varies along queries: implementation='pallas' takes "
        "a key mask, broadcastable to (batch..., heads, 1, kv_length), with "
        f"is_causal=True for a causal one; for any other mask, {others}")
  if exact:
    raise ValueError("exact=True draws Flax's mask, jax.random.bernoulli's threefry "
                     "bits of the whole weights, which a kernel cannot draw again tile "
                     f"by tile: with implementation='pallas', drop exact=True, or {others}")
  if any(fn is not None for fn in custom_einsums):
    raise ValueError("einsum_dot_general and qk_attn_weights_einsum/"
                     "attn_weights_value_einsum are not supported by "
                     f"implementation='pallas' (its products are the kernel's): {others}")
  if block_size & (block_size - 1):
    raise ValueError(f"block_size must be a power of 2 with implementation='pallas' "
                     f"(Triton's tiles), got {block_size}")
  if jax.default_backend() == "tpu":
    raise ValueError("implementation='pallas' is a Triton kernel for GPUs (interpreted "
                     f"on CPU); on TPU, {others}")


def pallas(query, key, value, mask, is_causal, dropout, weights_dtype, block_size,
           precision):
  """Flash attention with the dropout of ``dropout`` (or none), by the kernels below.

  ``query`` is already scaled by ``1/√d``; ``mask`` is ``None`` or, raised to the
  weights' rank, has a query dim of 1 (a key mask); ``key`` and ``value`` have
  ``num_heads / group`` heads.
  """
  *batch, q_length, heads, _ = query.shape
  k_length, kv_heads, v_depth = key.shape[-3], key.shape[-2], value.shape[-1]
  out_dtype = jnp.result_type(weights_dtype, value.dtype)
  out_shape = (*batch, q_length, heads, v_depth)
  if 0 in out_shape or k_length == 0:  # Nothing to attend with: Flax's sum over none.
    return jnp.zeros(out_shape, out_dtype)
  block_q, block_k = (max(_MIN_TILE, min(block_size, pl.next_power_of_2(n)))
                      for n in (q_length, k_length))
  config = kernels.Config(
      k_length=k_length, block_q=block_q, block_k=block_k,
      group=heads // kv_heads, causal=bool(is_causal),
      key_mask_heads=0 if mask is None else mask.shape[-3],
      masked_value=float(jnp.finfo(query.dtype).min), precision=precision,
      mask_shape=None if dropout is None else masks.mask_shape(dropout.shape,
                                                               dropout.broadcast_dims),
      mask_bits=0 if dropout is None else masks.resolution_bits(dropout.dtype),
      stats=jnp.dtype(_dtypes.wide(query.dtype)).name)
  # One batch dim: the programs' batch index, unraveled again for the mask's index.
  batch_size = int(np.prod(batch, dtype=np.int64))
  q, k, v = (x.reshape(batch_size, *x.shape[-3:]) for x in (query, key, value))
  q = _pad(q, block_q)
  k = _pad(k, block_k)
  v = _pad(v.astype(out_dtype), block_k)  # The dropped weights are multiplied in it.
  key_mask = None
  if mask is not None:
    key_mask = jnp.broadcast_to(mask[..., 0, :], (*batch, *mask.shape[-3:-2], k_length))
    key_mask = jnp.pad(key_mask.reshape(batch_size, -1, k_length),
                       ((0, 0), (0, 0), (0, k.shape[1] - k_length)))
  words = scale = None
  if dropout is not None:
    words, scale = _dropout_parameters(dropout, config)
  flash = functools.partial(_flash, config, tuple(batch))
  if any(axis == AxisType.Explicit for axis in jax.sharding.get_abstract_mesh().axis_types):
    # The kernel is placed as on auto axes, where XLA's partitioner places it (and the
    # interpreter runs); its output is replicated. A kernel per shard would need the
    # shard's offset in the mask index.
    flash = jax.sharding.auto_axes(flash, out_sharding=P())
  out = flash(q, k, v, key_mask, words, scale)
  return out[:, :q_length, :, :v_depth].reshape(out_shape)


def _pad(x, block: int):
  """``x`` of shape ``(batch, length, heads, depth)`` zero-padded to a multiple of
  ``block`` in length and to a power of two of at least 16 in depth."""
  length, depth = x.shape[1], x.shape[-1]
  padded_depth = max(_MIN_TILE, pl.next_power_of_2(depth))
  return jnp.pad(x, ((0, 0), (0, -length % block), (0, 0), (0, padded_depth - depth)))


def _dropout_parameters(dropout, config: kernels.Config):
  """The kernel's dropout scalars: the hash's seed words with the threshold after
  them (uint32), and the scale ``1/q`` in the statistics' dtype."""
  seed = hashing.seed_words(dropout.rng, config.mask_shape)
  keep_prob = masks.keep_probability(dropout.rate, dropout.dtype)
  level = threshold.keep_level(keep_prob, config.mask_bits)
  # Eight words (Triton's blocks are powers of two): the seed, zeros, the threshold.
  zero = jnp.zeros((), jnp.uint32)
  words = jnp.stack([*seed, *[zero] * (kernels.SEED_WORDS - seed.size), level, *[zero] * 3])
  # scale_kept's factor, exactly: the scaling of one kept 1.
  scale = masks.scale_kept(jnp.ones(1, config.stats), jnp.ones(1, bool), keep_prob)
  return words, scale


# pallas_call and the custom VJP -------------------------------------------------------
# Every grid is (blocks, batch, heads), over query blocks or (dk, dv) key blocks.

def _run(kernel, name: str, grid, in_specs, out_specs, out_shape, depth: int):
  """The kernel as a function of its inputs: Triton on a GPU, interpreted on CPU,
  chosen when the program is lowered for a platform (so ``jax.export`` for ``cuda``
  on a machine without one gets the Triton kernel)."""
  def call(interpret, *args):
    params = None if interpret else plgpu.CompilerParams(
        num_warps=4 if depth <= 64 else 8, num_stages=2)
    return pl.pallas_call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs,
                          out_shape=out_shape, compiler_params=params,
                          interpret=interpret, name=name)(*args)

  def run(*args):
    return jax.lax.platform_dependent(*args, cpu=functools.partial(call, True),
                                      default=functools.partial(call, False))
  return run


def _rows(x, block: int, blocked: bool = True, group: int = 1):
  """The spec of a ``(batch, length, heads, depth)`` operand: ``block`` rows, at the
  program's block (``blocked``) or from the first, of head ``h // group``."""
  return pl.BlockSpec((None, block, None, x.shape[-1]),
                      lambda i, b, h: (b, i if blocked else 0, h // group, 0))


def _row_stats(block: int, blocked: bool = True):
  """The spec of a row statistic, ``(batch, heads, q_length)``."""
  return pl.BlockSpec((None, None, block), lambda i, b, h: (b, h, i if blocked else 0))


def _shared_specs(config: kernels.Config, key_mask, words, scale):
  """The specs of the key mask (every key of the program's batch entry and head) and
  of the dropout's scalars."""
  def whole(x):
    return None if x is None else pl.BlockSpec(x.shape, lambda i, b, h: (0,) * x.ndim)
  key_mask_spec = None
  if key_mask is not None:
    per_head = config.key_mask_heads > 1
    key_mask_spec = pl.BlockSpec((None, None, key_mask.shape[-1]),
                                 lambda i, b, h: (b, h if per_head else 0, 0))
  return [key_mask_spec, whole(words), whole(scale)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _flash(config: kernels.Config, batch, q, k, v, key_mask, words, scale):
  return _flash_forward(config, batch, q, k, v, key_mask, words, scale)[0]


def _flash_forward(config, batch, q, k, v, key_mask, words, scale):
  batch_size, q_length, heads, depth = q.shape
  k_length, group = k.shape[1], config.group
  in_specs = [_rows(q, config.block_q), _rows(k, k_length, False, group),
              _rows(v, k_length, False, group), *_shared_specs(config, key_mask, words, scale)]
  stat = jax.ShapeDtypeStruct((batch_size, heads, q_length), config.stats)
  out_shape = [jax.ShapeDtypeStruct((*q.shape[:3], v.shape[-1]), v.dtype), stat, stat]
  out_specs = [_rows(v, config.block_q), _row_stats(config.block_q),
               _row_stats(config.block_q)]
  kernel = functools.partial(kernels.forward, config=config, batch=batch)
  out, row_max, log_norm = _run(
      kernel, "jaxreg_flash_forward", (q_length // config.block_q, batch_size, heads),
      in_specs, out_specs, out_shape, depth)(q, k, v, key_mask, words, scale)
  return out, (q, k, v, key_mask, words, scale, out, row_max, log_norm)


def _flash_backward(config, batch, residuals, d_out):
  q, k, v, key_mask, words, scale, out, row_max, log_norm = residuals
  batch_size, q_length, heads, depth = q.shape
  k_length, group, stats = k.shape[1], config.group, config.stats
  block_q, block_k = config.block_q, config.block_k
  delta = jnp.einsum("bqhd,bqhd->bhq", d_out.astype(stats), out.astype(stats))
  args = (q, k, v, key_mask, words, scale, d_out, row_max, log_norm, delta)
  shared = _shared_specs(config, key_mask, words, scale)

  # dq: a query block per program, looping over key blocks.
  in_specs = [_rows(q, block_q), _rows(k, k_length, False, group),
              _rows(v, k_length, False, group), *shared, _rows(d_out, block_q),
              *[_row_stats(block_q)] * 3]
  dq = _run(functools.partial(kernels.dq, config=config, batch=batch), "jaxreg_flash_dq",
            (q_length // block_q, batch_size, heads), in_specs, _rows(q, block_q),
            jax.ShapeDtypeStruct(q.shape, q.dtype), depth)(*args)

  # dk, dv: a key block per program, looping over query blocks; per query head, a
  # group's heads summed after (grouped-query attention).
  in_specs = [_rows(q, q_length, False), _rows(k, block_k, group=group),
              _rows(v, block_k, group=group), *shared, _rows(d_out, q_length, False),
              *[_row_stats(q_length, False)] * 3]
  grouped = group > 1
  out_shape = [jax.ShapeDtypeStruct((batch_size, k_length, heads, x.shape[-1]),
                                    stats if grouped else x.dtype) for x in (k, v)]
  dk, dv = _run(functools.partial(kernels.dkv, config=config, batch=batch),
                "jaxreg_flash_dkv", (k_length // block_k, batch_size, heads), in_specs,
                [_rows(k, block_k), _rows(v, block_k)], out_shape, depth)(*args)
  if grouped:
    dk, dv = (d.reshape(*d.shape[:2], -1, group, d.shape[-1]).sum(3).astype(x.dtype)
              for d, x in ((dk, k), (dv, v)))
  return dq, dk, dv, None, None, None


_flash.defvjp(_flash_forward, _flash_backward)
