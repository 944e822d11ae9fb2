"""When the dropout family draws: a known rate of 0 or 1, or a known ``stddev`` of 0,
needs no randomness and no key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks


def trivial_rate(rate) -> float | None:
  """The rate as a float when it is a known 0 or 1 (no randomness needed), else None.

  >>> trivial_rate(1.0), trivial_rate(0.5)
  (1.0, None)
  """
  if isinstance(rate, float) and rate in (0.0, 1.0):
    return rate
  return None


def draws_at_rate(rate) -> bool:
  """Whether the dropout family draws random bits at ``rate``: not at a known 0 or 1,
  where the output is ``x`` or zeros and no key is needed.

  The rate is checked first, so a bad one raises its ``ValueError`` before a missing
  key could be reported. The Flax modules ask this before they ask for a key, at the
  rates where Flax's ``Dropout`` asks for one, so later modules get Flax's keys.

  >>> draws_at_rate(0.0), draws_at_rate(0.5)
  (False, True)
  """
  return trivial_rate(_checks.check_rate(rate)) is None


def draws_at_stddev(stddev) -> bool:
  """Whether :func:`jaxreg.gaussian_noise` draws random numbers at ``stddev``
  (checked): not at a known 0.

  >>> draws_at_stddev(0.0), draws_at_stddev(0.1)
  (False, True)
  """
  stddev = _checks.check_nonnegative(stddev, "stddev")
  if isinstance(stddev, jax.core.Tracer):
    return True
  # Any concrete zero, a Python, NumPy or 0-d JAX one alike, needs no key.
  return bool(np.any(np.asarray(stddev) != 0))


def without_mask(x, rate, deterministic: bool):
  """The output when no draw is needed: ``x`` when deterministic or for a known rate
  of 0, zeros for a known rate of 1; ``None`` otherwise (``rate`` checked).

  >>> import jax.numpy as jnp
  >>> without_mask(jnp.ones(2), 1.0, deterministic=False)
  Array([0., 0.], dtype=float32)
  """
  if deterministic or trivial_rate(rate) == 0.0:
    return x
  if trivial_rate(rate) == 1.0:
    return jnp.zeros_like(x)
  return None
