"""Masks do not depend on how ``x`` is sharded, and drawing them moves no data; a shard
inside ``shard_map`` draws its own block of the whole mask.

Runs in a subprocess with 8 emulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), since the device count is
fixed when JAX starts.
"""

import subprocess
import sys
import textwrap

import cpu_devices

_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import jaxreg as jr
    from jaxreg import masks

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("d",))
    mesh2 = jax.make_mesh((2, 4), ("a", "b"))
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(0), (64, 512), jnp.float32)
    variants = {
        "dropout": lambda k, x: jr.dropout(k, x, 0.3),
        "dropout_broadcast": lambda k, x: jr.dropout(k, x, 0.3, broadcast_dims=(0,)),
        "drop_path": lambda k, x: jr.drop_path(k, x, 0.3),
        "alpha_dropout": lambda k, x: jr.alpha_dropout(k, x, 0.3),
        "dropout_grad": jax.grad(lambda x, k: jnp.sum(jr.dropout(k, x, 0.3) ** 2)),
        "dropout_grad_packed": jax.grad(
            lambda x, k: jnp.sum(jr.dropout(k, x, 0.3, residual="packed") ** 2)),
        "dropout_bfloat16": lambda k, x: jr.dropout(k, x.astype(jnp.bfloat16), 0.3),
        "dropout_float16": lambda k, x: jr.dropout(k, x.astype(jnp.float16), 0.3),
        "dropout_grad_bfloat16": jax.grad(lambda x, k: jnp.sum(
            jr.dropout(k, x.astype(jnp.bfloat16), 0.3).astype(jnp.float32) ** 2)),
    }
    shardings = {
        "batch": NamedSharding(mesh, P("d", None)),
        "feature": NamedSharding(mesh, P(None, "d")),
        "both": NamedSharding(mesh2, P("a", "b")),
    }
    for name, fn in variants.items():
        if name.startswith("dropout_grad"):
            f = jax.jit(lambda k, x, fn=fn: fn(x, k))
        else:
            f = jax.jit(fn)
        reference = np.asarray(f(key, x))
        for sname, sharding in shardings.items():
            xs = jax.device_put(x, sharding)
            out = f(key, xs)
            assert np.array_equal(np.asarray(out), reference), (name, sname)
            hlo = f.lower(key, xs).compile().as_text()
            for collective in ("all-gather", "all-to-all", "collective-permute", "all-reduce"):
                assert collective not in hlo, (name, sname, collective)
            print(name, sname, "ok")

    # Each shard draws its block of the whole mask alone, at a start from its axis index.
    def shard_block(k):
        i, j = jax.lax.axis_index("a"), jax.lax.axis_index("b")
        start = (i * 32, j * 128)
        return masks.keep_mask(k, (64, 512), 0.3, start=start, block_shape=(32, 128)).mask
    blocks = jax.jit(jax.shard_map(shard_block, mesh=mesh2, in_specs=P(),
                                   out_specs=P("a", "b")))
    whole = masks.keep_mask(key, (64, 512), 0.3).mask
    assert np.array_equal(np.asarray(blocks(key)), np.asarray(whole)), "shard_map blocks"
    hlo = blocks.lower(key).compile().as_text()
    assert not any(c in hlo for c in ("all-gather", "all-to-all", "collective-permute",
                                      "all-reduce")), "shard_map blocks communicate"
    print("shard_map blocks ok")
    print("ALL OK")
""")


def test_masks_are_identical_under_every_sharding_and_need_no_collective():
  env = cpu_devices.environment(8)
  result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "ALL OK" in result.stdout
