"""Structured dropout: whole examples (stochastic depth) or contiguous blocks at once.

:func:`drop_path` is :func:`jaxreg.dropout` with a mask shared along every axis but the
batch axis (or along every axis); :func:`dropblock` drops square blocks of feature
maps around corners drawn by :func:`jaxreg.masks.keep_mask`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import _safe
from jaxreg import masks
from jaxreg.stochastic import _draws
from jaxreg.stochastic.elementwise import dropout

__all__ = ["drop_path", "drop_path_rates", "dropblock"]

_PER = ("row", "batch")  # drop_path: what one draw drops
_DATA_FORMATS = ("channels_last", "channels_first")


def drop_path(key, x, rate, *, deterministic: bool = False,
              mode: str = "inverted", exact: bool = False,
              residual: str | None = None, per: str = "row") -> jax.Array:
  """Stochastic depth (Huang et al., 2016): drops a residual branch.

  Applied to a residual branch, ``h + drop_path(key, f(h), rate)`` skips ``f``:

  * ``per="row"`` (default; timm's ``DropPath``, torchvision's
    ``StochasticDepth(mode="row")``): for a random subset of the batch, each example
    (along axis 0) dropped with probability ``rate``;
  * ``per="batch"`` (torchvision's ``mode="batch"``): for the whole batch at once,
    one draw for the whole array.

  Equal to :func:`jaxreg.dropout` (options included) with the mask shared along every
  axis but the first, or along every axis; survivors are scaled by ``1/(1-rate)`` in
  the default inverted mode.

  >>> import jax, jax.numpy as jnp
  >>> y = drop_path(jax.random.key(1), jnp.ones((4, 3)), 0.5)
  >>> bool(((y == 0).all(1) | (y == 2).all(1)).all())
  True
  >>> y = drop_path(jax.random.key(1), jnp.ones((4, 3)), 0.5, per="batch")
  >>> bool((y == 0).all() | (y == 2).all())
  True
  """
  x = _checks.check_floating(x)
  if per not in _PER:
    raise ValueError(f"per must be one of {_PER}, got {per!r}")
  if x.ndim == 0 and per == "row":
    raise ValueError("drop_path needs an array with a batch axis, got a scalar")
  first = 1 if per == "row" else 0
  return dropout(key, x, rate, broadcast_dims=tuple(range(first, x.ndim)),
                 deterministic=deterministic, mode=mode, exact=exact, residual=residual)


def drop_path_rates(depth: int, max_rate: float) -> list[float]:
  """Per-block stochastic-depth rates rising linearly from 0 to ``max_rate``.

  Block ``i`` of ``depth`` gets ``max_rate·i/(depth - 1)``: ``linspace(0, max_rate,
  depth)``, the rule of timm's ``calculate_drop_path_rates(max_rate, depth)`` (note the
  order of the arguments) and of ViT, DeiT, Swin and ConvNeXt recipes; one block gets
  0. Python floats, so each can configure a module.

  >>> drop_path_rates(5, 0.2)
  [0.0, 0.05, 0.1, 0.15000000000000002, 0.2]
  """
  depth = _checks.check_positive_int(depth, "depth")
  max_rate = _checks.check_rate(max_rate, "max_rate")
  if depth == 1:
    return [0.0]
  return [max_rate * i / (depth - 1) for i in range(depth)]


def dropblock(key, x, rate, block_size: int, *,
              deterministic: bool = False, exact: bool = False,
              couple_channels: bool = False,
              data_format: str = "channels_last") -> jax.Array:
  r"""DropBlock (Ghiasi et al., 2018): drops contiguous square blocks of feature maps.

  ``x`` is ``(batch, *spatial, channels)`` with ``data_format="channels_last"`` (the
  default, Flax's layout) or ``(batch, channels, *spatial)`` with
  ``"channels_first"`` (PyTorch's ``NCHW``, as torchvision and timm use). Block
  corners are drawn independently per example and channel, or per example only with
  ``couple_channels=True`` (one block pattern shared by all channels, timm's default),
  at the rate

  .. math::
    \gamma = \frac{p}{s^d}\prod_k \frac{n_k}{n_k - s + 1}

  (``s = block_size``, ``n_k`` the spatial sizes, ``d`` their number), over the
  positions where a whole block fits; each drawn corner drops the ``s^d`` block that
  follows it, so for small ``p`` about a fraction ``p`` of each map is dropped (less
  for large ``p``, where blocks overlap, as in the paper). The survivors are
  scaled by ``size / count_kept`` over the whole array, as in the paper, which keeps
  the sum of a constant input exactly. ``block_size=1`` is plain dropout in
  distribution. ``rate=1`` returns zeros. ``exact`` draws the corners as
  :func:`jaxreg.dropout` draws its mask.

  >>> import jax, jax.numpy as jnp
  >>> dropblock(jax.random.key(0), jnp.ones((1, 6, 6, 2)), 0.2, 3).shape
  (1, 6, 6, 2)
  >>> y = dropblock(jax.random.key(0), jnp.ones((1, 2, 6, 6)), 0.2, 3,
  ...               couple_channels=True, data_format="channels_first")
  >>> bool(((y[:, 0] == 0) == (y[:, 1] == 0)).all())
  True
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  if data_format not in _DATA_FORMATS:
    raise ValueError(f"data_format must be one of {_DATA_FORMATS}, got {data_format!r}")
  if x.ndim < 3:
    layout = ("(batch, *spatial, channels)" if data_format == "channels_last"
              else "(batch, channels, *spatial)")
    raise ValueError(f"dropblock needs a {data_format} array {layout}, got shape {x.shape}")
  block_size = _checks.check_positive_int(block_size, "block_size")
  channels_axis = x.ndim - 1 if data_format == "channels_last" else 1
  spatial_axes = [axis for axis in range(1, x.ndim) if axis != channels_axis]
  spatial = tuple(x.shape[axis] for axis in spatial_axes)
  if block_size > min(spatial):
    raise ValueError(
        f"block_size {block_size} is larger than the spatial dims {spatial} of x")
  if (shortcut := _draws.without_mask(x, rate, deterministic)) is not None:
    return shortcut
  valid = [n - block_size + 1 for n in spatial]
  ratio = 1.0
  for n, v in zip(spatial, valid):
    ratio *= n / v
  gamma = jnp.minimum(jnp.asarray(rate, jnp.float32) * ratio / block_size**len(spatial), 1.0)
  corner_shape = list(x.shape)
  window = [1] * x.ndim
  padding = [(0, 0)] * x.ndim
  for axis, v in zip(spatial_axes, valid):
    corner_shape[axis] = v
    window[axis] = block_size
    padding[axis] = (block_size - 1, block_size - 1)
  if couple_channels:
    corner_shape[channels_axis] = 1
  # Block corners are the entries a keep-mask at rate gamma drops.
  corners = ~masks.keep_mask(key, tuple(corner_shape), gamma, exact=exact).mask
  dropped = jax.lax.reduce_window(corners, False, jax.lax.bitwise_or, tuple(window),
                                  (1,) * x.ndim, tuple(padding))
  # A traced rate of 1 must drop everything too, which gamma <= 1 alone does not.
  kept = ~dropped & (jnp.asarray(rate) < 1)
  # kept broadcasts along coupled channels; the kept fraction is the same either way.
  wide = _dtypes.wide(x.dtype)
  scale = kept.size * _safe.safe_reciprocal(jnp.sum(kept, dtype=wide))
  return jnp.where(kept, (x.astype(wide) * scale).astype(x.dtype), jnp.zeros((), x.dtype))
