"""Flax NNX modules for the dropout family and for activity penalties.

Each module holds its configuration and an rng stream, and calls the function of the
same name in :mod:`jaxreg.stochastic`; the maths lives there. Construction and call
mirror ``flax.nnx.Dropout``: ``rngs=`` at construction forks the ``rng_collection``
stream (``'dropout'``) for the module; ``__call__(inputs, *, deterministic=None,
rngs=None)`` takes a flag and a key, ``RngStream`` or ``Rngs`` that override the
module's own; and ``deterministic`` is an attribute, so ``model.train()``,
``model.eval()``, ``set_attributes(deterministic=...)`` and ``nnx.view(model,
deterministic=...)`` switch it. No key is drawn when nothing random happens
(``deterministic=True``, a rate of 0 or 1, a ``stddev`` of 0), so evaluation needs no
rngs and leaves the streams untouched. The modules are generated from the
specifications that :mod:`jaxreg.linen` shares (``jaxreg/_flax_spec.py``): the same
fields, defaults and docs.

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

import inspect

from flax import nnx
import jax
import jax.numpy as jnp

from jaxreg import _flax_spec
from jaxreg.per_layer import declared
from jaxreg.regularizers import Regularizer

# The modules the specifications define, then what this adapter adds around them.
__all__ = [
    *_flax_spec.NAMES,
    "ActivityLoss",
    "activity_loss",
    "REGULARIZER",
    "regularizer",
    "param_loss",
]

RngSource = nnx.Rngs | nnx.RngStream | None


def _flags(stream: str | None) -> tuple[_flax_spec.Field, ...]:
  """The arguments every random module adds, with ``flax.nnx.Dropout``'s defaults."""
  return (
      _flax_spec.Field("deterministic", bool | None,
                       "evaluation mode; the call's ``deterministic`` takes precedence.",
                       False),
      _flax_spec.Field("rng_collection", str,
                       "the stream forked from ``rngs`` (or read from a call's ``Rngs``).",
                       stream),
      _flax_spec.Field("rngs", RngSource, "``Rngs``, ``RngStream`` or ``None`` (then every "
                       "training call needs ``rngs``).", None))


def _module(spec: _flax_spec.Spec, base: type[nnx.Module], usage: str) -> type[nnx.Module]:
  """The NNX module ``spec`` describes: ``base`` with an ``__init__`` that takes the
  spec's fields (and the flags) in the spec's order, required ones by position, and
  hands them to ``base.__init__`` by name."""
  fields = spec.with_flags(_flags(spec.stream))
  signature = inspect.Signature([
      inspect.Parameter(field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD
                        if field.by_position else inspect.Parameter.KEYWORD_ONLY,
                        default=field.default, annotation=field.type)
      for field in fields])

  def __init__(self, *args, **kwargs):
    arguments = signature.bind(*args, **kwargs)
    arguments.apply_defaults()
    base.__init__(self, **arguments.arguments)

  self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
  __init__.__signature__ = signature.replace(
      parameters=[self_parameter, *signature.parameters.values()])
  __init__.__qualname__ = f"{spec.name}.__init__"
  return type(spec.name, (base,), {
      "__module__": __name__,
      "__qualname__": spec.name,
      "__doc__": spec.docstring("Args", fields, usage),
      "__init__": __init__,
      "_spec": spec,
  })


class _Random(nnx.Module):
  """A random module: the ``deterministic`` flag and the rng stream, handled as
  ``flax.nnx.Dropout`` does, and its spec's op."""

  def __init__(self, *, deterministic: bool | None, rng_collection: str,
               rngs: RngSource, **fields):
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
    for name, value in fields.items():
      setattr(self, name, value)

  def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    deterministic, key = self._key(deterministic, rngs, self._spec.needs_key(self))
    return self._spec.call(self, key, inputs, deterministic)

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


Dropout = _module(_flax_spec.DROPOUT, _Random, """
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> y = layer(jnp.ones(6))
    >>> bool(((y == 0) | (y == 2)).all())
    True
    >>> layer.eval()
    >>> layer(jnp.ones(2))
    Array([1., 1.], dtype=float32)
    """)

AlphaDropout = _module(_flax_spec.ALPHA_DROPOUT, _Random, """
    >>> import jax.numpy as jnp
    >>> AlphaDropout(0.1, deterministic=True)(jnp.ones(3))
    Array([1., 1., 1.], dtype=float32)
    """)

GaussianDropout = _module(_flax_spec.GAUSSIAN_DROPOUT, _Random, """
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> GaussianDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones(3)).shape
    (3,)
    """)

GaussianNoise = _module(_flax_spec.GAUSSIAN_NOISE, _Random, """
    >>> import jax.numpy as jnp
    >>> GaussianNoise(0.1, deterministic=True)(jnp.zeros(2))
    Array([0., 0.], dtype=float32)
    """)

DropPath = _module(_flax_spec.DROP_PATH, _Random, """
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> y = DropPath(0.5, rngs=nnx.Rngs(1))(jnp.ones((4, 3)))
    >>> bool(((y == 0).all(1) | (y == 2).all(1)).all())
    True
    """)

DropBlock = _module(_flax_spec.DROP_BLOCK, _Random, """
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> DropBlock(0.2, 3, rngs=nnx.Rngs(0))(jnp.ones((1, 6, 6, 2))).shape
    (1, 6, 6, 2)
    """)


class ActivityLoss(nnx.Variable):
  """The activity penalty an :class:`ActivityRegularization` computed in its latest call.

  Select them with ``nnx.state(model, ActivityLoss)``; :func:`activity_loss` sums them.
  """


class _Recording(nnx.Module):
  """Keeps the activity penalty of its latest input in an :class:`ActivityLoss`."""

  def __init__(self, **fields):
    for name, value in fields.items():
      setattr(self, name, value)
    _flax_spec.activity_measure(self.l1, self.l2, self.reduction)  # Fails early.
    # The default float dtype (float64 under x64), so that no penalty is rounded here.
    self.activity = ActivityLoss(jnp.zeros((), jnp.result_type(float)))

  def __call__(self, inputs) -> jax.Array:
    measure = _flax_spec.activity_measure(self.l1, self.l2, self.reduction)
    self.activity[...] = measure(inputs)
    return inputs


ActivityRegularization = _module(_flax_spec.ACTIVITY_REGULARIZATION, _Recording, """
    Each call overwrites the module's :class:`ActivityLoss` (a scalar of the default
    float dtype, float32, or float64 under x64; zero before the first call), so the
    state keeps one shape under ``nnx.jit``, ``nnx.scan`` and ``nnx.vmap``, and a
    module applied twice in one forward pass keeps only its second penalty: use one
    module per call site. Add :func:`activity_loss` of the model, read inside the loss
    function after the forward pass, to the training loss; its gradient reaches every
    parameter the activation depends on.

    >>> import jax.numpy as jnp
    >>> layer = ActivityRegularization(l1=0.5, l2=0.25)
    >>> layer(jnp.array([1.0, -2.0]))
    Array([ 1., -2.], dtype=float32)
    >>> float(activity_loss(layer))
    1.375
    """)


def activity_loss(model) -> jax.Array:
  """The sum of every :class:`ActivityLoss` in ``model``, over layers and members too
  (``nnx.scan`` and ``nnx.vmap`` stack them)."""
  return _flax_spec.total(nnx.state(model, ActivityLoss))


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
