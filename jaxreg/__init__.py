"""jaxreg: functional regularization for JAX.

Dropout and its relatives as pure functions of an explicit PRNG key, L1/L2-family
penalties with their proximal maps, and adapters for Optax and Flax.

>>> import jax, jax.numpy as jnp, jaxreg as jr
>>> y = jr.dropout(jax.random.key(0), jnp.ones(4), 0.5)
>>> float(jr.L2(0.1)({"w": jnp.array([1.0, 2.0])}))
0.5
"""

import importlib

from jaxreg import attention
from jaxreg import cv
from jaxreg import prox
from jaxreg import select
from jaxreg.constraints import Constraint
from jaxreg.constraints import MaxNorm
from jaxreg.constraints import MinMaxNorm
from jaxreg.constraints import NonNeg
from jaxreg.constraints import UnitNorm
from jaxreg.dropout import alpha_dropout
from jaxreg.dropout import drop_connect
from jaxreg.dropout import drop_path
from jaxreg.dropout import drop_path_rates
from jaxreg.dropout import dropblock
from jaxreg.dropout import dropout
from jaxreg.dropout import dropout_mask
from jaxreg.dropout import gaussian_dropout
from jaxreg.dropout import gaussian_noise
from jaxreg.dropout import mc_predict
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


def __getattr__(name):
  if name in _ADAPTERS:
    return importlib.import_module(f"jaxreg.{name}")
  raise AttributeError(f"module 'jaxreg' has no attribute {name!r}")
