"""Flax linen modules for the dropout family and for activity penalties.

Each module holds its configuration, asks for a key with
``self.make_rng(rng_collection)`` (``'dropout'`` unless told otherwise, as
``flax.linen.Dropout`` does) and calls the function of the same name in
:mod:`jaxreg.dropout`; the maths lives there. Every random module takes
``__call__(inputs, deterministic=None, rng=None)``: ``deterministic`` is given to the
constructor or to the call, exactly once (``flax.linen.merge_param``), and ``rng``
overrides the key from the collection. No key is asked for when nothing random happens
(``deterministic=True``, a rate of 0 or 1, a ``stddev`` of 0), so evaluation needs no
``rngs``.

:class:`ActivityRegularization` records the penalty of an activation in the
``'losses'`` collection, and :func:`activity_loss` sums what was recorded.

Monte-Carlo dropout (:func:`jaxreg.mc_predict`) with a linen model: the key each
sample gets becomes the ``'dropout'`` rng of one ``apply``.

>>> import jax, jax.numpy as jnp, flax.linen as nn, jaxreg as jr
>>> model = nn.Sequential([nn.Dense(16), nn.relu, Dropout(0.5, deterministic=False),
...                        nn.Dense(1)])
>>> x = jnp.ones((4, 3))
>>> variables = model.init(jax.random.key(0), x)
>>> predict = lambda key, x: model.apply(variables, x, rngs={"dropout": key})
>>> mean, variance = jr.mc_predict(predict, jax.random.key(1), x, num_samples=32)
>>> mean.shape, variance.shape
((4, 1), (4, 1))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

from flax import struct
import flax.linen as nn
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
    "ActivityRegularization",
    "activity_loss",
    "LOSSES",
    "Regularized",
    "with_regularizer",
    "regularizer",
    "param_loss",
]

LOSSES = "losses"
"""The collection :class:`ActivityRegularization` records its penalty in."""


class _Stochastic(nn.Module):
  """Key handling shared by the modules below, which declare the fields it reads:
  ``deterministic`` and ``rng_collection``."""

  def _key(self, deterministic: bool | None, rng, draws: bool):
    """``(deterministic, key)``: the merged flag, and a key only when one is used."""
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if deterministic or not draws:
      return deterministic, None
    return deterministic, rng if rng is not None else self.make_rng(self.rng_collection)


class Dropout(_Stochastic):
  r"""Dropout; a drop-in for ``flax.linen.Dropout`` with the same fields and call.

  Inverted (default): :math:`y = m \odot x / (1-p)` in training and :math:`y = x` when
  deterministic; classic: :math:`y = m \odot x` and :math:`y = (1-p)\,x`; with
  :math:`m_i \sim \mathrm{Bernoulli}(1-p)`. See :func:`jaxreg.dropout`.

  **Not bit-identical to Flax by default.** The default mask comes from jaxreg's fast
  counter-based generator (:mod:`jaxreg.masks`), a different bit stream from the
  ``jax.random.bernoulli`` that Flax draws, with the same distribution; the survivors
  are scaled by the keep probability the mask was drawn with, ``1-p`` rounded down to a
  multiple of :math:`2^{-24}`, which can differ from Flax's ``1-p`` in the last bits.
  With ``exact=True`` the mask is ``jax.random.bernoulli(key, 1-p, shape)`` and the
  scale ``1-p``, as in Flax: same key, same output, bit for bit.

  Attributes:
    rate: the drop probability ``p`` (not the keep probability).
    broadcast_dims: dims that share one mask entry (``(1, 2)`` on ``NHWC`` drops whole
      channels).
    deterministic: evaluation mode; given here or at call time, exactly once.
    rng_collection: the rng stream the key comes from.
    mode: ``"inverted"`` or ``"classic"``.
    exact: draw the mask as Flax does (bit-identical to it, and slower).
    residual: what the backward pass keeps of the mask, ``"recompute"`` or
      ``"packed"``; ``None`` lets :func:`jaxreg.dropout` choose.

  >>> import jax, jax.numpy as jnp
  >>> layer = Dropout(0.5, deterministic=False)
  >>> y = layer.apply({}, jnp.ones(6), rngs={"dropout": jax.random.key(0)})
  >>> bool(((y == 0) | (y == 2)).all())
  True
  >>> Dropout(0.25, mode="classic").apply({}, jnp.ones(2), deterministic=True)
  Array([0.75, 0.75], dtype=float32)
  """

  rate: float
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  mode: str = "inverted"
  exact: bool = False
  residual: str | None = None

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic, key = self._key(deterministic, rng, draws_at_rate(self.rate))
    return dropout(
        key, inputs, self.rate, broadcast_dims=self.broadcast_dims,
        deterministic=deterministic, mode=self.mode, exact=self.exact,
        residual=self.residual)


class AlphaDropout(_Stochastic):
  """Alpha dropout for SELU networks: keeps zero mean and unit variance.

  See :func:`jaxreg.alpha_dropout` for the affine map.

  >>> import jax, jax.numpy as jnp
  >>> AlphaDropout(0.1).apply({}, jnp.ones(3), deterministic=True)
  Array([1., 1., 1.], dtype=float32)
  """

  rate: float
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  exact: bool = False
  broadcast_dims: Sequence[int] = ()

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic, key = self._key(deterministic, rng, draws_at_rate(self.rate))
    return alpha_dropout(key, inputs, self.rate, broadcast_dims=self.broadcast_dims,
                         deterministic=deterministic, exact=self.exact)


class GaussianDropout(_Stochastic):
  r"""Gaussian dropout: multiplicative noise :math:`y = x \odot \epsilon`.

  :math:`\epsilon \sim \mathcal{N}(1, p/(1-p))`, the variance of dropout at rate ``p``.
  See :func:`jaxreg.gaussian_dropout`.

  >>> import jax, jax.numpy as jnp
  >>> y = GaussianDropout(0.5, deterministic=False).apply(
  ...     {}, jnp.ones(3), rngs={"dropout": jax.random.key(0)})
  >>> y.shape
  (3,)
  """

  rate: float
  deterministic: bool | None = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic, key = self._key(deterministic, rng, draws_at_rate(self.rate))
    return gaussian_dropout(key, inputs, self.rate, deterministic=deterministic)


class GaussianNoise(_Stochastic):
  r"""Additive noise :math:`y = x + \sigma\epsilon`, :math:`\epsilon \sim \mathcal{N}(0, 1)`.

  Its key comes from the ``'dropout'`` stream too, unless ``rng_collection`` says
  otherwise. See :func:`jaxreg.gaussian_noise`.

  >>> import jax.numpy as jnp
  >>> GaussianNoise(0.1).apply({}, jnp.zeros(2), deterministic=True)
  Array([0., 0.], dtype=float32)
  """

  stddev: float
  deterministic: bool | None = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic, key = self._key(deterministic, rng, draws_at_stddev(self.stddev))
    return gaussian_noise(key, inputs, self.stddev, deterministic=deterministic)


class DropPath(_Stochastic):
  """Stochastic depth: drops whole examples (axis 0) of a residual branch, or the
  whole branch for the whole batch with ``per="batch"``.

  Use it as ``x + DropPath(rate)(branch(x))``; :func:`jaxreg.drop_path_rates` gives
  per-block rates. See :func:`jaxreg.drop_path`.

  >>> import jax, jax.numpy as jnp
  >>> y = DropPath(0.5, deterministic=False).apply(
  ...     {}, jnp.ones((4, 3)), rngs={"dropout": jax.random.key(1)})
  >>> bool(((y == 0).all(1) | (y == 2).all(1)).all())
  True
  """

  rate: float
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  mode: str = "inverted"
  exact: bool = False
  residual: str | None = None
  per: str = "row"

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic, key = self._key(deterministic, rng, draws_at_rate(self.rate))
    return drop_path(key, inputs, self.rate, deterministic=deterministic,
                     mode=self.mode, exact=self.exact, residual=self.residual,
                     per=self.per)


class DropBlock(_Stochastic):
  """DropBlock: drops ``block_size``-wide square blocks of feature maps.

  Channels-last by default, ``data_format="channels_first"`` for ``NCHW``;
  ``couple_channels=True`` shares one block pattern across channels (timm's default).
  See :func:`jaxreg.dropblock` for the block rate and the rescaling.

  >>> import jax, jax.numpy as jnp
  >>> y = DropBlock(0.2, 3, deterministic=False).apply(
  ...     {}, jnp.ones((1, 6, 6, 2)), rngs={"dropout": jax.random.key(0)})
  >>> y.shape
  (1, 6, 6, 2)
  """

  rate: float
  block_size: int
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  exact: bool = False
  couple_channels: bool = False
  data_format: str = "channels_last"

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic, key = self._key(deterministic, rng, draws_at_rate(self.rate))
    return dropblock(key, inputs, self.rate, self.block_size,
                     deterministic=deterministic, exact=self.exact,
                     couple_channels=self.couple_channels, data_format=self.data_format)


class ActivityRegularization(nn.Module):
  r"""Returns its input unchanged and records :math:`l_1\sum|a| + l_2\sum a^2` of it.

  The penalty is :class:`jaxreg.ElasticNet` ``(l1, l2)`` of the activation ``a``, summed
  over every entry and divided by the batch size ``a.shape[0]`` as Keras ≥ 3.14 does
  (``reduction="batch_mean"``), or summed over the batch too with ``reduction="sum"``
  (Keras before 3.14); see :func:`jaxreg.activity.activity_penalty`. It is sown as
  ``'activity'`` in the ``'losses'`` collection when that collection is mutable,
  except during ``init``, and not computed at all otherwise, so evaluation without
  ``mutable=`` costs nothing. Add
  :func:`activity_loss` of the mutated collections to the training loss; its gradient
  reaches every parameter the activation depends on.

  >>> import jax.numpy as jnp
  >>> layer = ActivityRegularization(l1=0.5, l2=0.25)
  >>> y, mutated = layer.apply({}, jnp.array([1.0, -2.0]), mutable=LOSSES)
  >>> y, float(activity_loss(mutated))
  (Array([ 1., -2.], dtype=float32), 1.375)
  """

  l1: float = 0.0
  l2: float = 0.0
  reduction: str = "batch_mean"

  @nn.compact
  def __call__(self, inputs):
    # Checks the arguments on every call, even when nothing is recorded.
    penalty = ElasticNet(self.l1, self.l2)
    check_activity_reduction(self.reduction)
    # Not while initializing: a penalty sown by ``init`` would sit in the variables it
    # returns, and an ``apply`` on them would add the next one to it.
    if self.is_mutable_collection(LOSSES) and not self.is_initializing():
      self.sow(LOSSES, "activity",
               activity_penalty(inputs, penalty, reduction=self.reduction))
    return inputs


def activity_loss(collections: Mapping[str, Any]) -> jax.Array:
  """The sum of every penalty recorded in the ``'losses'`` collection.

  Takes the mutated collections that ``apply(..., mutable=...)`` returns (only the
  ``'losses'`` entry is read: ``batch_stats`` and other collections beside it are not
  penalties), or the ``'losses'`` collection itself, told apart by what it holds: the
  ``'activity'`` entries that :class:`ActivityRegularization` sows. Penalties stacked
  by ``nn.scan`` or ``nn.vmap`` are summed over layers and members. Mutated
  collections without a ``'losses'`` entry (``mutable=["batch_stats"]``: nothing was
  recorded) give 0, as does an empty collection; any other mapping raises
  ``ValueError``.
  """
  if LOSSES in collections:
    losses = collections[LOSSES]
  else:
    entries = jax.tree_util.tree_leaves_with_path(collections)
    is_sown = [_ACTIVITY in path for path, _ in entries]
    if all(is_sown):
      losses = collections
    elif any(is_sown):
      raise ValueError(
          "activity_loss takes the collections that apply(..., mutable=...) returns, "
          "or their 'losses' collection; got a mapping that holds 'activity' entries "
          f"beside others, under {sorted(collections)}")
    else:
      losses = {}  # Collections without 'losses': no penalty was recorded.
  return sum((jnp.sum(leaf) for leaf in jax.tree.leaves(losses)),
             start=jnp.zeros((), jnp.float32))


# The path entry of a penalty sown by ActivityRegularization.
_ACTIVITY = jax.tree_util.DictKey("activity")


class Regularized(struct.PyTreeNode, nn.meta.AxisMetadata):
  """A parameter boxed with the regularizer declared next to its layer.

  Made by :func:`with_regularizer`; Flax unboxes it for the layer (as it does
  ``nn.Partitioned``), and the box stays in the ``variables`` that ``init`` returns,
  where :func:`regularizer` finds it. Boxes inside (``nn.with_partitioning``) are kept,
  and ``nn.scan``/``nn.vmap`` pass their axes on to them.
  """
  value: Any
  regularizer: Regularizer = struct.field(pytree_node=False)

  def unbox(self):
    return self.value

  def replace_boxed(self, val):
    return self.replace(value=val)

  def add_axis(self, index: int, params: dict[Any, Any]):
    return self.replace(value=nn.meta.add_axis(self.value, index, params))

  def remove_axis(self, index: int, params: dict[Any, Any]):
    return self.replace(value=nn.meta.remove_axis(self.value, index, params))

  def get_partition_spec(self):
    """The spec of the box inside (``nn.with_partitioning``), for ``nn.get_partition_spec``."""
    return nn.get_partition_spec(self.value)


def with_regularizer(init_fn, regularizer: Regularizer):
  """Declares ``regularizer`` on the parameter that ``init_fn`` initializes.

  Keras's ``kernel_regularizer=`` habit, written next to the layer:
  ``nn.Dense(64, kernel_init=with_regularizer(nn.initializers.lecun_normal(),
  jr.l2(1e-4)))`` (give the layer's own initializer, as for ``nn.with_partitioning``).
  :func:`param_loss` sums the declared penalties and :func:`regularizer` returns them
  as one jaxreg regularizer for ``jaxreg.transforms``. The declaration travels in the
  params tree (a :class:`Regularized` box): keep the boxes (do not ``nn.unbox`` the
  params you pass to :func:`param_loss`).

  >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxreg as jr
  >>> layer = nn.Dense(2, kernel_init=with_regularizer(nn.initializers.ones, jr.L1(0.5)))
  >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> float(param_loss(variables))   # 0.5 · Σ|1| over the (3, 2) kernel
  3.0
  >>> regularizer(variables).selected(variables)
  {'kernel': (3, 2)}
  """
  if not isinstance(regularizer, Regularizer):
    raise TypeError(f"regularizer must be a jaxreg regularizer, got {regularizer!r}")
  if not callable(init_fn):
    raise TypeError(f"init_fn must be an initializer (key, shape, dtype) -> array, got {init_fn!r}")

  def init(*args, **kwargs):
    return Regularized(init_fn(*args, **kwargs), regularizer)

  return init


def _declaration(node):
  return node.regularizer if isinstance(node, Regularized) else None


def regularizer(variables) -> Regularizer:
  """The regularizers declared with :func:`with_regularizer`, as one regularizer.

  Each declared regularizer is restricted (``where=jaxreg.select.paths(...)``) to the
  parameters it was declared on, so it is the same object as the equivalent ``where=``
  form: use it with ``jaxreg.transforms`` (its ``prox`` too) on the params or the full
  variables. The selection is read from the tree's structure, at trace time, so under
  ``jit`` it costs nothing. Raises ``ValueError`` when nothing is declared.
  """
  return declared(variables, _declaration, how="jaxreg.linen.with_regularizer")


def param_loss(variables) -> jax.Array:
  """The total penalty of the regularizers declared with :func:`with_regularizer`:
  ``regularizer(variables)(variables)``; layers stacked by ``nn.scan``/``nn.vmap`` are
  summed over layers and members. Takes the params or the full variables (then only
  the ``'params'`` collection is read)."""
  return regularizer(variables)(variables)
