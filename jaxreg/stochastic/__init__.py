"""The dropout family on arrays: pure functions of an explicit PRNG key.

Every function here takes ``(key, x, rate_or_stddev, *, deterministic=False, ...)``,
returns an array of ``x``'s shape and dtype, and draws its randomness from
:mod:`jaxreg.masks`. ``rate`` is always the *drop* probability ``p``.

A rate known at trace time is checked (``ValueError`` outside ``[0, 1]``); ``rate=0``
returns ``x`` itself and ``rate=1`` returns zeros, with zero gradient, and neither needs
a key. A traced rate (vmapped or scheduled) is clipped to ``[0, 1]`` and NaN is read as 1,
so no NaN ever comes out.

By kind: :mod:`~jaxreg.stochastic.elementwise` (:func:`dropout`, :func:`dropout_mask`,
:func:`drop_connect`; the inverted and classic conventions),
:mod:`~jaxreg.stochastic.structured` (:func:`drop_path`, :func:`drop_path_rates`,
:func:`dropblock`), :mod:`~jaxreg.stochastic.noise` (:func:`alpha_dropout`,
:func:`gaussian_dropout`, :func:`gaussian_noise`) and
:mod:`~jaxreg.stochastic.monte_carlo` (:func:`mc_predict`). The package is not named
``dropout``: ``jaxreg.dropout`` is the function.

>>> import jax, jax.numpy as jnp
>>> dropout(jax.random.key(0), jnp.ones(4), 0.0)
Array([1., 1., 1., 1.], dtype=float32)
"""

from jaxreg.stochastic._draws import draws_at_rate
from jaxreg.stochastic._draws import draws_at_stddev
from jaxreg.stochastic.elementwise import drop_connect
from jaxreg.stochastic.elementwise import dropout
from jaxreg.stochastic.elementwise import dropout_mask
from jaxreg.stochastic.monte_carlo import mc_predict
from jaxreg.stochastic.noise import alpha_dropout
from jaxreg.stochastic.noise import gaussian_dropout
from jaxreg.stochastic.noise import gaussian_noise
from jaxreg.stochastic.structured import drop_path
from jaxreg.stochastic.structured import drop_path_rates
from jaxreg.stochastic.structured import dropblock

__all__ = [
    "alpha_dropout",
    "draws_at_rate",
    "draws_at_stddev",
    "drop_connect",
    "drop_path",
    "drop_path_rates",
    "dropblock",
    "dropout",
    "dropout_mask",
    "gaussian_dropout",
    "gaussian_noise",
    "mc_predict",
]
