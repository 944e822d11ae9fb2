"""The selectors a ``where=`` argument becomes: hashable objects that flag leaves.

Each selector has ``flags(tree) -> list[bool]``, one flag per :class:`Leaf` of a
params tree, read from paths, shapes and dtypes only. Selectors are frozen and
compared by value, so they are static data: a regularizer's pytree aux data, or a
static jit argument, and two equal selectors share one trace. :func:`as_selector`
turns every accepted ``where=`` into one; :mod:`jaxreg.select` documents the forms
and resolves them over a params tree.

>>> as_selector(None), by_path("Dense_0") == by_path("Dense_0")
(None, True)
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._param_tree import Leaf
from jaxreg._param_tree import is_floating
from jaxreg._param_tree import leaf_name
from jaxreg._param_tree import path_string

__all__ = [
    "AllowEmpty", "BoolTree", "ByPath", "Callback", "Exclude", "Floating", "Kernels",
    "Paths", "Predicate", "allow_empty", "as_selector", "by_path", "exclude", "kernels",
    "paths",
]

Predicate = Callable[[tuple, Any], bool]


@dataclasses.dataclass(frozen=True)
class Floating:
  """Every floating-point parameter (what ``where=None`` means)."""

  def flags(self, tree: list[Leaf]) -> list[bool]:
    return [True] * len(tree)

  def __repr__(self):
    return "None"


# Names that decide, in Flax (Dense, Conv, Embed, LayerNorm, BatchNorm, in linen and
# NNX) and Equinox/PyTorch (bias): whatever their number of stacked layer axes.
_KERNEL_NAMES = frozenset({"kernel"})
_NOT_KERNEL_NAMES = frozenset({"bias", "scale", "embedding"})


@dataclasses.dataclass(frozen=True)
class Kernels:
  """Weight matrices and convolution kernels; see :func:`kernels` for the rule."""

  def flags(self, tree: list[Leaf]) -> list[bool]:
    bias_ndim = {leaf.path[:-1]: np.ndim(leaf.value) for leaf in tree
                 if leaf.path and leaf_name(leaf.path) == "bias" and is_floating(leaf.value)}
    return [is_floating(leaf.value) and _is_kernel(leaf, bias_ndim) for leaf in tree]

  def __repr__(self):
    return "jr.select.kernels()"


def _is_kernel(leaf: Leaf, bias_ndim: dict) -> bool:
  name = leaf_name(leaf.path)
  if name in _KERNEL_NAMES:
    return True
  if name in _NOT_KERNEL_NAMES:
    return False
  # A bias has one axis of its own, so a bias beside the leaf with more counts the
  # layer axes that nn.scan, nnx.scan or a vmap stacked in front of the layer.
  layer_axes = max(bias_ndim.get(leaf.path[:-1], 1) - 1, 0)
  return np.ndim(leaf.value) - layer_axes >= 2


@dataclasses.dataclass(frozen=True)
class ByPath:
  """Leaves whose ``/``-joined path matches ``pattern``; see :func:`by_path`."""
  pattern: str
  search: bool = False

  def flags(self, tree: list[Leaf]) -> list[bool]:
    regex = re.compile(self.pattern if self.search
                       else rf"(?:^|/)(?:{self.pattern})(?=/|$)")
    return [regex.search(path_string(leaf.path)) is not None for leaf in tree]

  def __repr__(self):
    search = ", search=True" if self.search else ""
    return f"jr.select.by_path({self.pattern!r}{search})"


@dataclasses.dataclass(frozen=True)
class Paths:
  """Leaves whose ``/``-joined path is one of ``names``; see :func:`paths`."""
  names: frozenset

  def flags(self, tree: list[Leaf]) -> list[bool]:
    return [path_string(leaf.path) in self.names for leaf in tree]

  def __repr__(self):
    return f"jr.select.paths({', '.join(repr(name) for name in sorted(self.names))})"


@dataclasses.dataclass(frozen=True)
class Exclude:
  """Leaves selected by none of ``selectors``; see :func:`exclude`."""
  selectors: tuple

  def flags(self, tree: list[Leaf]) -> list[bool]:
    columns = [selector.flags(tree) for selector in self.selectors]
    return [not any(row) for row in zip(*columns)] if columns else [True] * len(tree)

  def __repr__(self):
    return f"jr.select.exclude({', '.join(repr(s) for s in self.selectors)})"


@dataclasses.dataclass(frozen=True)
class AllowEmpty:
  """``selector``, which may select nothing; see :func:`allow_empty`."""
  selector: Any

  def flags(self, tree: list[Leaf]) -> list[bool]:
    return self.selector.flags(tree)

  def __repr__(self):
    return f"jr.select.allow_empty({self.selector!r})"


@dataclasses.dataclass(frozen=True)
class BoolTree:
  """A pytree of bools, kept flat so that it is hashable (a static jit argument)."""
  treedef: Any
  flags_: tuple

  def flags(self, tree: list[Leaf]) -> list[bool]:
    return list(self.flags_)

  def __repr__(self):
    return f"a tree of bools ({sum(self.flags_)} of {len(self.flags_)} True)"


def _function_key(fn):
  """What a plain function computes, as a hashable key; ``None`` if it has none.

  Its code, its globals (by identity: the module it reads), its defaults and the
  values in its closure, each with its type (``1`` and ``1.0`` stay apart). A closure
  or a default that is not hashable (an array, a list), or an empty cell, gives
  ``None``: such a function is only equal to itself."""
  try:
    cells = tuple(cell.cell_contents for cell in fn.__closure__ or ())
  except ValueError:  # An empty cell: a name assigned after the function was made.
    return None
  kwdefaults = tuple(sorted((fn.__kwdefaults__ or {}).items()))
  values = (*(fn.__defaults__ or ()), *cells, *(value for _, value in kwdefaults))
  key = (fn.__code__, id(fn.__globals__), len(fn.__defaults__ or ()),
         tuple(name for name, _ in kwdefaults), tuple((type(v), v) for v in values))
  try:
    hash(key)
  except TypeError:
    return None
  return key


@dataclasses.dataclass(frozen=True, eq=False)
class Callback:
  """A user's ``(path, leaf) -> bool`` function.

  Two callbacks are equal when their functions compute the same thing: the same
  function, or two plain functions (a ``lambda`` written once and made again on each
  call) with the same code, module, defaults and closure values, which must be
  hashable to be compared (an array or a list in the closure leaves the function
  equal only to itself). So ``where=lambda path, w: w.ndim >= k`` rebuilt with the
  same ``k`` keeps a jitted step from tracing again. Other callables (bound methods,
  ``functools.partial``) are compared as they compare themselves.
  """
  fn: Predicate

  def _key(self):
    if isinstance(self.fn, types.FunctionType):
      return _function_key(self.fn)
    try:
      hash(self.fn)
    except TypeError:
      return None
    return (self.fn,)

  def __eq__(self, other):
    if not isinstance(other, Callback):
      return NotImplemented
    if self.fn is other.fn:
      return True
    key = self._key()
    return key is not None and key == other._key()

  def __hash__(self):
    key = self._key()
    return hash(key if key is not None else id(self.fn))

  def flags(self, tree: list[Leaf]) -> list[bool]:
    out = []
    for leaf in tree:
      flag = self.fn(leaf.path, leaf.value)
      if not (isinstance(flag, bool) or getattr(flag, "dtype", None) == bool
              and jnp.ndim(flag) == 0):
        raise TypeError(
            f"where={self!r} must return a bool for each leaf, got {type(flag).__name__} "
            f"for {path_string(leaf.path)!r}")
      out.append(bool(flag))
    return out

  def __repr__(self):
    return getattr(self.fn, "__qualname__", repr(self.fn))


def kernels() -> Kernels:
  """Selects weight matrices and conv kernels; skips biases, norm scales, embeddings.

  The rule, on a floating-point parameter whose name is the last key of its path (past
  the ``value`` of an NNX ``Variable`` or a linen metadata box):

  1. named ``kernel`` (Flax's Dense, DenseGeneral, Conv, Einsum; linen and NNX):
     selected;
  2. named ``bias``, ``scale`` or ``embedding`` (Flax's biases, LayerNorm/BatchNorm
     scales and Embed tables; Equinox's biases): not selected;
  3. any other name (Equinox's and PyTorch's ``weight``, your own parameters): selected
     when it has at least two axes besides its layer axes, where the layer axes are
     those a ``bias`` beside it has beyond its own one (``nn.scan``, ``nnx.scan`` and
     vmapped stacks add them); without a ``bias`` beside it, ``ndim >= 2``.

  So the names decide in Flax models, stacked or not, and in a model stacked by
  ``nn.scan`` the LayerNorm scales and biases of shape ``(layers, d)`` stay out.
  Equinox's ``LayerNorm.weight`` (one axis, beside a ``bias``) is out; its
  ``Embedding.weight`` is a 2-D table with no bias and is selected: leave it out with
  :func:`exclude`.

  >>> import jax.numpy as jnp
  >>> from jaxreg import select
  >>> stacked = {"Dense_0": {"kernel": jnp.ones((4, 3, 3)), "bias": jnp.ones((4, 3))},
  ...            "LayerNorm_0": {"scale": jnp.ones((4, 3))}}
  >>> select.mask(kernels(), stacked)
  {'Dense_0': {'bias': False, 'kernel': True}, 'LayerNorm_0': {'scale': False}}
  """
  return Kernels()


def by_path(pattern: str, *, search: bool = False) -> ByPath:
  """Selects leaves whose path, joined with ``/``, matches the regex ``pattern``.

  By default the pattern must match **whole path components**: one or several
  consecutive ones, anywhere in the path. ``by_path("w")`` selects ``layer/w`` but not
  ``layer/bw``; ``by_path("Dense_0/kernel")`` selects ``Dense_0/kernel`` and
  ``Block_1/Dense_0/kernel``; ``by_path("Dense_.*")`` selects all of ``Dense_0``'s
  leaves; ``^`` and ``$`` anchor at the ends of the whole path. With ``search=True`` the
  pattern is searched anywhere, as ``re.search`` does (``"ker"`` then matches
  ``kernel``). Paths are those of ``jaxreg.select.leaves``: inside a linen
  ``'params'`` collection, without NNX's ``value``. ``jr.select.mask`` and
  ``Regularizer.selected`` show what a pattern selects.

  >>> import jax.numpy as jnp
  >>> from jaxreg import select
  >>> params = {"w": jnp.ones(2), "bw": jnp.ones(2)}
  >>> select.mask(by_path("w"), params), select.mask(by_path("w", search=True), params)
  ({'bw': False, 'w': True}, {'bw': True, 'w': True})
  """
  re.compile(pattern)  # A bad pattern fails here, not at the first use.
  if not isinstance(search, bool):
    raise TypeError(f"search must be a bool, got {search!r}")
  return ByPath(pattern, search)


def paths(*names: str) -> Paths:
  """Selects the leaves whose ``/``-joined path is exactly one of ``names``."""
  if not names or not all(isinstance(name, str) for name in names):
    raise TypeError(f"paths takes one or more path strings, got {names!r}")
  return Paths(frozenset(names))


def exclude(*selectors) -> Exclude:
  """Selects the leaves that none of ``selectors`` selects.

  Each selector is a selector, a ``(path, leaf) -> bool`` callable, or a regex string
  for :func:`by_path`: ``exclude("bias", "scale")`` leaves out biases and norm scales.
  """
  if not selectors:
    raise ValueError("exclude needs at least one selector")
  return Exclude(tuple(by_path(s) if isinstance(s, str) else as_selector(s)
                       for s in selectors))


def allow_empty(where) -> AllowEmpty:
  """``where``, marked as allowed to select nothing (then the penalty is 0).

  Without it, a regularizer that selects no parameter raises ``ValueError``. Use it for
  a penalty that covers an optional part of a model: ``jr.L2(1e-4,
  where=jr.select.allow_empty(jr.select.by_path("adapter")))``.
  """
  return AllowEmpty(as_selector(where))


_FUNCTIONS = {kernels: "kernels()", by_path: "by_path('regex')", paths: "paths('a/b')",
              exclude: "exclude(...)", allow_empty: "allow_empty(...)"}
_SELECTORS = (Floating, Kernels, ByPath, Paths, Exclude, AllowEmpty, BoolTree, Callback)


def _takes_path_and_leaf(fn) -> bool:
  try:
    signature = inspect.signature(fn)
  except (TypeError, ValueError):  # Builtins without a signature: trust them.
    return True
  try:
    signature.bind(None, None)
  except TypeError:
    return False
  return True


def as_selector(where):
  """Normalizes a ``where=`` argument to a hashable selector."""
  if where is None:
    return Floating()
  if isinstance(where, _SELECTORS):
    return where
  if any(where is fn for fn in _FUNCTIONS):
    raise TypeError(
        f"where=jr.select.{where.__name__} is the function itself; call it: "
        f"where=jr.select.{_FUNCTIONS[where]}")
  if callable(where):
    if not _takes_path_and_leaf(where):
      raise TypeError(
          f"where={where!r} does not take (path, leaf). A where= callable is called on "
          "each leaf as where(path, leaf) -> bool; an Optax-style mask function "
          "(params -> tree of bools) is not: pass its result, where=mask_fn(params), "
          "or write a (path, leaf) predicate")
    return Callback(where)
  flags, treedef = jax.tree.flatten(where)
  for flag in flags:
    if not isinstance(flag, bool) and getattr(flag, "dtype", None) != bool:
      raise TypeError(
          "where must be None, a callable (path, leaf) -> bool, a selector from "
          f"jaxreg.select, or a pytree of bools; found a leaf {flag!r}")
    if isinstance(flag, jax.core.Tracer):
      raise TypeError("where must be known at trace time, got a traced bool")
  return BoolTree(treedef, tuple(bool(flag) for flag in flags))
