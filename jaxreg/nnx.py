"""Flax NNX modules for the dropout family and for activity penalties.

Each module holds its configuration and an rng stream, and calls the function of the
same name in :mod:`jaxreg.dropout`; the maths lives there. Construction and call mirror
``flax.nnx.Dropout``: ``rngs=`` at construction forks the ``rng_collection`` stream
(``'dropout'``) for the module; ``__call__(inputs, *, deterministic=None, rngs=None)``
takes a flag and a key, ``RngStream`` or ``Rngs`` that override the module's own; and
``deterministic`` is an attribute, so ``model.train()``, ``model.eval()``,
``set_attributes(deterministic=...)`` and ``nnx.view(model, deterministic=...)`` switch
it. No key is drawn when nothing random happens (``deterministic=True``, a rate of 0 or
1, a ``stddev`` of 0), so evaluation needs no rngs and leaves the streams untouched.

:class:`ActivityRegularization` keeps the penalty of an activation in an
:class:`ActivityLoss` variable, and :func:`activity_loss` sums those of a model.

Monte-Carlo dropout (:func:`jaxreg.mc_predict`) with an NNX model: pass each sample's
key to the dropout call, so that nothing inside the vmap mutates the model.

>>> import jax, jax.numpy as jnp, jaxreg as jr
>>> from flax import nnx
>>> class Net(nnx.Module):
...   def __init__(self, rngs):
...     self.hidden = nnx.Linear(3, 16, rngs=rngs)
...     self.dropout = Dropout(0.5)
...     self.out = nnx.Linear(16, 1, rngs=rngs)
...   def __call__(self, x, *, rngs=None):
...     return self.out(self.dropout(nnx.relu(self.hidden(x)), rngs=rngs))
>>> model, x = Net(nnx.Rngs(0)), jnp.ones((4, 3))
>>> predict = lambda key, x: model(x, rngs=key)
>>> mean, variance = jr.mc_predict(predict, jax.random.key(1), x, num_samples=32)
>>> mean.shape, variance.shape
((4, 1), (4, 1))
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jaxreg.dropout import alpha_dropout
from jaxreg.dropout import drop_path
from jaxreg.dropout import dropblock
from jaxreg.dropout import draws_at_rate
from jaxreg.dropout import draws_at_stddev
from jaxreg.dropout import dropout
from jaxreg.dropout import gaussian_dropout
from jaxreg.dropout import gaussian_noise
from jaxreg.activity import activity_penalty
from jaxreg.activity import check_activity_reduction
from jaxreg.regularizers import ElasticNet
from jaxreg.per_layer import declared
from jaxreg.regularizers import Regularizer

__all__ = [
    "Dropout",
    "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "DropPath",
    "DropBlock",
    "ActivityLoss",
    "ActivityRegularization",
    "activity_loss",
    "REGULARIZER",
    "regularizer",
    "param_loss",
]

RngSource = nnx.Rngs | nnx.RngStream | None


class _Stochastic(nnx.Module):
  """The ``deterministic`` flag and the rng stream, handled as ``flax.nnx.Dropout`` does."""

  def __init__(self, *, deterministic: bool | None, rng_collection: str, rngs: RngSource):
    self.deterministic = deterministic
    self.rng_collection = rng_collection
    if isinstance(rngs, nnx.Rngs):
      self.rngs = rngs[rng_collection].fork()
    elif isinstance(rngs, nnx.RngStream):
      self.rngs = rngs.fork()
    elif rngs is None:
      self.rngs = nnx.data(None)
    else:
      raise TypeError(f"rngs must be a Rngs, RngStream or None, but got {type(rngs)}.")

  def _key(self, deterministic: bool | None, rngs, draws: bool):
    """``(deterministic, key)``: the call's flag or else the attribute, and a key only
    when one is used, from the call's ``rngs`` or else the module's stream."""
    name = type(self).__name__
    deterministic = self.deterministic if deterministic is None else deterministic
    if deterministic is None:
      raise ValueError(
          f"No `deterministic` argument was provided to {name}. Pass it to the "
          f"constructor ({name}(..., deterministic=True/False)), to the call "
          "(layer(x, deterministic=True/False)), or set it with model.train(), "
          "model.eval() or nnx.view(model, deterministic=True/False).")
    if deterministic or not draws:
      return deterministic, None
    rngs = self.rngs if rngs is None else rngs
    if rngs is None:
      raise ValueError(
          f"`deterministic` is False, but no `rngs` argument was provided to {name} "
          "as either a __call__ argument or class attribute.")
    if isinstance(rngs, nnx.Rngs):
      return deterministic, rngs[self.rng_collection]()
    if isinstance(rngs, nnx.RngStream):
      return deterministic, rngs()
    if isinstance(rngs, jax.Array):
      return deterministic, rngs
    raise TypeError(f"rngs must be a Rngs, RngStream or jax.Array, but got {type(rngs)}.")

  def set_view(self, deterministic: bool | None = None):
    """Used by ``nnx.view``: ``deterministic=True`` turns the randomness off."""
    if deterministic is not None:
      self.deterministic = deterministic


class Dropout(_Stochastic):
  r"""Dropout; a drop-in for ``flax.nnx.Dropout`` with the same arguments and call.

  Inverted (default): :math:`y = m \odot x / (1-p)` in training and :math:`y = x` when
  deterministic; classic: :math:`y = m \odot x` and :math:`y = (1-p)\,x`; with
  :math:`m_i \sim \mathrm{Bernoulli}(1-p)`. See :func:`jaxreg.dropout`.

  **Not bit-identical to Flax by default**, for the reasons given in
  :class:`jaxreg.linen.Dropout` (a faster generator, same distribution); with
  ``exact=True`` it draws and scales as Flax does: same stream, same output, bit for bit.

  Args:
    rate: the drop probability ``p`` (not the keep probability).
    broadcast_dims: dims that share one mask entry (``(1, 2)`` on ``NHWC`` drops whole
      channels).
    deterministic: evaluation mode; the call's ``deterministic`` takes precedence.
    rng_collection: the stream forked from ``rngs`` (or read from a call's ``Rngs``).
    rngs: ``Rngs``, ``RngStream`` or ``None`` (then every training call needs ``rngs``).
    mode: ``"inverted"`` or ``"classic"``.
    exact: draw the mask as Flax does (bit-identical to it, and slower).
    residual: what the backward pass keeps of the mask, ``"recompute"`` or
      ``"packed"``; ``None`` lets :func:`jaxreg.dropout` choose.

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> layer = Dropout(0.5, rngs=nnx.Rngs(dropout=0))
  >>> y = layer(jnp.ones(6))
  >>> bool(((y == 0) | (y == 2)).all())
  True
  >>> layer.eval()
  >>> layer(jnp.ones(2))
  Array([1., 1.], dtype=float32)
  """

  def __init__(self, rate: float, *, broadcast_dims: Sequence[int] = (),
               deterministic: bool | None = False, rng_collection: str = "dropout",
               rngs: RngSource = None, mode: str = "inverted", exact: bool = False,
               residual: str | None = None):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate = rate
    self.broadcast_dims = broadcast_dims
    self.mode = mode
    self.exact = exact
    self.residual = residual

  def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    deterministic, key = self._key(deterministic, rngs, draws_at_rate(self.rate))
    return dropout(key, inputs, self.rate, broadcast_dims=self.broadcast_dims,
                   deterministic=deterministic, mode=self.mode, exact=self.exact,
                   residual=self.residual)


class AlphaDropout(_Stochastic):
  """Alpha dropout for SELU networks: keeps zero mean and unit variance.

  See :func:`jaxreg.alpha_dropout` for the affine map.

  >>> import jax.numpy as jnp
  >>> AlphaDropout(0.1, deterministic=True)(jnp.ones(3))
  Array([1., 1., 1.], dtype=float32)
  """

  def __init__(self, rate: float, *, deterministic: bool | None = False,
               rng_collection: str = "dropout", rngs: RngSource = None, exact: bool = False,
               broadcast_dims: Sequence[int] = ()):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate = rate
    self.exact = exact
    self.broadcast_dims = broadcast_dims

  def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    deterministic, key = self._key(deterministic, rngs, draws_at_rate(self.rate))
    return alpha_dropout(key, inputs, self.rate, broadcast_dims=self.broadcast_dims,
                         deterministic=deterministic, exact=self.exact)


class GaussianDropout(_Stochastic):
  r"""Gaussian dropout: multiplicative noise :math:`y = x \odot \epsilon`.

  :math:`\epsilon \sim \mathcal{N}(1, p/(1-p))`, the variance of dropout at rate ``p``.
  See :func:`jaxreg.gaussian_dropout`.

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> GaussianDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones(3)).shape
  (3,)
  """

  def __init__(self, rate: float, *, deterministic: bool | None = False,
               rng_collection: str = "dropout", rngs: RngSource = None):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate = rate

  def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    deterministic, key = self._key(deterministic, rngs, draws_at_rate(self.rate))
    return gaussian_dropout(key, inputs, self.rate, deterministic=deterministic)


class GaussianNoise(_Stochastic):
  r"""Additive noise :math:`y = x + \sigma\epsilon`, :math:`\epsilon \sim \mathcal{N}(0, 1)`.

  Its key comes from the ``'dropout'`` stream too, unless ``rng_collection`` says
  otherwise. See :func:`jaxreg.gaussian_noise`.

  >>> import jax.numpy as jnp
  >>> GaussianNoise(0.1, deterministic=True)(jnp.zeros(2))
  Array([0., 0.], dtype=float32)
  """

  def __init__(self, stddev: float, *, deterministic: bool | None = False,
               rng_collection: str = "dropout", rngs: RngSource = None):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.stddev = stddev

  def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    deterministic, key = self._key(deterministic, rngs, draws_at_stddev(self.stddev))
    return gaussian_noise(key, inputs, self.stddev, deterministic=deterministic)


class DropPath(_Stochastic):
  """Stochastic depth: drops whole examples (axis 0) of a residual branch, or the
  whole branch for the whole batch with ``per="batch"``.

  Use it as ``x + self.drop_path(self.branch(x))``; :func:`jaxreg.drop_path_rates`
  gives per-block rates. See :func:`jaxreg.drop_path`.

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> y = DropPath(0.5, rngs=nnx.Rngs(1))(jnp.ones((4, 3)))
  >>> bool(((y == 0).all(1) | (y == 2).all(1)).all())
  True
  """

  def __init__(self, rate: float, *, deterministic: bool | None = False,
               rng_collection: str = "dropout", rngs: RngSource = None, mode: str = "inverted",
               exact: bool = False, residual: str | None = None, per: str = "row"):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate = rate
    self.mode = mode
    self.exact = exact
    self.residual = residual
    self.per = per

  def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    deterministic, key = self._key(deterministic, rngs, draws_at_rate(self.rate))
    return drop_path(key, inputs, self.rate, deterministic=deterministic, mode=self.mode,
                     exact=self.exact, residual=self.residual, per=self.per)


class DropBlock(_Stochastic):
  """DropBlock: drops ``block_size``-wide square blocks of feature maps.

  Channels-last by default, ``data_format="channels_first"`` for ``NCHW``;
  ``couple_channels=True`` shares one block pattern across channels (timm's default).
  See :func:`jaxreg.dropblock` for the block rate and the rescaling.

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> DropBlock(0.2, 3, rngs=nnx.Rngs(0))(jnp.ones((1, 6, 6, 2))).shape
  (1, 6, 6, 2)
  """

  def __init__(self, rate: float, block_size: int, *, deterministic: bool | None = False,
               rng_collection: str = "dropout", rngs: RngSource = None, exact: bool = False,
               couple_channels: bool = False, data_format: str = "channels_last"):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate = rate
    self.block_size = block_size
    self.exact = exact
    self.couple_channels = couple_channels
    self.data_format = data_format

  def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    deterministic, key = self._key(deterministic, rngs, draws_at_rate(self.rate))
    return dropblock(key, inputs, self.rate, self.block_size, deterministic=deterministic,
                     exact=self.exact, couple_channels=self.couple_channels,
                     data_format=self.data_format)


class ActivityLoss(nnx.Variable):
  """The activity penalty an :class:`ActivityRegularization` computed in its latest call.

  Select them with ``nnx.state(model, ActivityLoss)``; :func:`activity_loss` sums them.
  """


class ActivityRegularization(nnx.Module):
  r"""Returns its input unchanged and keeps :math:`l_1\sum|a| + l_2\sum a^2` of it.

  The penalty is :class:`jaxreg.ElasticNet` ``(l1, l2)`` of the activation ``a``, summed
  over every entry and divided by the batch size ``a.shape[0]`` as Keras ≥ 3.14 does
  (``reduction="batch_mean"``), or summed over the batch too with ``reduction="sum"``
  (Keras before 3.14); see :func:`jaxreg.activity.activity_penalty`. Each call
  overwrites the module's :class:`ActivityLoss` (a scalar of the default float dtype,
  float32, or float64 under x64; zero before the first call), so the state keeps one
  shape under ``nnx.jit``, ``nnx.scan`` and ``nnx.vmap``, and a module applied twice in
  one forward pass keeps only its second penalty: use one module per call site. Add
  :func:`activity_loss` of the model, read inside the loss function after the forward
  pass, to the training loss; its gradient reaches every parameter the activation
  depends on.

  >>> import jax.numpy as jnp
  >>> layer = ActivityRegularization(l1=0.5, l2=0.25)
  >>> layer(jnp.array([1.0, -2.0]))
  Array([ 1., -2.], dtype=float32)
  >>> float(activity_loss(layer))
  1.375
  """

  def __init__(self, l1: float = 0.0, l2: float = 0.0, *, reduction: str = "batch_mean"):
    self.l1 = l1
    self.l2 = l2
    self.reduction = check_activity_reduction(reduction)
    # The default float dtype (float64 under x64), so that no penalty is rounded here.
    self.activity = ActivityLoss(jnp.zeros((), jnp.result_type(float)))

  def __call__(self, inputs) -> jax.Array:
    self.activity[...] = activity_penalty(inputs, ElasticNet(self.l1, self.l2),
                                          reduction=self.reduction)
    return inputs


def activity_loss(model) -> jax.Array:
  """The sum of every :class:`ActivityLoss` in ``model``, over layers and members too
  (``nnx.scan`` and ``nnx.vmap`` stack them)."""
  losses = jax.tree.leaves(nnx.state(model, ActivityLoss))
  return sum((jnp.sum(loss) for loss in losses), start=jnp.zeros((), jnp.float32))


REGULARIZER = "regularizer"
"""The metadata key of a regularizer declared on an ``nnx.Param``."""


def _declaration(node):
  if isinstance(node, nnx.Variable):
    return node.get_metadata().get(REGULARIZER)
  return None


def regularizer(model) -> Regularizer:
  """The regularizers declared on a model's parameters, as one regularizer.

  Keras's ``kernel_regularizer=`` habit, written next to the layer as ``nnx.Param``
  metadata: ``nnx.Linear(3, 4, kernel_metadata={"regularizer": jr.l2(1e-4)},
  rngs=rngs)`` (any layer with ``*_metadata`` arguments), or
  ``kernel_init=nnx.with_metadata(init, regularizer=...)``, or
  ``layer.kernel.set_metadata(regularizer=...)`` after construction. Each declared
  regularizer is restricted (``where=jaxreg.select.paths(...)``) to the parameters it
  was declared on, so it is the same object as the equivalent ``where=`` form: use it
  with ``jaxreg.transforms`` (its ``prox`` too). ``model`` is a module or its state
  (``nnx.state(model)``, ``nnx.state(model, nnx.Param)``). Raises ``ValueError`` when
  nothing is declared.

  >>> import jax.numpy as jnp, jaxreg as jr
  >>> from flax import nnx
  >>> layer = nnx.Linear(3, 2, kernel_init=nnx.initializers.ones,
  ...                    kernel_metadata={"regularizer": jr.L1(0.5)}, rngs=nnx.Rngs(0))
  >>> float(param_loss(layer))   # 0.5 · Σ|1| over the (3, 2) kernel
  3.0
  >>> regularizer(layer).selected(layer)
  {'kernel': (3, 2)}
  """
  return declared(model, _declaration,
                  how='kernel_metadata={"regularizer": ...} or nnx.with_metadata')


def param_loss(model) -> jax.Array:
  """The total penalty of the regularizers declared on ``model``'s parameters:
  ``regularizer(model)(model)``; layers stacked by ``nnx.scan``/``nnx.vmap`` are summed
  over layers and members. Call it inside the loss function, as
  :func:`activity_loss`."""
  return regularizer(model)(model)
