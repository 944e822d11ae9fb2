"""The per-layer form of regularizers: declarations on parameters, as one regularizer.

Keras users write the regularizer next to the layer (``kernel_regularizer=``). The Flax
adapters let a parameter carry its regularizer (a linen metadata box, NNX variable
metadata); :func:`declared` turns those declarations into the ``where=`` form, so that
both forms are the same objects underneath.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from jaxreg import select
from jaxreg._regularizer import Regularizer
from jaxreg._regularizer import Sum

__all__ = ["declared"]


def declared(params, declaration: Callable[[Any], Any], *, how: str) -> Regularizer:
  """The regularizer that per-parameter declarations in ``params`` add up to.

  ``declaration(node)`` returns the regularizer a node of ``params`` carries (a Flax
  metadata box, an NNX variable), or ``None``. Each declared regularizer is returned
  with ``where=`` the exact paths of the parameters it was declared on (one term per
  regularizer object, however many layers share it), so the per-layer form and the
  ``where=`` form are the same objects: their values, gradients and proxes agree, and
  ``jaxreg.transforms`` takes either. ``how`` is named in the error raised when
  nothing is declared.
  """
  is_declared = lambda node: declaration(node) is not None
  per_leaf = []
  for node in jax.tree.leaves(params, is_leaf=is_declared):
    reg = declaration(node) if is_declared(node) else None
    per_leaf += [reg] * len(jax.tree.leaves(node))
  groups: dict[int, tuple[Regularizer, list[str]]] = {}
  for reg, leaf in zip(per_leaf, select.leaves(params)):
    if reg is not None and leaf.is_param:
      groups.setdefault(id(reg), (reg, []))[1].append(select.path_string(leaf.path))
  if not groups:
    raise ValueError(f"no parameter carries a regularizer: declare one with {how}")
  for reg, _ in groups.values():
    if not isinstance(reg, Regularizer):
      raise TypeError(f"a declared regularizer must be a jaxreg regularizer, got {reg!r}")
    for term in reg.terms if isinstance(reg, Sum) else (reg,):
      if not isinstance(term.where, select.Floating):
        raise ValueError(
            f"{term!r} was declared on a parameter, so it applies to that parameter; "
            "give it no where=")
  return sum(reg.with_where(select.paths(*paths)) for reg, paths in groups.values())
