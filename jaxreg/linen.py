"""Flax linen modules for the dropout family and for activity penalties.

Each module holds its configuration, asks for a key with
``self.make_rng(rng_collection)`` (``'dropout'`` unless told otherwise, as
``flax.linen.Dropout`` does) and calls the function of the same name in
:mod:`jaxreg.stochastic`; the maths lives there. Every random module takes
``__call__(inputs, deterministic=None, rng=None)``: ``deterministic`` is given to the
constructor or to the call, exactly once (``flax.linen.merge_param``), and ``rng``
overrides the key from the collection. No key is asked for when nothing random happens
(``deterministic=True``, a rate of 0 or 1, a ``stddev`` of 0), so evaluation needs no
``rngs``. The modules are generated from the specifications that :mod:`jaxreg.nnx`
shares (``jaxreg/_flax_spec.py``): the same fields, defaults and docs.

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
from typing import Any

from flax import struct
import flax.linen as nn
import jax

from jaxreg import _flax_spec
from jaxreg.per_layer import declared
from jaxreg.regularizers import Regularizer

# The modules the specifications define, then what this adapter adds around them.
__all__ = [
    *_flax_spec.NAMES,
    "activity_loss",
    "LOSSES",
    "Regularized",
    "with_regularizer",
    "regularizer",
    "param_loss",
]

LOSSES = "losses"
"""The collection :class:`ActivityRegularization` records its penalty in."""


def _flags(stream: str | None) -> tuple[_flax_spec.Field, ...]:
  """The fields every random module adds, with ``flax.linen.Dropout``'s defaults."""
  return (
      _flax_spec.Field("deterministic", bool | None,
                       "evaluation mode; given here or at call time, exactly once.", None),
      _flax_spec.Field("rng_collection", str, "the rng stream the key comes from.", stream))


def _module(spec: _flax_spec.Spec, base: type[nn.Module], usage: str) -> type[nn.Module]:
  """The linen module ``spec`` describes: ``base`` with the spec's fields (and the
  flags) as dataclass fields, in the spec's order."""
  fields = spec.with_flags(_flags(spec.stream))
  return type(spec.name, (base,), {
      "__module__": __name__,
      "__qualname__": spec.name,
      "__doc__": spec.docstring("Attributes", fields, usage),
      "__annotations__": {field.name: field.type for field in fields},
      **{field.name: field.default for field in fields if not field.required},
      "_spec": spec,
  })


class _Random(nn.Module):
  """A random module: draws a key where its spec needs one and calls the spec's op."""

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None) -> jax.Array:
    draws = self._spec.needs_key(self)  # A bad rate fails before anything else.
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    key = None
    if draws and not deterministic:
      key = rng if rng is not None else self.make_rng(self.rng_collection)
    return self._spec.call(self, key, inputs, deterministic)


Dropout = _module(_flax_spec.DROPOUT, _Random, """
    >>> import jax, jax.numpy as jnp
    >>> layer = Dropout(0.5, deterministic=False)
    >>> y = layer.apply({}, jnp.ones(6), rngs={"dropout": jax.random.key(0)})
    >>> bool(((y == 0) | (y == 2)).all())
    True
    >>> Dropout(0.25, mode="classic").apply({}, jnp.ones(2), deterministic=True)
    Array([0.75, 0.75], dtype=float32)
    """)

AlphaDropout = _module(_flax_spec.ALPHA_DROPOUT, _Random, """
    >>> import jax.numpy as jnp
    >>> AlphaDropout(0.1).apply({}, jnp.ones(3), deterministic=True)
    Array([1., 1., 1.], dtype=float32)
    """)

GaussianDropout = _module(_flax_spec.GAUSSIAN_DROPOUT, _Random, """
    >>> import jax, jax.numpy as jnp
    >>> y = GaussianDropout(0.5, deterministic=False).apply(
    ...     {}, jnp.ones(3), rngs={"dropout": jax.random.key(0)})
    >>> y.shape
    (3,)
    """)

GaussianNoise = _module(_flax_spec.GAUSSIAN_NOISE, _Random, """
    >>> import jax.numpy as jnp
    >>> GaussianNoise(0.1).apply({}, jnp.zeros(2), deterministic=True)
    Array([0., 0.], dtype=float32)
    """)

DropPath = _module(_flax_spec.DROP_PATH, _Random, """
    >>> import jax, jax.numpy as jnp
    >>> y = DropPath(0.5, deterministic=False).apply(
    ...     {}, jnp.ones((4, 3)), rngs={"dropout": jax.random.key(1)})
    >>> bool(((y == 0).all(1) | (y == 2).all(1)).all())
    True
    """)

DropBlock = _module(_flax_spec.DROP_BLOCK, _Random, """
    >>> import jax, jax.numpy as jnp
    >>> y = DropBlock(0.2, 3, deterministic=False).apply(
    ...     {}, jnp.ones((1, 6, 6, 2)), rngs={"dropout": jax.random.key(0)})
    >>> y.shape
    (1, 6, 6, 2)
    """)


class _Recording(nn.Module):
  """Records the activity penalty of its input in the ``'losses'`` collection."""

  @nn.compact
  def __call__(self, inputs):
    # The fields are checked on every call, even when nothing is recorded.
    measure = _flax_spec.activity_measure(self.l1, self.l2, self.reduction)
    # Not while initializing: a penalty sown by ``init`` would sit in the variables it
    # returns, and an ``apply`` on them would add the next one to it.
    if self.is_mutable_collection(LOSSES) and not self.is_initializing():
      self.sow(LOSSES, "activity", measure(inputs))
    return inputs


ActivityRegularization = _module(_flax_spec.ACTIVITY_REGULARIZATION, _Recording, """
    It is sown as ``'activity'`` in the ``'losses'`` collection when that collection
    is mutable, except during ``init``, and not computed at all otherwise, so
    evaluation without ``mutable=`` costs nothing. Add :func:`activity_loss` of the
    mutated collections to the training loss; its gradient reaches every parameter the
    activation depends on.

    >>> import jax.numpy as jnp
    >>> layer = ActivityRegularization(l1=0.5, l2=0.25)
    >>> y, mutated = layer.apply({}, jnp.array([1.0, -2.0]), mutable=LOSSES)
    >>> y, float(activity_loss(mutated))
    (Array([ 1., -2.], dtype=float32), 1.375)
    """)


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
    return _flax_spec.total(collections[LOSSES])
  entries = jax.tree_util.tree_leaves_with_path(collections)
  is_sown = [_ACTIVITY in path for path, _ in entries]
  if any(is_sown) and not all(is_sown):
    raise ValueError(
        "activity_loss takes the collections that apply(..., mutable=...) returns, "
        "or their 'losses' collection; got a mapping that holds 'activity' entries "
        f"beside others, under {sorted(collections)}")
  # All sown: the 'losses' collection itself; none: no penalty was recorded.
  return _flax_spec.total(collections if all(is_sown) else {})


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
