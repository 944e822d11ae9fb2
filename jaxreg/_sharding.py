"""Arrays on meshes with explicit axes, which ``jax.make_mesh`` makes by default.

On such a mesh the sharding of an array is part of its type: JAX refuses a product
whose contraction is sharded without being told how to shard the result, and a loop
whose carry comes out sharded differently from how it went in. Elsewhere (no mesh, or
``AxisType.Auto`` axes, where XLA's partitioner places everything) both helpers return
their input unchanged.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P


def _explicitly_sharded(x) -> bool:
  sharding = jax.typeof(x).sharding
  explicit = any(axis == AxisType.Explicit for axis in sharding.mesh.axis_types)
  return explicit and any(entry is not None for entry in sharding.spec)


def replicated(x):
  """``x`` gathered onto every device when it is sharded along explicit axes, for a
  computation that couples all of its entries (a Gram matrix, a solver's products)."""
  return jax.sharding.reshard(x, P()) if _explicitly_sharded(x) else x


def typed_as_returned(body, carry, x):
  """``carry`` resharded as ``body(carry, x)`` returns it: a scan's carry must keep its
  type, and running statistics made with ``jnp.full`` are replicated, while those the
  body computes from a batch-sharded input are sharded like it. Elsewhere the body is
  not traced a second time."""
  mesh = jax.sharding.get_abstract_mesh()
  if not any(axis == AxisType.Explicit for axis in mesh.axis_types):
    return carry
  returned = jax.eval_shape(lambda carry: body(carry, x)[0], carry)
  return jax.tree.map(
      lambda value, typed: value if typed.sharding is None
      else jax.sharding.reshard(value, typed.sharding), carry, returned)
