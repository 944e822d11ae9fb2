"""Argument checks at the public edge.

A value known at trace time is checked then, and a bad one raises an exception that
names the argument and the value. A value that is traced (a rate under ``vmap``, a
strength scheduled inside ``jit``) cannot be checked without a device round trip, so
each check also says what a traced value is mapped to: always something finite,
never a silent NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_rate(rate, name: str = "rate"):
  """A scalar drop probability in ``[0, 1]``.

  Concrete: raises ``ValueError`` outside ``[0, 1]`` or for NaN, and returns the float.
  Traced: clipped to ``[0, 1]``, and NaN is read as 1 (everything dropped), so the
  output stays finite.
  """
  if jnp.ndim(rate) != 0:
    raise ValueError(
        f"{name} must be a scalar, got shape {jnp.shape(rate)}; use jax.vmap for a batch")
  if isinstance(rate, jax.core.Tracer):
    rate = jnp.asarray(rate, jnp.float32)
    return jnp.where(jnp.isnan(rate), 1.0, jnp.clip(rate, 0.0, 1.0))
  value = float(rate)
  if not 0.0 <= value <= 1.0:  # NaN fails both comparisons.
    raise ValueError(f"{name} must be in [0, 1], got {value}")
  return value


def check_nonnegative(value, name: str):
  """A strength, threshold or standard deviation: finite and ``>= 0``, elementwise.

  Concrete: raises ``ValueError`` for a negative, infinite or NaN entry. Traced:
  negative entries and NaN act as 0.
  """
  if isinstance(value, jax.core.Tracer):
    return jnp.where(value > 0, value, jnp.zeros_like(value))
  concrete = np.asarray(value, dtype=np.float64)
  if not (np.all(np.isfinite(concrete)) and np.all(concrete >= 0)):
    shown = concrete.item() if concrete.ndim == 0 else concrete
    raise ValueError(f"{name} must be finite and >= 0, got {shown}")
  return value


def check_strength(value, name: str = "strength"):
  """A penalty's strength: a real scalar (Python number, 0-d array, or tracer), then
  :func:`check_nonnegative`.

  ``None``, a string, a bool (``True`` is not 1.0 here) and anything with a shape
  (``[0.1]``) raise ``TypeError`` naming the argument.
  """
  dtype = getattr(value, "dtype", None)
  is_real = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
      dtype is not None and dtype != bool and (jnp.issubdtype(dtype, jnp.floating)
                                               or jnp.issubdtype(dtype, jnp.integer)))
  if not is_real:
    raise TypeError(
        f"{name} must be a real number (a float or a 0-d array), got "
        f"{type(value).__name__}: {value!r}")
  if jnp.ndim(value) != 0:
    raise TypeError(
        f"{name} must be a scalar, got shape {jnp.shape(value)}; use jax.vmap to "
        "evaluate several strengths")
  return check_nonnegative(value, name)


def check_floating(x, name: str = "x"):
  """Dropout and noise are defined on real floating arrays only."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")
  return jnp.asarray(x)


def check_key(key, name: str = "key"):
  """A single PRNG key: typed (``jax.random.key``) or legacy ``uint32`` (``PRNGKey``)."""
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if key.ndim != 0:
      raise ValueError(
          f"{name} must be a single key, got a key array of shape {key.shape}; "
          "use jax.vmap to map over several keys")
    return key
  if dtype is not None and dtype == np.uint32 and np.ndim(key) == 1:
    return key
  shown = f"dtype {dtype} and shape {np.shape(key)}" if dtype is not None else repr(key)
  raise TypeError(
      f"{name} must be a PRNG key from jax.random.key or jax.random.PRNGKey, "
      f"got {type(key).__name__} with {shown}")
