"""Elementwise dropout: each entry (or each entry of a broadcast mask) kept or dropped.

Two conventions for plain dropout (Srivastava et al., 2014):

* **inverted** (default, as in Flax, Keras and PyTorch): in training ``y = m·x/(1-p)``
  with ``m ~ Bernoulli(1-p)``, and ``y = x`` at evaluation. ``E[y] = x`` in training.
* **classic** (the 2014 paper's form): in training ``y = m·x``, unscaled, and at
  evaluation ``y = (1-p)·x``, so both phases have the same expectation.

The mask comes from :func:`jaxreg.masks.keep_mask` and is applied by
:func:`jaxreg.masks.apply_keep`, as attention dropout's is.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import masks
from jaxreg.stochastic import _draws

__all__ = ["drop_connect", "dropout", "dropout_mask"]

_MODES = ("inverted", "classic")


def dropout(key, x, rate, *, broadcast_dims: Sequence[int] = (),
            deterministic: bool = False, mode: str = "inverted", exact: bool = False,
            residual: str | None = None, global_shape: Sequence[int] | None = None,
            start: Sequence | None = None) -> jax.Array:
  r"""Dropout: zeroes each entry of ``x`` with probability ``rate``.

  Inverted mode (default): :math:`y = m \odot x / q` in training, :math:`y = x` when
  deterministic. Classic mode: :math:`y = m \odot x` in training,
  :math:`y = (1-p)\,x` when deterministic. Here :math:`m_i \sim \mathrm{Bernoulli}(q)`
  with :math:`q = 1 - p` (to :math:`2^{-24}`, or :math:`2^{-16}` for a 16-bit ``x``; see
  :mod:`jaxreg.masks`).

  The backward pass of :math:`y = m \odot x / q` needs only the mask, and by default
  stores none of it: the mask is drawn again from the key (``residual="recompute"``).
  ``residual="packed"`` stores it as 1 bit per element instead (the default with
  ``exact=True``, whose generator is too slow to run twice). Values and gradients are
  the same either way, and forward mode (``jvp``, ``jacfwd``) is unaffected.

  Args:
    key: PRNG key; may be ``None`` when ``deterministic`` or when ``rate`` is 0 or 1.
    x: floating-point array.
    rate: drop probability ``p`` in ``[0, 1]``.
    broadcast_dims: dims along which one mask entry is shared; e.g. ``(1, 2)`` on an
      ``NHWC`` array drops whole channels (spatial dropout), ``(1,)`` on ``(batch,
      time, features)`` is variational (time-shared) dropout.
    deterministic: evaluation mode: no randomness.
    mode: ``"inverted"`` or ``"classic"``.
    exact: draw the mask with ``jax.random.bernoulli`` and scale by ``1 - rate``, as
      ``flax.linen.Dropout`` and ``flax.nnx.Dropout`` do: bit-identical to them for
      the same key, and many times slower than the default fast path.
    residual: what the backward pass keeps of the mask: ``"recompute"`` (nothing),
      ``"packed"`` (1 bit per element), or ``None`` for the default above.
    global_shape, start: ``x`` is the block at ``start`` of an array of
      ``global_shape`` (a shard inside ``shard_map``): it gets exactly that block of
      the whole array's mask, drawn alone. ``start`` may be traced (from
      ``jax.lax.axis_index``). Give both or neither; see ``docs/sharding.md``.

  >>> import jax, jax.numpy as jnp
  >>> y = dropout(jax.random.key(0), jnp.ones(8), 0.5)
  >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
  True
  >>> dropout(None, jnp.ones(2), 0.25, deterministic=True, mode="classic")
  Array([0.75, 0.75], dtype=float32)
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  if mode not in _MODES:
    raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
  residual = masks.check_residual(residual, exact)
  if (global_shape is None) != (start is None):
    raise ValueError("global_shape and start go together: give both or neither, got "
                     f"global_shape={global_shape!r}, start={start!r}")
  block = {} if start is None else {"start": start, "block_shape": x.shape}
  if deterministic:
    if mode == "inverted":
      return x
    # 1 - rate and the product in float32 (or wider), rounded once to x's dtype.
    return (_dtypes.widen(x) * (1.0 - rate)).astype(x.dtype)
  if (shortcut := _draws.without_mask(x, rate, deterministic)) is not None:
    return shortcut

  def apply_mask(x):
    keep = masks.keep_mask(key, x.shape if global_shape is None else global_shape, rate,
                           broadcast_dims=broadcast_dims, exact=exact, dtype=x.dtype,
                           **block)
    mask = masks.as_residual(keep.mask, residual)
    return masks.apply_keep(x, mask, rate, mode=mode, exact=exact)

  return jax.checkpoint(apply_mask, policy=masks.residual_policy(residual))(x)


def dropout_mask(key, shape: Sequence[int], rate, *, broadcast_dims: Sequence[int] = (),
                 exact: bool = False, dtype=None) -> jax.Array:
  """The boolean keep-mask that :func:`dropout` applies for the same arguments.

  ``True`` means kept. The mask has the full ``shape``, constant along
  ``broadcast_dims``. ``dtype`` is that of the ``x`` it is for: :func:`dropout` draws
  a 16-bit ``x``'s mask at a resolution of its own (:func:`jaxreg.masks.keep_mask`);
  ``None`` gives the mask of a float32 ``x``.

  >>> import jax
  >>> dropout_mask(jax.random.key(0), (2, 3), 0.5, broadcast_dims=(0,)).shape
  (2, 3)
  """
  shape = tuple(shape)
  rate = _checks.check_rate(rate)
  masks.resolution_bits(dtype)  # A bad dtype raises at rates 0 and 1 too.
  trivial = _draws.trivial_rate(rate)
  if trivial is not None:
    return jnp.full(shape, trivial == 0.0)
  return jnp.broadcast_to(
      masks.keep_mask(key, shape, rate, broadcast_dims=broadcast_dims, exact=exact,
                      dtype=dtype).mask,
      shape)


def drop_connect(key, w, rate, *, deterministic: bool = False,
                 mode: str = "inverted", exact: bool = False,
                 residual: str | None = None) -> jax.Array:
  """DropConnect (Wan et al., 2013): dropout on a weight array instead of activations.

  Each weight is dropped independently for the step that draws ``key``; use it as
  ``x @ drop_connect(key, w, rate)``. Same scaling conventions and options as
  :func:`dropout`.

  >>> import jax, jax.numpy as jnp
  >>> drop_connect(jax.random.key(0), jnp.ones((2, 2)), 0.0)
  Array([[1., 1.],
         [1., 1.]], dtype=float32)
  """
  return dropout(key, w, rate, deterministic=deterministic, mode=mode, exact=exact,
                 residual=residual)
