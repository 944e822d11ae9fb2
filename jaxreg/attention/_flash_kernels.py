"""The three kernels of the Pallas path (:mod:`jaxreg.attention.pallas`), one program
each: the forward over key blocks, ``dq`` over key blocks, ``dk, dv`` over query
blocks. Every tile masks its scores as the dense path does and draws its own keep bits
from the tile's global index; the math is in :mod:`jaxreg.attention.pallas`.

A program sees one batch entry and one head (grid ``(blocks, batch, heads)``); its
refs are that entry's and head's rows, of lengths padded to a multiple of the blocks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp
import numpy as np

from jaxreg.attention import _scores
from jaxreg.masks import hashing
from jaxreg.masks import threshold

SEED_WORDS = 4  # The most words hashing.seed_words draws; the threshold follows them.


@dataclasses.dataclass(frozen=True)
class Config:
  """What the kernels are traced for: static shapes and flags."""
  k_length: int  # Keys past it are padding.
  block_q: int
  block_k: int
  group: int  # Query heads per key/value head.
  causal: bool
  key_mask_heads: int  # 0 without a key mask, else its number of heads (1 or all).
  masked_value: float  # The logit of a masked key: the input dtype's most negative.
  precision: Any
  # The dropout: None without one, else the mask's shape and its threshold's bits.
  mask_shape: tuple[int, ...] | None
  mask_bits: int
  stats: str  # The running statistics' dtype.

  @property
  def skips_causal_blocks(self) -> bool:
    """Whether key blocks past the diagonal can be skipped: their weights are exactly
    0 unless a row has no allowed key at all, which only a key mask can make (its row
    then attends uniformly to every key, as in the dense path)."""
    return self.causal and not self.key_mask_heads


def _tile_scores(config: Config, q, k, q_start, k_start, key_mask_ref):
  """The scores of a ``(block_q, block_k)`` tile, masked as the dense path masks
  them, and where keys are allowed (``None``: everywhere). Padding keys are ``-inf``:
  out of every softmax, even a fully masked row's."""
  scores = plgpu.dot(q, k, trans_b=True, precision=config.precision)
  # Rounded to the inputs' dtype, as the dense path (Flax) forms its logits, then widened.
  scores = scores.astype(q.dtype).astype(config.stats)
  allowed = None
  if key_mask_ref is not None:
    allowed = key_mask_ref[pl.ds(k_start, config.block_k)][None, :]
  if config.causal:
    causal = _scores.causal(q_start, config.block_q, k_start, config.block_k)
    allowed = causal if allowed is None else allowed & causal
  if allowed is not None:
    scores = jnp.where(allowed, scores, config.masked_value)
  if config.k_length % config.block_k:
    keys = k_start + jax.lax.broadcasted_iota(jnp.int32, scores.shape, 1)
    scores = jnp.where(keys < config.k_length, scores, -jnp.inf)
  return scores, allowed


def _program_coords(config: Config, batch):
  """The dropout mask's coordinates of this program's batch entry and head (0 along a
  broadcast dim, where the mask has one entry), or ``None`` without dropout. Read at
  the kernel's top level: interpret mode gives program ids there only."""
  if config.mask_shape is None:
    return None
  entry, head = pl.program_id(1), pl.program_id(2)
  coords = [head]
  for size in reversed(batch):  # The batch entry's index along each batch dim.
    coords.insert(0, jax.lax.rem(entry, np.int32(size)))
    entry = jax.lax.div(entry, np.int32(size))
  return [c if n > 1 else 0 for c, n in zip(coords, config.mask_shape)]


def _keep_bits(config: Config, coords, shape, words_ref, q_start, k_start):
  """The keep bits ``M`` of a tile (``None`` without dropout): the dense path's at the
  tile's global index ``(batch..., head, query, key)``, from the program's ``coords``
  and two iotas."""
  if words_ref is None:
    return None
  coords = [*coords, q_start + jax.lax.broadcasted_iota(jnp.int32, (shape[0], 1), 0),
            k_start + jax.lax.broadcasted_iota(jnp.int32, (1, shape[1]), 1)]
  coords = [jnp.asarray(c).astype(jnp.uint32) for c in coords]
  seed = tuple(words_ref[i] for i in range(SEED_WORDS))
  bits = config.mask_bits
  hashed = hashing.words_at(seed, config.mask_shape, coords, top_half=threshold.top_half(bits))
  return threshold.kept(hashed, words_ref[SEED_WORDS], bits)


def _dropped(x, kept, scale_ref):
  """``x ⊙ M/q``: ``x`` where kept is ``None`` (no dropout)."""
  if kept is None:
    return x
  return jnp.where(kept, x * scale_ref[0], jnp.zeros((), x.dtype))


def _causal_end(config: Config, q_start, length: int, block: int):
  """How many blocks of ``block`` keys a query block at ``q_start`` needs."""
  blocks = length // block
  if not config.skips_causal_blocks:
    return blocks
  return jnp.minimum(blocks, jax.lax.div(q_start + config.block_q + block - 1, np.int32(block)))


def forward(q_ref, k_ref, v_ref, key_mask_ref, words_ref, scale_ref, out_ref,
                    max_ref, log_norm_ref, *, config: Config, batch):
  stats = config.stats
  q_start = pl.program_id(0) * config.block_q
  coords = _program_coords(config, batch)
  q = q_ref[...]

  def body(j, carry):
    acc, row_max, normalizer = carry
    k_start = j * config.block_k
    keys = pl.ds(k_start, config.block_k)
    scores, _ = _tile_scores(config, q, k_ref[keys, :], q_start, k_start, key_mask_ref)
    # The first block holds key 0, never padding: every row max is finite after it.
    new_max = jnp.maximum(row_max, scores.max(-1))
    probs = jnp.exp(scores - new_max[:, None])
    rescale = jnp.exp(row_max - new_max)
    normalizer = normalizer * rescale + probs.sum(-1)
    kept = _keep_bits(config, coords, probs.shape, words_ref, q_start, k_start)
    probs = _dropped(probs, kept, scale_ref)
    v = v_ref[keys, :]
    update = plgpu.dot(probs.astype(v.dtype), v, precision=config.precision)
    return acc * rescale[:, None] + update.astype(stats), new_max, normalizer

  block_q = config.block_q
  init = (jnp.zeros((block_q, v_ref.shape[-1]), stats), jnp.full(block_q, -jnp.inf, stats),
          jnp.zeros(block_q, stats))
  end = _causal_end(config, q_start, k_ref.shape[0], config.block_k)
  acc, row_max, normalizer = jax.lax.fori_loop(0, end, body, init)
  out_ref[...] = (acc / normalizer[:, None]).astype(out_ref.dtype)
  max_ref[...] = row_max
  log_norm_ref[...] = jnp.log(normalizer)


def _probabilities(scores, row_max, log_norm):
  """The softmax from the row statistics; ``s - m`` first, so that a fully masked row
  (every score and ``m`` the most negative value) keeps its ``1/ℓ``."""
  return jnp.exp((scores - row_max[:, None]) - log_norm[:, None])


def _score_gradient(config, probs, do, v, delta, allowed, kept, scale_ref):
  """``ds = P ⊙ (dP − δ)`` with ``dP = (dy vᵀ) ⊙ M/q``, 0 where a key is masked."""
  dp = plgpu.dot(do, v, trans_b=True, precision=config.precision).astype(config.stats)
  dp = _dropped(dp, kept, scale_ref)
  ds = probs * (dp - delta[:, None])
  return ds if allowed is None else jnp.where(allowed, ds, jnp.zeros((), ds.dtype))


def dq(q_ref, k_ref, v_ref, key_mask_ref, words_ref, scale_ref, do_ref, max_ref,
               log_norm_ref, delta_ref, dq_ref, *, config: Config, batch):
  q_start = pl.program_id(0) * config.block_q
  coords = _program_coords(config, batch)
  q, do = q_ref[...], do_ref[...]
  row_max, log_norm, delta = max_ref[...], log_norm_ref[...], delta_ref[...]

  def body(j, dq):
    k_start = j * config.block_k
    keys = pl.ds(k_start, config.block_k)
    k = k_ref[keys, :]
    scores, allowed = _tile_scores(config, q, k, q_start, k_start, key_mask_ref)
    probs = _probabilities(scores, row_max, log_norm)
    kept = _keep_bits(config, coords, probs.shape, words_ref, q_start, k_start)
    ds = _score_gradient(config, probs, do, v_ref[keys, :], delta, allowed, kept, scale_ref)
    return dq + plgpu.dot(ds.astype(k.dtype), k, precision=config.precision).astype(dq.dtype)

  end = _causal_end(config, q_start, k_ref.shape[0], config.block_k)
  dq = jax.lax.fori_loop(0, end, body, jnp.zeros(q.shape, config.stats))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def dkv(q_ref, k_ref, v_ref, key_mask_ref, words_ref, scale_ref, do_ref, max_ref,
                log_norm_ref, delta_ref, dk_ref, dv_ref, *, config: Config, batch):
  k_start = pl.program_id(0) * config.block_k
  coords = _program_coords(config, batch)
  k, v = k_ref[...], v_ref[...]

  def body(i, carry):
    dk, dv = carry
    q_start = i * config.block_q
    rows = pl.ds(q_start, config.block_q)
    q, do = q_ref[rows, :], do_ref[rows, :]
    scores, allowed = _tile_scores(config, q, k, q_start, k_start, key_mask_ref)
    probs = _probabilities(scores, max_ref[rows], log_norm_ref[rows])
    kept = _keep_bits(config, coords, probs.shape, words_ref, q_start, k_start)
    dropped = _dropped(probs, kept, scale_ref)
    dv = dv + plgpu.dot(dropped.astype(do.dtype), do, trans_a=True,
                        precision=config.precision).astype(dv.dtype)
    ds = _score_gradient(config, probs, do, v, delta_ref[rows], allowed, kept, scale_ref)
    dk = dk + plgpu.dot(ds.astype(q.dtype), q, trans_a=True,
                        precision=config.precision).astype(dk.dtype)
    return dk, dv

  # Causal: query blocks before this key block's first key see none of it.
  start = jax.lax.div(k_start, np.int32(config.block_q)) if config.skips_causal_blocks else 0
  init = (jnp.zeros(k.shape, config.stats), jnp.zeros(v.shape, config.stats))
  dk, dv = jax.lax.fori_loop(start, q_ref.shape[0] // config.block_q, body, init)
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)
