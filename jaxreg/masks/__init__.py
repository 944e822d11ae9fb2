"""Keep-masks: the one place where a PRNG key becomes random bits.

Every dropout variant in :mod:`jaxreg.stochastic` asks :func:`keep_mask` for its mask,
and the noise variants ask :func:`standard_normal`, so how bits are drawn is decided
here alone. One module per idea:

* :mod:`~jaxreg.masks.hashing`: the generator, a keyed hash of each element's index
  (:func:`random_bits`), with rows for arrays of ``2^32`` elements or more;
* :mod:`~jaxreg.masks.threshold`: bits to a keep-mask at a keep probability
  (:func:`keep_mask`, :func:`keep_probability`, :func:`resolution_bits`), or Flax's
  ``jax.random.bernoulli`` with ``exact=True``;
* :mod:`~jaxreg.masks.scaling`: the kept entries scaled by ``1/q``
  (:func:`apply_keep`, :func:`scale_kept`, :func:`exact_keep_prob`);
* :mod:`~jaxreg.masks.residuals`: what the backward pass keeps of a mask.

>>> import jax, jax.numpy as jnp
>>> keep = keep_mask(jax.random.key(0), (4,), 0.5)
>>> scale_kept(jnp.ones(4), keep.mask, keep.keep_prob).dtype
dtype('float32')
"""

from jaxreg.masks.hashing import random_bits
from jaxreg.masks.hashing import standard_normal
from jaxreg.masks.residuals import RESIDUALS
from jaxreg.masks.residuals import as_residual
from jaxreg.masks.residuals import check_residual
from jaxreg.masks.residuals import pack
from jaxreg.masks.residuals import residual_policy
from jaxreg.masks.residuals import unpack
from jaxreg.masks.scaling import apply_keep
from jaxreg.masks.scaling import exact_keep_prob
from jaxreg.masks.scaling import scale_kept
from jaxreg.masks.threshold import KeepMask
from jaxreg.masks.threshold import keep_mask
from jaxreg.masks.threshold import keep_probability
from jaxreg.masks.threshold import mask_shape
from jaxreg.masks.threshold import resolution_bits

__all__ = [
    "RESIDUALS",
    "KeepMask",
    "apply_keep",
    "as_residual",
    "check_residual",
    "exact_keep_prob",
    "keep_mask",
    "keep_probability",
    "mask_shape",
    "pack",
    "random_bits",
    "residual_policy",
    "resolution_bits",
    "scale_kept",
    "standard_normal",
    "unpack",
]
