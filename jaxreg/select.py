"""``where=`` selectors: which leaves of a parameter tree a regularizer touches.

A regularizer's ``where`` is one of

* ``None``: every floating-point parameter;
* a pytree of ``bool`` with exactly the structure of the params;
* a callable ``(path, leaf) -> bool``, where ``path`` is the leaf's JAX key path (read
  as below: inside a linen ``'params'`` collection, without NNX's ``value``);
* a selector from this module: :func:`kernels`, :func:`by_path`, :func:`exclude`,
  :func:`paths`, and :func:`allow_empty` around any of these.

**Parameters only.** Given a full Flax linen ``variables`` dict (a mapping of
collections, one of them ``'params'``), only the ``'params'`` collection can be
selected, and paths are read from inside it (``Dense_0/kernel``, not
``params/Dense_0/kernel``), so a selector means the same on ``variables`` and on
``variables['params']``. Given an NNX module or ``nnx.state``, only ``nnx.Param``
variables can be selected (never ``BatchStat`` or other state), and a variable's path
is its own (``linear/kernel``): the ``value`` attribute an NNX ``Variable`` (or a linen
metadata box) adds to the path is dropped. A plain pytree is all parameters, so to
penalize something else on purpose, pass it alone (``reg(variables["batch_stats"])``).
:func:`path_string` writes a JAX key path the way these paths are written.

Only floating-point leaves are ever selected (arrays of a floating dtype, and Python
floats, which are parameters as they are in Optax): a callable's ``True`` on an
integer leaf is ignored, and a bool tree that selects one is a ``TypeError``.
Selection happens at trace time from paths, shapes and dtypes, never from values, so
it costs nothing at run time. Selected-out leaves add 0 to a penalty and come back
untouched from ``prox``.

**Nothing selected is an error.** A regularizer whose ``where`` selects no
floating-point parameter of the tree it is given raises ``ValueError`` naming the
selector and listing the paths that exist (a renamed layer must not silently turn a
penalty into 0). A regularizer that may legitimately cover nothing says so:
``where=allow_empty(...)``. :func:`mask` and ``Regularizer.selected(params)`` show what
a selector picks.

>>> import jax.numpy as jnp
>>> params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
>>> mask(kernels(), params)
{'dense': {'bias': False, 'kernel': True}}
>>> mask(exclude("bias"), params)
{'dense': {'bias': False, 'kernel': True}}
>>> mask(by_path("dense/b"), params)   # whole path components: "b" is not "bias"
{'dense': {'bias': False, 'kernel': False}}
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import inspect
import re
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Predicate = Callable[[tuple, Any], bool]

_VALUE = jax.tree_util.GetAttrKey("value")
_PARAMS = "params"


def path_string(path) -> str:
  """A key path joined with ``/``: ``('params', 'Dense_0', 'kernel')`` -> ``params/Dense_0/kernel``."""
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def _is_floating(leaf) -> bool:
  if isinstance(leaf, float):  # A Python float is a parameter, as in Optax.
    return True
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


class Leaf(NamedTuple):
  """One leaf of a params tree, as selectors see it."""
  path: tuple  # key path, relative to the parameters' root, without a trailing `value`
  value: Any  # the array (or ShapeDtypeStruct, or tracer)
  is_param: bool  # False for linen collections other than 'params' and NNX non-Params


def _is_linen_variables(tree) -> bool:
  return (isinstance(tree, Mapping) and _PARAMS in tree
          and all(isinstance(collection, Mapping) for collection in tree.values()))


def _nnx_variable_classes():
  """``(nnx.Variable, nnx.Param)`` when Flax NNX is loaded: a tree can hold NNX
  variables only then, and jaxreg's core does not import Flax itself."""
  nnx = sys.modules.get("flax.nnx")
  return (nnx.Variable, nnx.Param) if nnx is not None else None


def leaves(params) -> list[Leaf]:
  """The leaves of ``params`` in ``jax.tree.leaves`` order, with the paths and the
  parameter flags of the rules in this module's docstring."""
  nnx_classes = _nnx_variable_classes()
  is_variable = (lambda x: isinstance(x, nnx_classes[0])) if nnx_classes else None
  linen_variables = _is_linen_variables(params)
  out = []
  for path, node in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_variable)[0]:
    is_param = True
    if linen_variables:
      is_param = path[0] == jax.tree_util.DictKey(_PARAMS)
      path = path[1:] if is_param else path
    if is_variable is not None and is_variable(node):
      is_param = isinstance(node, nnx_classes[1])
      inner = jax.tree_util.tree_flatten_with_path(node)[0]
    else:
      inner = [((), node)]
    for subpath, leaf in inner:
      full = (*path, *subpath)
      if full and full[-1] == _VALUE:
        full = full[:-1]
      out.append(Leaf(full, leaf, is_param))
  return out


def _leaf_name(path) -> str:
  return path_string(path[-1:]) if path else ""


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
                 if leaf.path and _leaf_name(leaf.path) == "bias" and _is_floating(leaf.value)}
    return [_is_floating(leaf.value) and _is_kernel(leaf, bias_ndim) for leaf in tree]

  def __repr__(self):
    return "jr.select.kernels()"


def _is_kernel(leaf: Leaf, bias_ndim: dict) -> bool:
  name = _leaf_name(leaf.path)
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


@dataclasses.dataclass(frozen=True, eq=False)
class Callback:
  """A user's ``(path, leaf) -> bool`` function."""
  fn: Predicate

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
  >>> stacked = {"Dense_0": {"kernel": jnp.ones((4, 3, 3)), "bias": jnp.ones((4, 3))},
  ...            "LayerNorm_0": {"scale": jnp.ones((4, 3))}}
  >>> mask(kernels(), stacked)
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
  ``kernel``). Paths are those of :func:`leaves`: inside a linen ``'params'``
  collection, without NNX's ``value``. ``jr.select.mask`` and
  ``Regularizer.selected`` show what a pattern selects.

  >>> import jax.numpy as jnp
  >>> params = {"w": jnp.ones(2), "bw": jnp.ones(2)}
  >>> mask(by_path("w"), params), mask(by_path("w", search=True), params)
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


def _flags(selector, params) -> list[bool]:
  tree = leaves(params)
  if isinstance(selector, BoolTree):
    treedef = jax.tree.structure(params)
    if selector.treedef != treedef:
      raise ValueError(
          "where does not match the structure of params:\n"
          f"  where:  {selector.treedef}\n  params: {treedef}")
    for flag, leaf in zip(selector.flags_, tree):
      if flag and not _is_floating(leaf.value):
        raise TypeError(
            f"where selects {path_string(leaf.path)!r}, which is not floating point "
            f"(dtype {getattr(leaf.value, 'dtype', type(leaf.value).__name__)})")
  return [flag and leaf.is_param and _is_floating(leaf.value)
          for flag, leaf in zip(selector.flags(tree), tree)]


def mask(where, params):
  """A pytree of Python bools with the structure of ``params``: ``True`` = selected.

  Raises ``ValueError`` when ``where`` is a bool tree of another structure, and
  ``TypeError`` when it selects a leaf that is not floating point. It never raises for
  an empty selection (regularizers do).
  """
  return jax.tree.unflatten(jax.tree.structure(params), _flags(as_selector(where), params))


def selection(where, params) -> list[bool]:
  """``jax.tree.leaves(mask(where, params))``, raising ``ValueError`` when nothing
  floating is selected unless ``where`` is :func:`allow_empty`."""
  selector = as_selector(where)
  flags = _flags(selector, params)
  if not any(flags) and not isinstance(selector, AllowEmpty):
    tree = [leaf for leaf in leaves(params) if leaf.is_param and _is_floating(leaf.value)]
    shown = ", ".join(f"{path_string(leaf.path)} {np.shape(leaf.value)}"
                      for leaf in tree[:8])
    more = f", and {len(tree) - 8} more" if len(tree) > 8 else ""
    raise ValueError(
        f"where={selector!r} selects no floating-point parameter, so the penalty would "
        f"be 0. The {len(tree)} parameters are: {shown or 'none'}{more}. Fix where=, or "
        "write where=jr.select.allow_empty(...) if the penalty may cover nothing")
  return flags


def selected(where, params) -> dict[str, tuple[int, ...]]:
  """``{path: shape}`` of the leaves ``where`` selects in ``params``."""
  return {path_string(leaf.path): np.shape(leaf.value)
          for flag, leaf in zip(_flags(as_selector(where), params), leaves(params)) if flag}
