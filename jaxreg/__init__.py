"""jaxreg: functional regularization for JAX.

Dropout and its relatives as pure functions of an explicit PRNG key, L1/L2-family
penalties with their proximal maps, and adapters for Optax and Flax.

>>> import jax, jax.numpy as jnp, jaxreg as jr
>>> y = jr.dropout(jax.random.key(0), jnp.ones(4), 0.5)
>>> float(jr.L2(0.1)({"w": jnp.array([1.0, 2.0])}))
0.5
"""

import importlib as _importlib

from jaxreg import _deprecation
from jaxreg import attention
from jaxreg import cv
from jaxreg import prox
from jaxreg import select
from jaxreg.constraints import Constraint
from jaxreg.constraints import MaxNorm
from jaxreg.constraints import MinMaxNorm
from jaxreg.constraints import NonNeg
from jaxreg.constraints import UnitNorm
from jaxreg.stochastic import alpha_dropout
from jaxreg.stochastic import drop_connect
from jaxreg.stochastic import drop_path
from jaxreg.stochastic import drop_path_rates
from jaxreg.stochastic import dropblock
from jaxreg.stochastic import dropout
from jaxreg.stochastic import dropout_mask
from jaxreg.stochastic import gaussian_dropout
from jaxreg.stochastic import gaussian_noise
from jaxreg.stochastic import mc_predict
from jaxreg.orthogonal import Orthogonal
from jaxreg.regularizers import ElasticNet
from jaxreg.regularizers import GroupLasso
from jaxreg.regularizers import L1
from jaxreg.regularizers import L2
from jaxreg.regularizers import Regularizer
from jaxreg.regularizers import Sum
from jaxreg.regularizers import l1
from jaxreg.regularizers import l1_l2
from jaxreg.regularizers import l2

__all__ = [
    "Constraint",
    "ElasticNet",
    "GroupLasso",
    "L1",
    "L2",
    "MaxNorm",
    "MinMaxNorm",
    "NonNeg",
    "Orthogonal",
    "Regularizer",
    "Sum",
    "UnitNorm",
    "alpha_dropout",
    "drop_connect",
    "drop_path",
    "drop_path_rates",
    "dropblock",
    "dropout",
    "dropout_mask",
    "gaussian_dropout",
    "gaussian_noise",
    "l1",
    "l1_l2",
    "l2",
    "mc_predict",
]

__version__ = "0.1.0"

# Adapters import optax or flax; load them only when asked for (``jr.transforms``).
_ADAPTERS = ("linen", "nnx", "transforms")
# The submodules a user imports by name; with the adapters, what ``dir(jaxreg)`` lists
# beside ``__all__`` (never the private helpers).
_MODULES = ("activity", "attention", "constraints", "cv", "masks", "orthogonal",
            "paths", "per_layer", "prox", "regularizers", "select", "stochastic")

_deprecation.install("jaxreg.dropout", "jaxreg.stochastic")


def __getattr__(name):
  if name in _ADAPTERS or name in _MODULES:
    return _importlib.import_module(f"jaxreg.{name}")
  raise AttributeError(f"module 'jaxreg' has no attribute {name!r}")


def __dir__():
  return sorted({*__all__, *_ADAPTERS, *_MODULES, "__version__"})
