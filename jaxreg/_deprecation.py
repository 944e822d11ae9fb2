"""Old import paths that still work, with a ``DeprecationWarning`` naming the new one.

``jaxreg.dropout`` was both a module and the function ``jr.dropout``; the module is
now :mod:`jaxreg.stochastic`. A file named ``jaxreg/dropout.py`` would bring the
collision back (importing it rebinds ``jaxreg.dropout`` to the module), so the old
module path is an entry in ``sys.modules``: ``from jaxreg.dropout import dropout``
finds it there, warns, and gets the function from its new home, while the attribute
``jaxreg.dropout`` stays the function.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings


class MovedModule(types.ModuleType):
  """Stands at an old module path and forwards every attribute to the new module."""

  def __init__(self, old: str, new: str):
    super().__init__(old, f"Deprecated: moved to {new}.")
    self._new = new

  def __getattr__(self, name):
    new = importlib.import_module(self._new)
    if name.startswith("__") or not hasattr(new, name):  # Probes (__path__, ...) too.
      raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
    warnings.warn(f"{self.__name__} is deprecated: import {name} from {self._new}",
                  DeprecationWarning, stacklevel=2)
    return getattr(new, name)

  def __dir__(self):
    return dir(importlib.import_module(self._new))


def install(old: str, new: str):
  """Makes ``old`` importable as a :class:`MovedModule` forwarding to ``new``."""
  sys.modules.setdefault(old, MovedModule(old, new))
