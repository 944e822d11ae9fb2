"""The attention scores' layout and the causal mask, shared by every implementation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

QK = "...qhd,...khd->...hqk"  # (batch..., heads, q, k) scores from q and k.
WV = "...hqk,...khd->...qhd"  # Weighted values, back to (batch..., q, heads, depth).


def causal(q_start, q_length, k_start, k_length):
  """``True`` where key ``j`` is not after query ``i``, for the block at the starts.

  >>> causal(0, 2, 0, 2)
  Array([[ True, False],
         [ True,  True]], dtype=bool)
  """
  rows = q_start + jax.lax.broadcasted_iota(jnp.int32, (q_length, k_length), 0)
  cols = k_start + jax.lax.broadcasted_iota(jnp.int32, (q_length, k_length), 1)
  return rows >= cols
