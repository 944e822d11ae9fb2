"""``implementation="pallas"``: the flash-attention kernel against the dense path.

The kernel runs in Pallas's interpret mode here (CPU), the program it lowers to on a
GPU is checked by exporting it for ``cuda``:

* values and gradients wrt ``q``, ``k``, ``v`` equal the dense path's with the same
  key, to the dtype's tolerance, over a matrix of odd and unequal lengths, block
  sizes, causal and padded (fully masked rows included), grouped-query heads, the
  three floating dtypes, dropout on and off, broadcast or not;
* the kernel's keep bits are the dense path's mask bit for bit (read off the output
  with one-hot values), for 24- and 16-bit words and for a mask split into rows;
* the gradient's program holds no ``q × k`` array;
* ``jax.export`` for ``cuda`` lowers the forward and the gradient to the Triton
  kernel's custom call (its serialization check disabled, by name);
* what the kernel cannot serve raises a ``ValueError`` naming the argument.

Shapes are small (depth 8 or 16, lengths up to 40): interpret mode runs every tile
as XLA ops.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import attention
from jaxreg import masks
from jaxreg.masks import hashing

DROP_KEY = jax.random.key(7)
RATE = 0.3
# Programs run once on tiny arrays: LLVM's optimizations would cost more than they save.
jit_once = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
TRITON_CALL = "__gpu$xla.gpu.triton"  # The custom call Pallas's Triton lowering emits.
TOLERANCES = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2, jnp.float16: 4e-3}


def inputs(batch, q_length, k_length, heads=2, kv_heads=2, depth=8, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(q_length * 100 + k_length), 4)
  q = jax.random.normal(keys[0], (*batch, q_length, heads, depth))
  k, v = (jax.random.normal(key, (*batch, k_length, kv_heads, depth)) for key in keys[1:3])
  cotangent = jax.random.normal(keys[3], q.shape)
  return tuple(x.astype(dtype) for x in (q, k, v)), cotangent.astype(dtype)


def key_mask(batch, k_length, valid):
  """``(batch, 1, 1, k_length)``: keys at and after ``valid[b]`` are padding (0: a
  fully masked row, which attends uniformly to every key)."""
  return (jnp.arange(k_length) < jnp.asarray(valid)[:, None])[:, None, None, :]


def attend(implementation, q, k, v, **kwargs):
  return attention.dot_product_attention(q, k, v, implementation=implementation,
                                         dropout_rng=DROP_KEY, **kwargs)


def value_and_grads(implementation, qkv, cotangent, kwargs):
  out, vjp = jax.vjp(lambda *qkv: attend(implementation, *qkv, **kwargs), *qkv)
  return out, vjp(cotangent.astype(out.dtype))


# (batch, q_length, k_length, heads, kv_heads, dtype, kwargs): each a feature, or a
# combination, the dense path and the kernel could get differently.
CASES = {
    "q=k=1": ((1,), 1, 1, 2, 2, jnp.float32, dict(dropout_rate=RATE)),
    "q=k=7, causal": ((2,), 7, 7, 2, 2, jnp.float32,
                      dict(dropout_rate=RATE, is_causal=True, block_size=16)),
    "q=k=33, blocks of 16": ((1,), 33, 33, 2, 2, jnp.float32,
                             dict(dropout_rate=RATE, block_size=16)),
    "q=k=33, blocks of 32, causal, padded": (
        (2,), 33, 33, 2, 2, jnp.float32,
        dict(dropout_rate=RATE, block_size=32, is_causal=True,
             mask=key_mask(2, 33, [33, 20]))),
    "q=7, k=40, padded with a fully masked row, grouped-query": (
        (2,), 7, 40, 4, 2, jnp.float32,
        dict(dropout_rate=RATE, block_size=16, mask=key_mask(2, 40, [9, 0]))),
    "q=40, k=7, causal, grouped-query": ((1,), 40, 7, 4, 1, jnp.float32,
                                        dict(dropout_rate=RATE, block_size=16,
                                             is_causal=True)),
    "q=20, k=33, unbroadcast, blocks of 64": (
        (2,), 20, 33, 2, 2, jnp.float32,
        dict(dropout_rate=RATE, broadcast_dropout=False, block_size=64)),
    "bfloat16, causal, grouped-query": ((2,), 17, 17, 4, 2, jnp.bfloat16,
                                        dict(dropout_rate=RATE, block_size=16,
                                             is_causal=True)),
    "float16, padded, unbroadcast": ((2,), 9, 21, 2, 2, jnp.float16,
                                     dict(dropout_rate=RATE, broadcast_dropout=False,
                                          block_size=16, mask=key_mask(2, 21, [21, 4]))),
    "bfloat16 in, float32 softmax": ((1,), 12, 12, 2, 2, jnp.bfloat16,
                                     dict(dropout_rate=RATE,
                                          force_fp32_for_softmax=True)),
    "dropout off, causal, padded": ((2,), 33, 33, 2, 2, jnp.float32,
                                    dict(is_causal=True, block_size=16,
                                         mask=key_mask(2, 33, [30, 7]))),
    "deterministic, no batch dims": ((), 9, 9, 2, 2, jnp.float32,
                                     dict(dropout_rate=RATE, deterministic=True)),
    "two batch dims, unbroadcast": ((2, 2), 7, 9, 2, 1, jnp.float32,
                                    dict(dropout_rate=RATE, broadcast_dropout=False)),
}


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_equal_the_dense_path(case):
  batch, q_length, k_length, heads, kv_heads, dtype, kwargs = CASES[case]
  qkv, cotangent = inputs(batch, q_length, k_length, heads, kv_heads, dtype=dtype)
  (out, grads), (want, want_grads) = jit_once(lambda qkv, ct: [
      value_and_grads(implementation, qkv, ct, kwargs)
      for implementation in ("pallas", "dense")])(qkv, cotangent)
  assert out.dtype == want.dtype and out.shape == want.shape
  tol = TOLERANCES[dtype]
  np.testing.assert_allclose(np.float32(out), np.float32(want), rtol=tol, atol=tol)
  for name, got, expected in zip("qkv", grads, want_grads, strict=True):
    assert got.dtype == expected.dtype, name
    np.testing.assert_allclose(np.float32(got), np.float32(expected), rtol=tol,
                               atol=2 * tol, err_msg=f"d{name}")


def one_hot_values(q, k_length):
  *batch, _, heads, _ = q.shape
  return jnp.broadcast_to(jnp.eye(k_length)[:, None, :], (*batch, k_length, heads, k_length))


@pytest.mark.parametrize("dtype, broadcast, causal, block_size", [
    (jnp.float32, True, False, 16),
    (jnp.float32, False, True, 32),
    (jnp.bfloat16, False, False, 16),
])
def test_keep_bits_are_the_dense_paths_mask(dtype, broadcast, causal, block_size):
  # One-hot values make the output the dropped weights, out[b, q, h, k] = W·M/q: its
  # zeros are the dropped weights.
  (q, k, _), _ = inputs((2,), 19, 37, dtype=dtype)
  v = one_hot_values(q, 37).astype(dtype)
  out = jit_once(functools.partial(attend, "pallas", dropout_rate=0.5, is_causal=causal,
                                   broadcast_dropout=broadcast, block_size=block_size))(
                                       q, k, v)
  weights_shape = (2, 2, 19, 37)
  want = masks.keep_mask(DROP_KEY, weights_shape, 0.5, dtype=dtype,
                         broadcast_dims=(0, 1) if broadcast else ()).mask
  kept = jnp.moveaxis(out != 0, 2, 1)  # (batch, heads, q, k)
  allowed = jnp.tril(jnp.ones((19, 37), bool)) if causal else True
  np.testing.assert_array_equal(kept, jnp.broadcast_to(want & allowed, weights_shape))


def test_keep_bits_of_a_mask_split_into_rows(monkeypatch):
  # A mask of 2^32 elements or more is hashed by rows (jaxreg.masks.hashing): as if
  # 2^32 were 2^10, the (2, 2, 19, 37) weights split into rows of a head each.
  monkeypatch.setattr(hashing, "_HASHABLE_SIZE", 2**10)
  assert hashing._row_split((2, 2, 19, 37)) == 2
  (q, k, _), _ = inputs((2,), 19, 37)
  v = one_hot_values(q, 37)
  out = jax.jit(functools.partial(attend, "pallas", dropout_rate=0.5,
                                  broadcast_dropout=False))(q, k, v)
  want = masks.keep_mask(DROP_KEY, (2, 2, 19, 37), 0.5).mask
  np.testing.assert_array_equal(jnp.moveaxis(out != 0, 2, 1), want)


def _shapes(jaxpr):
  """Every intermediate's shape in ``jaxpr`` and the jaxprs inside it."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield getattr(var.aval, "shape", ())
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)
      for sub in (inner if isinstance(inner, (tuple, list)) else (inner,)):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from _shapes(sub)


def test_the_gradient_holds_no_q_by_k_array():
  length = 64  # Four blocks of 16 along queries and keys.
  (q, k, v), _ = inputs((1,), length, length, depth=16)

  def square_arrays(implementation):
    loss = lambda q, k, v: jnp.sum(attend(implementation, q, k, v, dropout_rate=RATE,
                                          block_size=16, broadcast_dropout=False))
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v).jaxpr
    return [s for s in _shapes(jaxpr) if sum(n >= length for n in s) >= 2]

  assert square_arrays("dense")  # What the check would see.
  assert not square_arrays("pallas")


def test_exports_the_triton_kernel_for_cuda():
  (q, k, v), _ = inputs((2,), 24, 40, heads=4, kv_heads=2, depth=16, dtype=jnp.bfloat16)
  mask = key_mask(2, 40, [40, 17])

  def forward(q, k, v):
    return attend("pallas", q, k, v, dropout_rate=0.1, is_causal=True, mask=mask,
                  block_size=16)

  gradient = jax.grad(lambda *qkv: jnp.sum(forward(*qkv).astype(jnp.float32)),
                      argnums=(0, 1, 2))
  checks = [jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)]
  for fn, kernels in ((forward, 1), (gradient, 3)):
    exported = jax.export.export(jax.jit(fn), platforms=("cuda",),
                                 disabled_checks=checks)(q, k, v)
    assert exported.platforms == ("cuda",)
    module = exported.mlir_module()
    assert module.count(f"custom_call @{TRITON_CALL}(") == kernels, fn


@pytest.mark.parametrize("kwargs, match", [
    (dict(bias=jnp.zeros((4, 4))), "bias is not supported by implementation='pallas'"),
    (dict(mask=jnp.tril(jnp.ones((4, 4), bool))), "mask of shape .* varies along queries"),
    (dict(exact=True, dropout_rate=0.1), "exact=True .*implementation='blockwise' or 'dense'"),
    (dict(qk_attn_weights_einsum=jnp.einsum, attn_weights_value_einsum=jnp.einsum),
     "qk_attn_weights_einsum"),
    (dict(block_size=24), "block_size must be a power of 2"),
    (dict(module=object()), "module= .* the pallas path never forms"),
])
def test_what_the_kernel_cannot_serve_is_refused(kwargs, match):
  (q, k, v), _ = inputs((1,), 4, 4)
  with pytest.raises(ValueError, match=match):
    attend("pallas", q, k, v, **kwargs)
