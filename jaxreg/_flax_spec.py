r"""What the Flax modules are: one specification per module, for linen and NNX alike.

:mod:`jaxreg.linen` and :mod:`jaxreg.nnx` define the same modules. Each is generated
from its :class:`Spec` here: its fields (name, type, default, doc) in Flax's order,
the rng stream its key comes from, the field that says whether a key is needed at all,
the :mod:`jaxreg.stochastic` function it calls, and the prose of its docstring. The
adapters add only what differs between the two Flax APIs: the ``deterministic`` flag's
default (``None`` in linen, ``False`` in NNX, as Flax's own ``Dropout``), NNX's
``rngs``, how a key is found and how an activity penalty is stored.

This module imports jax and jaxreg's core, never Flax.

>>> [field.name for field in DROPOUT.layout]
['rate', 'broadcast_dims', '<flags>', 'mode', 'exact', 'residual']
>>> DROPOUT.stream, DROPOUT.amount, DROPOUT.op.__name__
('dropout', 'rate', 'dropout')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import inspect
import textwrap
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg import stochastic
from jaxreg.activity import activity_penalty
from jaxreg.activity import check_activity_reduction
from jaxreg.regularizers import ElasticNet

REQUIRED = inspect.Parameter.empty
"""The default of a field that has none."""


@dataclasses.dataclass(frozen=True)
class Field:
  """One setting of a module: a dataclass field in linen, an ``__init__`` argument in
  NNX. ``positional``: NNX takes it by position (required fields always are; Flax's
  NNX modules take the rest by keyword)."""
  name: str
  type: Any
  doc: str
  default: Any = REQUIRED
  positional: bool = False

  @property
  def required(self) -> bool:
    return self.default is REQUIRED

  @property
  def by_position(self) -> bool:
    return self.required or self.positional


FLAGS = Field("<flags>", None, "where the adapter's flags go: deterministic, "
              "rng_collection (and rngs in NNX)")
"""Marks the place of the adapter's flags among the fields, as in ``flax.linen.Dropout``:
``rate, broadcast_dims, deterministic, rng_collection``."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """A module: its fields in order, what it calls with them, and its docstring prose.

  A random module calls ``op(key, inputs, *required, deterministic=..., **others)``:
  its required fields by position, the others by keyword under their own names. It
  asks for a key (from ``stream``, or the call's) only when ``draws`` of its
  ``amount`` field says one is used.
  """
  name: str
  doc: str
  layout: tuple[Field, ...]
  op: Callable[..., jax.Array] | None = None
  amount: str | None = None
  draws: Callable[[Any], bool] | None = None
  stream: str | None = "dropout"

  @property
  def fields(self) -> tuple[Field, ...]:
    """The module's own fields, the adapter's flags left out."""
    return tuple(field for field in self.layout if field is not FLAGS)

  def with_flags(self, flags: Sequence[Field]) -> tuple[Field, ...]:
    """The fields in order, with the adapter's ``flags`` in the place :data:`FLAGS` marks."""
    return tuple(f for field in self.layout for f in (flags if field is FLAGS else (field,)))

  def needs_key(self, module) -> bool:
    """Whether ``module`` draws at its ``amount`` (checked first, so a bad rate fails
    before a missing key is reported)."""
    return self.draws(getattr(module, self.amount))

  def call(self, module, key, inputs, deterministic: bool) -> jax.Array:
    """``op`` on ``inputs`` with ``module``'s fields."""
    args = [getattr(module, f.name) for f in self.fields if f.required]
    kwargs = {f.name: getattr(module, f.name) for f in self.fields if not f.required}
    return self.op(key, inputs, *args, deterministic=deterministic, **kwargs)

  def docstring(self, heading: str, fields: Sequence[Field], usage: str) -> str:
    """The docstring: the prose, ``fields`` under ``heading`` (``"Attributes"``,
    ``"Args"``), then ``usage`` (notes and a doctest in the adapter's API)."""
    entries = "\n".join(
        textwrap.fill(f"{f.name}: {f.doc}", 88, initial_indent="  ",
                      subsequent_indent="    ", break_on_hyphens=False)
        for f in fields)
    return f"{self.doc}\n\n{heading}:\n{entries}\n\n{textwrap.dedent(usage).strip()}\n"


def _rate(doc: str = "the drop probability ``p`` (not the keep probability).") -> Field:
  return Field("rate", float, doc)


_BROADCAST_DIMS = Field(
    "broadcast_dims", Sequence[int],
    "dims that share one mask entry (``(1, 2)`` on ``NHWC`` drops whole channels).", ())
_MODE = Field("mode", str, '``"inverted"`` (scaled in training, as Flax) or ``"classic"`` '
              "(unscaled in training, ``(1-p)·x`` when deterministic).", "inverted")
_EXACT = Field("exact", bool, "draw with ``jax.random.bernoulli`` as Flax does (slower; "
               "``Dropout`` is then bit-identical to Flax's).", False)
_RESIDUAL = Field("residual", str | None, 'what the backward pass keeps of the mask, '
                  '``"recompute"`` or ``"packed"``; ``None`` lets '
                  ":func:`jaxreg.dropout` choose.", None)

DROPOUT = Spec(
    "Dropout", r"""Dropout; a drop-in for Flax's ``Dropout`` (``flax.linen.Dropout``,
``flax.nnx.Dropout``), with the same fields, rng stream and call.

Inverted (default): :math:`y = m \odot x / (1-p)` in training and :math:`y = x` when
deterministic; classic: :math:`y = m \odot x` and :math:`y = (1-p)\,x`; with
:math:`m_i \sim \mathrm{Bernoulli}(1-p)`. See :func:`jaxreg.dropout`.

**Not bit-identical to Flax by default.** The default mask comes from jaxreg's fast
counter-based generator (:mod:`jaxreg.masks`), a different bit stream from the
``jax.random.bernoulli`` that Flax draws, with the same distribution; the survivors
are scaled by the keep probability the mask was drawn with, ``1-p`` rounded down to a
multiple of :math:`2^{-24}`, which can differ from Flax's ``1-p`` in the last bits.
With ``exact=True`` the mask is ``jax.random.bernoulli(key, 1-p, shape)`` and the
scale ``1-p``, as in Flax: same key, same output, bit for bit.""",
    (_rate(), _BROADCAST_DIMS, FLAGS, _MODE, _EXACT, _RESIDUAL),
    stochastic.dropout, "rate", stochastic.draws_at_rate)

ALPHA_DROPOUT = Spec(
    "AlphaDropout", r"""Alpha dropout for SELU networks: keeps zero mean and unit variance.

A dropped entry becomes :math:`\alpha' = -\lambda\alpha \approx -1.7581`, then
:math:`y = a\,(m \odot x + \alpha'(1 - m)) + b` with :math:`a`, :math:`b` chosen so
that standard-normal input keeps its moments. See :func:`jaxreg.alpha_dropout`.""",
    (_rate(), FLAGS, _EXACT, _BROADCAST_DIMS),
    stochastic.alpha_dropout, "rate", stochastic.draws_at_rate)

GAUSSIAN_DROPOUT = Spec(
    "GaussianDropout", r"""Gaussian dropout: multiplicative noise :math:`y = x \odot \epsilon`.

:math:`\epsilon \sim \mathcal{N}(1, p/(1-p))`, the variance of dropout at rate ``p``.
See :func:`jaxreg.gaussian_dropout`.""",
    (_rate("``p``: the noise has the variance of dropout at this rate."), FLAGS),
    stochastic.gaussian_dropout, "rate", stochastic.draws_at_rate)

GAUSSIAN_NOISE = Spec(
    "GaussianNoise", r"""Additive noise :math:`y = x + \sigma\epsilon`, :math:`\epsilon \sim \mathcal{N}(0, 1)`.

Its key comes from the ``'dropout'`` stream too, unless ``rng_collection`` says
otherwise. See :func:`jaxreg.gaussian_noise`.""",
    (Field("stddev", float, r"the noise's standard deviation :math:`\sigma` (``>= 0``)."),
     FLAGS),
    stochastic.gaussian_noise, "stddev", stochastic.draws_at_stddev)

DROP_PATH = Spec(
    "DropPath", r"""Stochastic depth: drops whole examples (axis 0) of a residual branch, or the
whole branch for the whole batch with ``per="batch"``.

Inverted (default): :math:`y = m \odot x / (1-p)` with one
:math:`m \sim \mathrm{Bernoulli}(1-p)` per example (or per batch), on a residual
branch: ``h + drop_path(f(h))``. :func:`jaxreg.drop_path_rates` gives per-block rates.
See :func:`jaxreg.drop_path`.""",
    (_rate(), FLAGS, _MODE, _EXACT, _RESIDUAL,
     Field("per", str, '``"row"``: one draw per example (timm, torchvision\'s '
           '``mode="row"``); ``"batch"``: one for the whole batch.', "row")),
    stochastic.drop_path, "rate", stochastic.draws_at_rate)

DROP_BLOCK = Spec(
    "DropBlock", r"""DropBlock: drops ``block_size``-wide square blocks of feature maps.

Block corners are drawn at :math:`\gamma = \frac{p}{s^d}\prod_k \frac{n_k}{n_k - s + 1}`
so that about a fraction ``p`` of each map is dropped, and the survivors are scaled by
``size / count_kept``. Channels-last by default, ``data_format="channels_first"`` for
``NCHW``; ``couple_channels=True`` shares one block pattern across channels (timm's
default). See :func:`jaxreg.dropblock`.""",
    (_rate(), Field("block_size", int, "the side ``s`` of the square blocks."), FLAGS,
     _EXACT,
     Field("couple_channels", bool, "one block pattern for all channels of an example.",
           False),
     Field("data_format", str, '``"channels_last"`` (``NHWC``) or ``"channels_first"`` '
           "(``NCHW``).", "channels_last")),
    stochastic.dropblock, "rate", stochastic.draws_at_rate)

RANDOM = (DROPOUT, ALPHA_DROPOUT, GAUSSIAN_DROPOUT, GAUSSIAN_NOISE, DROP_PATH, DROP_BLOCK)
"""The random modules, which take ``deterministic`` and a key."""

ACTIVITY_REGULARIZATION = Spec(
    "ActivityRegularization", r"""Returns its input unchanged and records :math:`l_1\sum|a| + l_2\sum a^2` of it.

The penalty is :class:`jaxreg.ElasticNet` ``(l1, l2)`` of the activation ``a``, summed
over every entry and divided by the batch size ``a.shape[0]`` as Keras ≥ 3.14 does
(``reduction="batch_mean"``), or summed over the batch too with ``reduction="sum"``
(Keras before 3.14); see :func:`jaxreg.activity.activity_penalty`.""",
    (Field("l1", float, r"the strength of :math:`\sum|a|`.", 0.0, positional=True),
     Field("l2", float, r"the strength of :math:`\sum a^2`.", 0.0, positional=True),
     Field("reduction", str, '``"batch_mean"`` (divided by the batch size, Keras ≥ 3.14) '
           'or ``"sum"``.', "batch_mean")),
    stream=None)

NAMES = tuple(spec.name for spec in (*RANDOM, ACTIVITY_REGULARIZATION))
"""The class name of every module the adapters generate, in the order they document."""


def activity_measure(l1, l2, reduction: str) -> Callable[[jax.Array], jax.Array]:
  """``a -> penalty``: what an ``ActivityRegularization`` with these fields records.

  The fields are checked here, so a bad one fails whether or not a penalty is then
  computed.

  >>> import jax.numpy as jnp
  >>> float(activity_measure(0.5, 0.25, "batch_mean")(jnp.array([1.0, -2.0])))
  1.375
  """
  regularizer = ElasticNet(l1, l2)
  check_activity_reduction(reduction)
  return lambda activation: activity_penalty(activation, regularizer, reduction=reduction)


def total(losses) -> jax.Array:
  """The sum of every leaf of ``losses`` (recorded penalties), at least float32; 0 for
  none."""
  return sum((jnp.sum(leaf) for leaf in jax.tree.leaves(losses)),
             start=jnp.zeros((), jnp.float32))
