"""``where=`` selectors: which leaves of a parameter tree a regularizer touches.

A regularizer's ``where`` is one of

* ``None``: every floating-point leaf;
* a pytree of ``bool`` with exactly the structure of the params;
* a callable ``(path, leaf) -> bool``, where ``path`` is the leaf's JAX key path;
* a selector from this module: :func:`kernels`, :func:`by_path`, :func:`exclude`.

Only floating-point leaves are ever selected: a callable's ``True`` on an integer leaf
is ignored, and a bool tree that selects one is a ``TypeError``. Selection happens at
trace time from paths, shapes and dtypes, never from values, so it costs nothing at run
time. Selected-out leaves add 0 to a penalty and come back untouched from ``prox``.

>>> import jax.numpy as jnp
>>> params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
>>> mask(kernels(), params)
{'dense': {'bias': False, 'kernel': True}}
>>> mask(exclude("bias"), params)
{'dense': {'bias': False, 'kernel': True}}
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp

Predicate = Callable[[tuple, Any], bool]


def path_string(path) -> str:
  """A key path joined with ``/``: ``('params', 'Dense_0', 'kernel')`` -> ``params/Dense_0/kernel``."""
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def _is_floating(leaf) -> bool:
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


@dataclasses.dataclass(frozen=True)
class Floating:
  """Every floating-point leaf (what ``where=None`` means)."""

  def __call__(self, path, leaf) -> bool:
    return _is_floating(leaf)


@dataclasses.dataclass(frozen=True)
class Kernels:
  """Weight matrices and convolution kernels: floating leaves with ``ndim >= 2``.

  Biases and LayerNorm/BatchNorm scales (``ndim == 1``) and scalars are left out, and
  so are embedding tables (a leaf named ``embedding``, as Flax names them): a penalty
  on embeddings acts on rows by word frequency, rarely what is meant.
  """

  def __call__(self, path, leaf) -> bool:
    return _is_floating(leaf) and leaf.ndim >= 2 and _leaf_name(path) != "embedding"


def _leaf_name(path) -> str:
  """The last key of ``path`` that names the leaf: in ``nnx.state(model)`` an NNX
  ``Variable`` adds its own ``.value`` after the attribute's name."""
  if path and path[-1] == jax.tree_util.GetAttrKey("value"):
    path = path[:-1]
  return path_string(path[-1:]) if path else ""


@dataclasses.dataclass(frozen=True)
class ByPath:
  """Leaves whose ``/``-joined path matches ``pattern`` (``re.search``)."""
  pattern: str

  def __call__(self, path, leaf) -> bool:
    return re.search(self.pattern, path_string(path)) is not None


@dataclasses.dataclass(frozen=True)
class Exclude:
  """Leaves selected by none of ``selectors`` (strings are :func:`by_path` patterns)."""
  selectors: tuple

  def __call__(self, path, leaf) -> bool:
    return not any(selector(path, leaf) for selector in self.selectors)


@dataclasses.dataclass(frozen=True)
class BoolTree:
  """A pytree of bools, kept flat so that it is hashable (a static jit argument)."""
  treedef: Any
  flags: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Callback:
  """A user's ``(path, leaf) -> bool`` function."""
  fn: Predicate

  def __call__(self, path, leaf) -> bool:
    return bool(self.fn(path, leaf))


def kernels() -> Kernels:
  """Selects weight matrices and conv kernels; skips biases, norm scales, embeddings."""
  return Kernels()


def by_path(pattern: str) -> ByPath:
  """Selects leaves whose path, joined with ``/``, matches the regex ``pattern``."""
  re.compile(pattern)  # A bad pattern fails here, not at the first use.
  return ByPath(pattern)


def exclude(*selectors) -> Exclude:
  """Selects the leaves that none of ``selectors`` selects.

  Each selector is a selector, a ``(path, leaf) -> bool`` callable, or a regex string
  for :func:`by_path`: ``exclude("bias", "scale")`` leaves out biases and norm scales.
  """
  if not selectors:
    raise ValueError("exclude needs at least one selector")
  return Exclude(tuple(by_path(s) if isinstance(s, str) else as_selector(s)
                       for s in selectors))


def as_selector(where):
  """Normalizes a ``where=`` argument to a hashable selector."""
  if where is None:
    return Floating()
  if isinstance(where, (Floating, Kernels, ByPath, Exclude, BoolTree, Callback)):
    return where
  if callable(where):
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


def mask(where, params):
  """A pytree of Python bools with the structure of ``params``: ``True`` = selected.

  Raises ``ValueError`` when ``where`` is a bool tree of another structure, and
  ``TypeError`` when it selects a leaf that is not floating point.
  """
  selector = as_selector(where)
  leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
  if isinstance(selector, BoolTree):
    if selector.treedef != treedef:
      raise ValueError(
          "where does not match the structure of params:\n"
          f"  where:  {selector.treedef}\n  params: {treedef}")
    for flag, (path, leaf) in zip(selector.flags, leaves_with_paths):
      if flag and not _is_floating(leaf):
        raise TypeError(
            f"where selects {path_string(path)!r}, which is not floating point "
            f"(dtype {getattr(leaf, 'dtype', type(leaf).__name__)})")
    return jax.tree.unflatten(treedef, selector.flags)
  return jax.tree.unflatten(treedef, [
      _is_floating(leaf) and selector(path, leaf) for path, leaf in leaves_with_paths])
