"""The dropout family on arrays: pure functions of an explicit PRNG key.

Every function here takes ``(key, x, rate_or_stddev, *, deterministic=False, ...)``,
returns an array of ``x``'s shape and dtype, and draws its randomness from
:mod:`jaxreg.masks`. ``rate`` is always the *drop* probability ``p``.

Two conventions for plain dropout (Srivastava et al., 2014):

* **inverted** (default, as in Flax, Keras and PyTorch): in training ``y = m·x/(1-p)``
  with ``m ~ Bernoulli(1-p)``, and ``y = x`` at evaluation. ``E[y] = x`` in training.
* **classic** (the 2014 paper's form): in training ``y = m·x``, unscaled, and at
  evaluation ``y = (1-p)·x``, so both phases have the same expectation.

A rate known at trace time is checked (``ValueError`` outside ``[0, 1]``); ``rate=0``
returns ``x`` itself and ``rate=1`` returns zeros, with zero gradient, and neither needs
a key. A traced rate (vmapped or scheduled) is clipped to ``[0, 1]`` and NaN is read as 1,
so no NaN ever comes out.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import masks

# SELU's constants (Klambauer et al., 2017): selu(x) -> -scale·alpha as x -> -inf.
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_ALPHA_PRIME = -_SELU_SCALE * _SELU_ALPHA

_MODES = ("inverted", "classic")
_PER = ("row", "batch")  # drop_path: what one draw drops
_DATA_FORMATS = ("channels_last", "channels_first")


def _safe_reciprocal(q):
  """``1/q``, and 0 where ``q == 0``, with a gradient that is never NaN."""
  positive = q > 0
  return jnp.where(positive, 1.0 / jnp.where(positive, q, 1.0), 0.0)


def _safe_sqrt(v):
  """``sqrt(v)`` for ``v >= 0``, with gradient 0 instead of infinity at ``v == 0``."""
  positive = v > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1.0)), 0.0)


def _trivial_rate(rate) -> float | None:
  """The rate as a float when it is a known 0 or 1 (no randomness needed), else None."""
  if isinstance(rate, float) and rate in (0.0, 1.0):
    return rate
  return None


def draws_at_rate(rate) -> bool:
  """Whether the dropout family draws random bits at ``rate``: not at a known 0 or 1,
  where the output is ``x`` or zeros and no key is needed.

  The rate is checked first, so a bad one raises its ``ValueError`` before a missing
  key could be reported. The Flax modules ask this before they ask for a key, at the
  rates where Flax's ``Dropout`` asks for one, so later modules get Flax's keys.

  >>> draws_at_rate(0.0), draws_at_rate(0.5)
  (False, True)
  """
  return _trivial_rate(_checks.check_rate(rate)) is None


def draws_at_stddev(stddev) -> bool:
  """Whether :func:`gaussian_noise` draws random numbers at ``stddev`` (checked): not
  at a known 0.

  >>> draws_at_stddev(0.0), draws_at_stddev(0.1)
  (False, True)
  """
  stddev = _checks.check_nonnegative(stddev, "stddev")
  if isinstance(stddev, jax.core.Tracer):
    return True
  # Any concrete zero, a Python, NumPy or 0-d JAX one alike, needs no key.
  return bool(np.any(np.asarray(stddev) != 0))


def _without_mask(x, rate, deterministic: bool):
  """The output when no draw is needed: ``x`` when deterministic or for a known rate
  of 0, zeros for a known rate of 1; ``None`` otherwise."""
  if deterministic or _trivial_rate(rate) == 0.0:
    return x
  if _trivial_rate(rate) == 1.0:
    return jnp.zeros_like(x)
  return None


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
  trivial = _trivial_rate(rate)
  if trivial == 0.0:
    return x
  if trivial == 1.0:
    return jnp.zeros_like(x)

  def apply_mask(x):
    keep = masks.keep_mask(key, x.shape if global_shape is None else global_shape, rate,
                           broadcast_dims=broadcast_dims, exact=exact, dtype=x.dtype,
                           **block)
    mask = masks.as_residual(keep.mask, residual)
    if mode == "classic":
      return jnp.where(mask, x, jnp.zeros((), x.dtype))
    if exact:  # Flax's arithmetic, x / (1 - rate) in x's dtype: bit-identical to it.
      return jnp.where(mask, x / _exact_keep(rate, x.dtype), jnp.zeros((), x.dtype))
    # keep.keep_prob, as a Python float for a constant rate: scale_kept rounds faster.
    return masks.scale_kept(x, mask, masks.keep_probability(rate, x.dtype))

  return jax.checkpoint(apply_mask, policy=masks.residual_policy(residual))(x)


def _exact_keep(rate, dtype):
  """Flax's divisor ``1 - rate``: a Python float for a known rate, as Flax has it (so a
  weak type, which takes ``dtype``, float64 under x64 included); a traced rate's
  ``1 - rate`` in ``dtype``, 1 where it is 0 (no ``0/0``)."""
  if isinstance(rate, float):
    return 1.0 - rate  # Never 0 here: a known rate of 1 returns zeros before.
  keep = (1.0 - rate).astype(dtype)
  return jnp.where(keep > 0, keep, jnp.ones((), dtype))


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
  trivial = _trivial_rate(rate)
  if trivial is not None:
    return jnp.full(shape, trivial == 0.0)
  return jnp.broadcast_to(
      masks.keep_mask(key, shape, rate, broadcast_dims=broadcast_dims, exact=exact,
                      dtype=dtype).mask,
      shape)


def alpha_dropout(key, x, rate, *, broadcast_dims: Sequence[int] = (),
                  deterministic: bool = False, exact: bool = False) -> jax.Array:
  r"""Alpha dropout (Klambauer et al., 2017), the dropout for SELU networks.

  A dropped entry is set to SELU's negative saturation value
  :math:`\alpha' = -\lambda\alpha \approx -1.7581` instead of 0, then an affine map
  restores zero mean and unit variance for standard-normal input:

  .. math::
    y = a\,(m \odot x + \alpha' (1 - m)) + b,\quad
    a = \big(q + \alpha'^2 q (1-q)\big)^{-1/2},\quad b = -a\,\alpha' (1-q).

  ``rate=1`` returns zeros (as PyTorch does), where the affine map is undefined.
  ``broadcast_dims`` shares one mask entry along those dims, as in :func:`dropout`
  (Keras's ``noise_shape``; ``(1, 2)`` on ``NHWC`` is PyTorch's
  ``FeatureAlphaDropout``); ``a`` and ``b`` are unchanged, since each entry is still
  kept with probability ``q``. ``exact`` draws the mask as in :func:`dropout`.

  >>> import jax, jax.numpy as jnp
  >>> alpha_dropout(jax.random.key(0), jnp.ones(3), 0.1).dtype
  dtype('float32')
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  if (shortcut := _without_mask(x, rate, deterministic)) is not None:
    return shortcut
  keep = masks.keep_mask(key, x.shape, rate, broadcast_dims=broadcast_dims, exact=exact,
                         dtype=x.dtype)
  wide = _dtypes.wide(x.dtype)
  q = keep.keep_prob.astype(wide)
  a = jnp.where(q > 0, jax.lax.rsqrt(jnp.where(q > 0, q + _ALPHA_PRIME**2 * q * (1 - q), 1.0)), 0.0)
  b = -a * _ALPHA_PRIME * (1 - q)
  kept = jnp.where(keep.mask, x.astype(wide), jnp.asarray(_ALPHA_PRIME, wide))
  return (a * kept + b).astype(x.dtype)  # In float32 or wider, rounded once.


def gaussian_dropout(key, x, rate, *, deterministic: bool = False) -> jax.Array:
  r"""Gaussian dropout: multiplicative noise with the variance of dropout.

  :math:`y = x \odot \epsilon`, :math:`\epsilon \sim \mathcal{N}(1, p/(1-p))`
  (Srivastava et al., 2014, §10; Keras ``GaussianDropout``). ``E[y] = x``.
  ``rate=1`` (infinite variance) returns zeros.

  >>> import jax, jax.numpy as jnp
  >>> gaussian_dropout(None, jnp.ones(2), 0.5, deterministic=True)
  Array([1., 1.], dtype=float32)
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  if (shortcut := _without_mask(x, rate, deterministic)) is not None:
    return shortcut
  wide = _dtypes.wide(x.dtype)
  rate = jnp.asarray(rate, wide)
  below_one = rate < 1
  # The true d(stddev)/d(rate) is infinite at 0; a traced rate gets 0 there, not NaN.
  stddev = _safe_sqrt(rate / jnp.where(below_one, 1.0 - rate, 1.0))
  # Noise in float32 (float64 for a float64 x), the product rounded once to x's dtype.
  noise = 1.0 + stddev * masks.standard_normal(key, x.shape, wide)
  return jnp.where(below_one, (x.astype(wide) * noise).astype(x.dtype),
                   jnp.zeros((), x.dtype))


def gaussian_noise(key, x, stddev, *, deterministic: bool = False) -> jax.Array:
  r"""Additive Gaussian noise: :math:`y = x + \sigma\,\epsilon`, :math:`\epsilon \sim \mathcal{N}(0, 1)`.

  ``stddev`` must be ``>= 0``; a traced negative or NaN ``stddev`` acts as 0.

  >>> import jax, jax.numpy as jnp
  >>> gaussian_noise(jax.random.key(0), jnp.zeros(4), 0.0)
  Array([0., 0., 0., 0.], dtype=float32)
  """
  x = _checks.check_floating(x)
  stddev = _checks.check_nonnegative(stddev, "stddev")
  if deterministic or not draws_at_stddev(stddev):
    return x
  wide = _dtypes.wide(x.dtype)
  noise = masks.standard_normal(key, x.shape, wide)
  # Drawn in float32 (float64 for a float64 x), the sum rounded once to x's dtype.
  return (x.astype(wide) + jnp.asarray(stddev, wide) * noise).astype(x.dtype)


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

  Equal to :func:`dropout` (options included) with the mask shared along every axis
  but the first, or along every axis; survivors are scaled by ``1/(1-rate)`` in the
  default inverted mode.

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
  if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
    raise ValueError(f"depth must be an int >= 1, got {depth!r}")
  max_rate = _checks.check_rate(max_rate, "max_rate")
  if depth == 1:
    return [0.0]
  return [max_rate * i / (depth - 1) for i in range(depth)]


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
  :func:`dropout` draws its mask.

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
  if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
    raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
  channels_axis = x.ndim - 1 if data_format == "channels_last" else 1
  spatial_axes = [axis for axis in range(1, x.ndim) if axis != channels_axis]
  spatial = tuple(x.shape[axis] for axis in spatial_axes)
  if block_size > min(spatial):
    raise ValueError(
        f"block_size {block_size} is larger than the spatial dims {spatial} of x")
  if (shortcut := _without_mask(x, rate, deterministic)) is not None:
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
  scale = kept.size * _safe_reciprocal(jnp.sum(kept, dtype=wide))
  return jnp.where(kept, (x.astype(wide) * scale).astype(x.dtype), jnp.zeros((), x.dtype))


def mc_predict(fn: Callable[..., Any], key, *args, num_samples: int):
  """Monte-Carlo dropout (Gal & Ghahramani, 2016): predictive mean and variance.

  Evaluates ``fn(k, *args)`` for ``num_samples`` independent keys ``k`` split from
  ``key``, vmapped, and returns ``(mean, variance)`` over the samples, leaf by leaf if
  ``fn`` returns a pytree. The variance is the population variance (``ddof=0``).
  ``fn`` must apply its dropout in training mode with the key it is given.

  >>> import jax, jax.numpy as jnp
  >>> fn = lambda k, x: dropout(k, x, 0.5)
  >>> mean, var = mc_predict(fn, jax.random.key(0), jnp.ones(3), num_samples=64)
  >>> mean.shape, var.shape
  ((3,), (3,))
  """
  if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
    raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
  keys = jax.random.split(_checks.check_key(key), num_samples)
  samples = jax.vmap(lambda k: fn(k, *args))(keys)
  mean = jax.tree.map(lambda s: jnp.mean(s, axis=0), samples)
  variance = jax.tree.map(lambda s: jnp.var(s, axis=0), samples)
  return mean, variance
