"""A parameter tree as selectors read it: each leaf with its path and a parameter flag.

A plain pytree is all parameters. In a Flax linen ``variables`` dict (a mapping of
collections, one of them ``'params'``) only the ``'params'`` collection holds
parameters, and paths are read from inside it. In an NNX module or ``nnx.state`` only
``nnx.Param`` variables are parameters. The ``value`` attribute that an NNX
``Variable`` (or a linen metadata box) adds to a path is dropped, so a variable's path
is its own. :mod:`jaxreg.select` documents these rules for users.

>>> import jax.numpy as jnp
>>> [(path_string(leaf.path), leaf.is_param)
...  for leaf in leaves({"params": {"w": jnp.ones(2)}, "stats": {"n": jnp.ones(2)}})]
[('w', True), ('stats/n', False)]
"""

from __future__ import annotations

from collections.abc import Mapping
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Leaf", "is_floating", "leaf_name", "leaves", "path_string"]

_VALUE = jax.tree_util.GetAttrKey("value")
_PARAMS = "params"


def path_string(path) -> str:
  """A key path joined with ``/``: ``('params', 'Dense_0', 'kernel')`` -> ``params/Dense_0/kernel``."""
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def is_floating(leaf) -> bool:
  """Whether ``leaf`` can be a parameter: a floating-point array, or a Python float."""
  if isinstance(leaf, float):  # A Python float is a parameter, as in Optax.
    return True
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


class Leaf(NamedTuple):
  """One leaf of a params tree, as selectors see it."""
  path: tuple  # key path, relative to the parameters' root, without a trailing `value`
  value: Any  # the array (or ShapeDtypeStruct, or tracer)
  is_param: bool  # False for linen collections other than 'params' and NNX non-Params


def leaf_name(path) -> str:
  """The last key of ``path``, as a string: a parameter's own name."""
  return path_string(path[-1:]) if path else ""


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
