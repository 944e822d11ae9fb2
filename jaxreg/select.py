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

import jax
import numpy as np

# This module is the public home of the selectors (jaxreg/_selectors.py) and of how a
# params tree is read (jaxreg/_param_tree.py); it resolves a selector over a tree.
from jaxreg import _param_tree
from jaxreg._param_tree import Leaf
from jaxreg._param_tree import leaves
from jaxreg._param_tree import path_string
from jaxreg._selectors import AllowEmpty
from jaxreg._selectors import BoolTree
from jaxreg._selectors import ByPath
from jaxreg._selectors import Callback
from jaxreg._selectors import Exclude
from jaxreg._selectors import Floating
from jaxreg._selectors import Kernels
from jaxreg._selectors import Paths
from jaxreg._selectors import Predicate
from jaxreg._selectors import allow_empty
from jaxreg._selectors import as_selector
from jaxreg._selectors import by_path
from jaxreg._selectors import exclude
from jaxreg._selectors import kernels
from jaxreg._selectors import paths

__all__ = [
    # Selectors (jaxreg/_selectors.py).
    "kernels", "by_path", "paths", "exclude", "allow_empty", "as_selector",
    "AllowEmpty", "BoolTree", "ByPath", "Callback", "Exclude", "Floating", "Kernels",
    "Paths", "Predicate",
    # Reading a params tree (jaxreg/_param_tree.py).
    "Leaf", "leaves", "path_string",
    # What a selector selects in a params tree (here).
    "mask", "selection", "selected",
]


def _flags(selector, params) -> list[bool]:
  tree = leaves(params)
  if isinstance(selector, BoolTree):
    treedef = jax.tree.structure(params)
    if selector.treedef != treedef:
      raise ValueError(
          "where does not match the structure of params:\n"
          f"  where:  {selector.treedef}\n  params: {treedef}")
    for flag, leaf in zip(selector.flags_, tree):
      if flag and not _param_tree.is_floating(leaf.value):
        raise TypeError(
            f"where selects {path_string(leaf.path)!r}, which is not floating point "
            f"(dtype {getattr(leaf.value, 'dtype', type(leaf.value).__name__)})")
  return [flag and leaf.is_param and _param_tree.is_floating(leaf.value)
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
    tree = [leaf for leaf in leaves(params) if leaf.is_param and _param_tree.is_floating(leaf.value)]
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
