"""Deprecated: ``prox_adagrad``, ``ftrl``, ``ProxAdagradState`` and ``FtrlState`` moved
to :mod:`jaxreg.transforms`; import them from there."""

from jaxreg import _deprecation

__all__ = ["FtrlState", "ProxAdagradState", "ftrl", "prox_adagrad"]

# Each name is looked up when used, with a DeprecationWarning that names its new home.
__getattr__ = _deprecation.MovedModule(__name__, "jaxreg.transforms").__getattr__
