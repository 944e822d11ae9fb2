"""Folds for cross-validation: which held-out fold each row belongs to.

>>> kfold(5, 2)
Array([0, 0, 0, 1, 1], dtype=int32)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks

__all__ = ["kfold", "fold_ids"]


def _check_folds(n: int, folds) -> int:
  if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)):
    raise TypeError(f"folds must be an int or an array of fold ids, got {folds!r}")
  if folds < 2:
    raise ValueError(f"folds must be >= 2, got {folds}")
  if folds > n:
    raise ValueError(f"folds must be <= the number of rows ({n}), got {folds}")
  return int(folds)


def kfold(n: int, folds: int, *, key=None, stratify=None) -> jax.Array:
  """Fold ids ``(n,)`` in ``0 .. folds - 1``: which held-out fold each row belongs to.

  * no ``key``, no ``stratify``: contiguous blocks, the first ``n % folds`` of them one
    row longer, as scikit-learn's ``KFold(shuffle=False)``;
  * ``key``: the same block sizes, rows assigned at random;
  * ``stratify`` (labels ``(n,)``): rows are sorted by label (in random order within a
    label when a key is given) and dealt to the folds in turn, so each fold holds every
    label in proportion and fold sizes differ by at most one.

  >>> kfold(7, 3)
  Array([0, 0, 0, 1, 1, 2, 2], dtype=int32)
  >>> kfold(6, 2, stratify=jnp.array([0, 1, 0, 1, 0, 1]))
  Array([0, 1, 1, 0, 0, 1], dtype=int32)
  """
  folds = _check_folds(n, folds)
  if key is not None:
    # Typed before the jitted dealing: raw key data is read under the default PRNG
    # implementation when it is traced, and a compiled dealing would keep that reading.
    key = _checks.check_key(key)
    key = jax.random.wrap_key_data(key) if _checks.is_raw_key(key) else key
  if stratify is not None and jnp.shape(stratify) != (n,):
    raise ValueError(f"stratify must have shape ({n},), got {jnp.shape(stratify)}")
  if key is None and stratify is None:
    return jnp.asarray(_block_ids(n, folds))
  return _dealt_folds(key, stratify, n, folds)


def _block_ids(n: int, folds: int) -> np.ndarray:
  sizes = np.full(folds, n // folds)
  sizes[:n % folds] += 1
  return np.repeat(np.arange(folds, dtype=np.int32), sizes)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _dealt_folds(key, labels, n, folds):
  if labels is None:
    return jax.random.permutation(key, _block_ids(n, folds))
  order = jnp.arange(n) if key is None else jax.random.permutation(key, n)
  order = order[jnp.argsort(jnp.asarray(labels)[order], stable=True)]
  return jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32) % folds)


def fold_ids(folds, n: int) -> tuple[jax.Array, int]:
  """``(ids, k)``: ``folds`` as a count (contiguous blocks) or as ids, checked."""
  if not hasattr(folds, "shape"):
    folds = _check_folds(n, folds)
    return kfold(n, folds), folds
  if isinstance(folds, jax.core.Tracer):
    raise ValueError("fold ids must be concrete, not traced: the number of folds sets "
                     "the shapes of the program")
  ids = jnp.asarray(folds)
  if ids.shape != (n,) or not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"folds as fold ids must be integers of shape ({n},) (one per row), "
                     f"got {ids.dtype}{list(ids.shape)}")
  present = np.unique(np.asarray(ids))
  count = _check_folds(n, len(present))
  if not np.array_equal(present, np.arange(count)):
    raise ValueError(f"fold ids must be 0 .. k-1 with every fold present, got {present}")
  return ids, count
