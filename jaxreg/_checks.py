"""Argument checks at the public edge.

A value known at trace time is checked then, and a bad one raises an exception that
names the argument and the value. A value that is traced (a rate under ``vmap``, a
strength scheduled inside ``jit``) cannot be checked without a device round trip, so
each check also says what a traced value is mapped to: always something finite,
never a silent NaN.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
import numpy as np


def _real_dtype(value):
  """``value``'s dtype when it is real (integer or floating, not bool), else None.

  Python numbers, NumPy and JAX scalars and arrays, tracers, and lists of numbers
  qualify; ``None``, strings, bools and complex numbers do not."""
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    dtype = value.dtype
  elif isinstance(value, bool):
    return None
  else:
    try:
      dtype = np.asarray(value).dtype
    except (TypeError, ValueError):
      return None
  if dtype == bool or not (jnp.issubdtype(dtype, jnp.floating)
                           or jnp.issubdtype(dtype, jnp.integer)):
    return None
  return dtype


def _not_a_real_number(value, name: str) -> TypeError:
  return TypeError(f"{name} must be a real number (a float or a 0-d array), got "
                   f"{type(value).__name__}: {value!r}")


def check_real(value, name: str):
  """``value`` if it is real-valued (a number, or an array of numbers), else
  ``TypeError`` naming the argument."""
  if _real_dtype(value) is None:
    raise TypeError(f"{name} must be a real number or an array of them, got "
                    f"{type(value).__name__}: {value!r}")
  return value


def check_rate(rate, name: str = "rate"):
  """A scalar drop probability in ``[0, 1]``.

  Concrete: raises ``ValueError`` outside ``[0, 1]`` or for NaN, and returns the float.
  Traced: clipped to ``[0, 1]``, and NaN is read as 1 (everything dropped), so the
  output stays finite.
  """
  if _real_dtype(rate) is None:
    raise _not_a_real_number(rate, name)
  if jnp.ndim(rate) != 0:
    raise ValueError(
        f"{name} must be a scalar, got shape {jnp.shape(rate)}; use jax.vmap for a batch")
  if isinstance(rate, jax.core.Tracer):
    _note_traced(rate, name, "rate")
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
  check_real(value, name)
  if isinstance(value, jax.core.Tracer):
    _note_traced(value, name, "nonnegative")
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
  if isinstance(value, (list, tuple)) or _real_dtype(value) is None:
    raise _not_a_real_number(value, name)
  if jnp.ndim(value) != 0:
    raise TypeError(
        f"{name} must be a scalar, got shape {jnp.shape(value)}; use jax.vmap to "
        "evaluate several strengths")
  return check_nonnegative(value, name)


def check_positive_int(value, name: str, *, allow_none: bool = False):
  """A count or a length: a Python (or NumPy) int ``>= 1``; ``None`` too if allowed.

  A bool, a float (``2.0``) or an array raises ``TypeError``; ``0`` or a negative
  int raises ``ValueError``; both name the argument.
  """
  if value is None and allow_none:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    also = " or None" if allow_none else ""
    raise TypeError(f"{name} must be a positive int{also}, got "
                    f"{type(value).__name__}: {value!r}")
  if value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")
  return int(value)


def check_bool(value, name: str) -> bool:
  """A switch: Python's (or NumPy's) ``True`` or ``False``. Anything else (``1``,
  ``"yes"``, an array) raises ``TypeError`` naming the argument, rather than being read
  by its truth."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be True or False, got {value!r}")
  return bool(value)


def check_axes(axis, name: str = "axis") -> tuple[int, ...]:
  """An int or a non-empty tuple (or list, as Keras takes) of ints, as a tuple."""
  axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
  if not axes or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                         for a in axes):
    raise ValueError(f"{name} must be an int or a tuple of ints, got {axis!r}")
  return tuple(int(a) for a in axes)


def check_axes_fit(axes: tuple[int, ...], shape: tuple[int, ...], owner: str):
  """Raises ``ValueError`` when an axis is out of range for an array of ``shape``."""
  if not all(-len(shape) <= a < len(shape) for a in axes):
    raise ValueError(
        f"{owner} axis={axes if len(axes) > 1 else axes[0]!r} is out of range for a "
        f"selected leaf of shape {shape}; pass where= to select only leaves with enough "
        "dims (e.g. where=jaxreg.select.kernels())")


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
    expected = _raw_key_shape(jax.config.jax_default_prng_impl)
    if np.shape(key) != expected:
      raise TypeError(
          f"{name} of shape {np.shape(key)} is not a raw key of the default PRNG "
          f"implementation ({jax.config.jax_default_prng_impl}, raw keys of shape "
          f"{expected}): it is another implementation's key data. Wrap it with "
          "jax.random.wrap_key_data(data, impl=...) or pass the typed key")
    return key
  shown = f"dtype {dtype} and shape {np.shape(key)}" if dtype is not None else repr(key)
  raise TypeError(
      f"{name} must be a PRNG key from jax.random.key or jax.random.PRNGKey, "
      f"got {type(key).__name__} with {shown}")


def is_raw_key(key) -> bool:
  """Whether ``key`` (a checked key) is raw ``uint32`` data rather than a typed key."""
  return not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


@functools.lru_cache(maxsize=None)
def _raw_key_shape(impl: str) -> tuple[int, ...]:
  """The shape of ``jax.random.PRNGKey``'s raw ``uint32`` key data under ``impl``."""
  return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape


# Cross-validation asks which grid leaves reach a check as a strength or a rate: a
# traced value that is negative or NaN is mapped to something finite above, so a grid
# point of -1.0 or NaN would train as 0 and could be chosen. While
# :func:`watching_traced` is active, a check that meets one of the watched tracers
# (by identity: the grid point's leaves as ``fit`` receives them) records its kind.
_WATCHED = contextvars.ContextVar("jaxreg_watched_tracers", default=None)


class TracedUses:
  """What :func:`watching_traced` saw: ``uses[label] = {(argument name, kind)}`` with
  kind ``"rate"`` (must be in ``[0, 1]``) or ``"nonnegative"`` (finite, ``>= 0``)."""

  def __init__(self):
    self.labels: dict[int, str] = {}
    self.keep_alive: list = []  # Ids stay unique while the watched tracers live.
    self.uses: dict[str, set[tuple[str, str]]] = {}

  def watch(self, tracer, label: str):
    self.labels[id(tracer)] = label
    self.keep_alive.append(tracer)


@contextlib.contextmanager
def watching_traced():
  """Records, in the :class:`TracedUses` it yields, which watched tracers reach
  :func:`check_rate` or :func:`check_nonnegative` (and so :func:`check_strength`)."""
  uses = TracedUses()
  token = _WATCHED.set(uses)
  try:
    yield uses
  finally:
    _WATCHED.reset(token)


def watch_traced(tracer, label: str):
  """Watches ``tracer`` under the label ``label`` if :func:`watching_traced` is on."""
  uses = _WATCHED.get()
  if uses is not None:
    uses.watch(tracer, label)


def _note_traced(value, name: str, kind: str):
  uses = _WATCHED.get()
  if uses is not None and id(value) in uses.labels:
    uses.uses.setdefault(uses.labels[id(value)], set()).add((name, kind))


def valid_for(value, kind: str):
  """Elementwise: whether ``value`` passes the check of ``kind`` (traced or not)."""
  if kind == "rate":
    return (value >= 0) & (value <= 1)
  return jnp.isfinite(value) & (value >= 0)
