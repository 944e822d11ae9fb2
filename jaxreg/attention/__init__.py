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
  without ever forming the ``T×T`` weights;
* and lets ``implementation="pallas"`` (:mod:`~jaxreg.attention.pallas`) draw it
  inside one fused flash-attention kernel, forward and backward, tile by tile.

``exact=True`` draws Flax's mask instead, ``jax.random.bernoulli(dropout_rng, 1 - p,
shape)``, and scales as Flax does, so the dense path equals Flax bit for bit.

One module per path: :mod:`~jaxreg.attention.dense`,
:mod:`~jaxreg.attention.blockwise` and :mod:`~jaxreg.attention.pallas`, all called by
:mod:`~jaxreg.attention.dot_product`, which checks the arguments.
"""

from jaxreg.attention.dot_product import IMPLEMENTATIONS
from jaxreg.attention.dot_product import dot_product_attention

__all__ = [
    "IMPLEMENTATIONS",
    "dot_product_attention",
]
