"""The conformance table: every public name of jaxreg, and how to run it.

``tests/test_conformance.py`` runs each :class:`Op` across dtypes (x64 included),
transformations, meshes, edge shapes and key kinds, and lowers it for accelerators; a
public name missing from :data:`OPS` or :data:`COVERED` fails there. This module only
says what each name is and how to call it, as ``run(key, x, hyper)``:

* ``key``: a PRNG key (``None`` for an op that takes none);
* ``x``: the array whose dtype and shape vary (the input, the parameters, the data);
* ``hyper``: the op's scalar knob (a rate, a strength, a threshold, a learning rate),
  a Python float or a traced scalar (vmapped, scheduled); ``None`` if it has none.

``run`` returns a pytree of arrays. A name with nothing to run (a state class, a
constant) is in :data:`COVERED` with a check that exercises it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg as jr
from jaxreg import attention
from jaxreg import cv
from jaxreg import linen as jl
from jaxreg import nnx as jn
from jaxreg import prox
from jaxreg import transforms

# The dimensions a test runs an op along; Op.skip maps one to the reason it does not apply.
DIMENSIONS = ("dtypes", "x64", "jit", "vmap_keys", "grad", "jvp", "checkpoint", "scan",
              "mesh", "shapes", "keys", "lowering")


def same(dtype):
  return dtype


def wide(dtype):
  """At least float32: penalties are accumulated, paths solved, in float32 or wider."""
  return jnp.promote_types(dtype, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Raises:
  """An input shape the op must refuse, with the error (and its message) it owes."""
  shape: tuple
  error: type = ValueError
  match: str = ""


@dataclasses.dataclass(frozen=True)
class Op:
  """One public operation (or one variant of it) and how to run it."""
  name: str  # the public name, as "module.attribute"; a variant adds "[...]"
  run: Callable[[Any, jax.Array, Any], Any]
  shape: tuple = (4, 8)  # batch along axis 0; parameters sharded along param_axis
  param_axis: int = -1
  hyper: tuple | None = (0.5, 0.25)  # two values; equal in float32 and float64
  keyed: bool = True
  # The dtype of each output leaf for an input of dtype d: a function d -> dtype, or a
  # pytree of them with the structure of the output.
  out_dtype: Any = same
  # For a 16-bit x: the output computed in float32 from the same draws and rounded
  # once, ``reference(key, x, hyper)``; None where the op computes in x's dtype.
  reference: Callable | None = None
  # Shapes beyond `shape`: name -> a shape it takes, the Raises it owes one, or a str:
  # why the kind of shape does not apply.
  shapes: dict = dataclasses.field(default_factory=lambda: {
      "odd": (3, 5), "empty": (0, 5), "scalar": ()})
  skip: dict = dataclasses.field(default_factory=dict)  # dimension -> reason
  sharded_rtol: float = 0.0  # 0: bit for bit on every mesh
  grad_rtol: float = 1e-5  # grad·v against jvp(v)
  also: tuple = ()  # other public names that run exercises, each used in it

  @property
  def names(self) -> set[str]:
    """The public names this row covers."""
    return {self.name.split("[")[0], *self.also}


# Inputs ----------------------------------------------------------------------------------

def floating_leaves(tree):
  return [leaf for leaf in jax.tree.leaves(tree)
          if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]


def total(tree):
  """A scalar of every floating leaf of ``tree``, in float32 or wider."""
  return sum((jnp.sum(leaf.astype(wide(leaf.dtype))) for leaf in floating_leaves(tree)),
             start=jnp.zeros(()))


def _key_or(key, seed=0):
  return jax.random.key(seed) if key is None else key


# The dropout family, on arrays ---------------------------------------------------------

def _mask_reference(broadcast_dims=()):
  """Inverted dropout at 16 bits from its public parts: the mask of ``x``'s dtype and
  ``x·(1/q)`` in float32, rounded once."""
  def reference(key, x, rate):
    keep = jr.dropout_mask(key, x.shape, rate, broadcast_dims=broadcast_dims,
                           dtype=x.dtype)
    scale = np.float32(1) / np.float32(jr.masks.keep_probability(rate, x.dtype))
    return jnp.where(keep, x.astype(jnp.float32) * scale, 0).astype(x.dtype)
  return reference


def _at_float32(fn):
  """``fn`` on ``x`` in float32, rounded once: the reference of an op whose draws do not
  depend on ``x``'s dtype."""
  return lambda key, x, hyper: fn(key, x.astype(jnp.float32), hyper).astype(x.dtype)


def _alpha_reference(key, x, rate):
  keep = jr.dropout_mask(key, x.shape, rate, dtype=x.dtype)
  q = np.float32(jr.masks.keep_probability(rate, x.dtype))
  alpha = np.float32(-1.0507009873554805 * 1.6732632423543772)
  a = np.float32(1) / np.sqrt(q + alpha**2 * q * (1 - q))
  b = -a * alpha * (1 - q)
  return (a * jnp.where(keep, x.astype(jnp.float32), alpha) + b).astype(x.dtype)


def _classic_reference(key, x, rate):
  keep = jr.dropout_mask(key, x.shape, rate, dtype=x.dtype)
  return jnp.where(keep, x, 0).astype(x.dtype)


_DROPBLOCK_SHAPES = {"odd": (3, 5, 5, 3), "empty": (0, 4, 4, 3),
                     "scalar": Raises((), match="dropblock needs a channels_last array")}
_NEEDS_BATCH_AXIS = {"odd": (3, 5), "empty": (0, 5),
                     "scalar": Raises((), match="drop_path needs an array with a batch axis")}

_DROPOUT_FAMILY = [
    Op("jaxreg.dropout", lambda k, x, r: jr.dropout(k, x, r), reference=_mask_reference()),
    Op("jaxreg.dropout[exact]", lambda k, x, r: jr.dropout(k, x, r, exact=True)),
    Op("jaxreg.dropout[packed]", lambda k, x, r: jr.dropout(k, x, r, residual="packed"),
       reference=_mask_reference()),
    Op("jaxreg.dropout[classic]", lambda k, x, r: jr.dropout(k, x, r, mode="classic"),
       reference=_classic_reference),
    Op("jaxreg.dropout[classic, evaluation]",
       lambda k, x, r: jr.dropout(None, x, r, mode="classic", deterministic=True),
       keyed=False, reference=lambda k, x, r: (x.astype(jnp.float32) * (1 - r)).astype(x.dtype)),
    Op("jaxreg.dropout[broadcast_dims]",
       lambda k, x, r: jr.dropout(k, x, r, broadcast_dims=(0,)),
       reference=_mask_reference((0,)),
       shapes={"odd": (3, 5), "empty": (0, 5),
               "scalar": Raises((), match="broadcast_dims entry 0 is out of range")}),
    Op("jaxreg.dropout_mask", lambda k, x, r: jr.dropout_mask(k, x.shape, r, dtype=x.dtype),
       out_dtype=lambda d: jnp.dtype(bool),
       skip={"grad": "a boolean mask of a shape: nothing to differentiate",
             "jvp": "a boolean mask of a shape: nothing to differentiate",
             "checkpoint": "a boolean mask of a shape: nothing to differentiate"}),
    Op("jaxreg.alpha_dropout", lambda k, x, r: jr.alpha_dropout(k, x, r),
       reference=_alpha_reference),
    Op("jaxreg.gaussian_dropout", lambda k, x, r: jr.gaussian_dropout(k, x, r),
       reference=_at_float32(jr.gaussian_dropout)),
    Op("jaxreg.gaussian_noise", lambda k, x, s: jr.gaussian_noise(k, x, s),
       reference=_at_float32(jr.gaussian_noise)),
    Op("jaxreg.drop_path", lambda k, x, r: jr.drop_path(k, x, r),
       reference=_mask_reference((1,)), shapes=_NEEDS_BATCH_AXIS),
    Op("jaxreg.drop_connect", lambda k, x, r: jr.drop_connect(k, x, r),
       reference=_mask_reference()),
    Op("jaxreg.dropblock", lambda k, x, r: jr.dropblock(k, x, r, 3), shape=(4, 6, 6, 8),
       reference=_at_float32(lambda k, x, r: jr.dropblock(k, x, r, 3)),
       shapes=_DROPBLOCK_SHAPES, sharded_rtol=1e-6),
    Op("jaxreg.mc_predict",
       lambda k, x, r: jr.mc_predict(lambda kk, xx: jr.dropout(kk, xx, r), k, x,
                                     num_samples=4),
       sharded_rtol=1e-6),
]


# Attention -----------------------------------------------------------------------------

def _attention(implementation, group=1, **kwargs):
  def run(key, x, rate):
    kv = x
    if group > 1 and x.ndim >= 2:  # Grouped-query heads: each key head one group's mean.
      kv = x.reshape(*x.shape[:-2], x.shape[-2] // group, group, x.shape[-1]).mean(-2)
    return attention.dot_product_attention(
        x, kv, kv, dropout_rng=key, dropout_rate=rate, implementation=implementation,
        block_size=4, **kwargs)
  return run


_ATTENTION_SHAPES = {"odd": (3, 5, 2, 3), "empty": (0, 4, 2, 2),
                     "scalar": Raises((), match="at least 3")}
# The kernel's custom_vjp has no forward mode, and its program is a Triton custom call.
_ATTENTION_SKIPS = {"pallas": {
    "jvp": "a custom_vjp kernel (FlashAttention's backward): reverse mode only, as "
           "JAX's own Pallas attention",
    "lowering": "a Triton kernel, lowered to its custom call for GPUs only: "
                "tests/test_pallas_attention.py exports it for cuda with that call's "
                "check disabled by name"}}
_ATTENTION = [
    # Grouped-query: 8 query heads, 4 key/value heads, each sharded over 4 devices.
    Op(f"jaxreg.attention.dot_product_attention[{implementation}{variant}]",
       _attention(implementation, **kwargs), shape=shape, param_axis=-2,
       shapes=_ATTENTION_SHAPES, skip=_ATTENTION_SKIPS.get(implementation, {}),
       sharded_rtol=1e-6, grad_rtol=1e-4)
    for implementation in attention.IMPLEMENTATIONS
    for variant, kwargs, shape in [
        ("", {}, (4, 8, 4, 4)),
        (", grouped-query, causal", {"group": 2, "is_causal": True}, (4, 8, 8, 2))]
] + [
    Op("jaxreg.attention.dot_product_attention[dense, exact]",
       _attention("dense", exact=True), shape=(4, 8, 4, 4), param_axis=-2,
       shapes=_ATTENTION_SHAPES, sharded_rtol=1e-6, grad_rtol=1e-4),
]


# Regularizers and constraints: value and prox on {"w": x} -------------------------------

def _regularizer(make, step=0.5):
  def run(key, x, strength):
    del key
    reg = make(strength)
    params = {"w": x}
    return reg(params), reg.prox(params, step)["w"]
  return run


_VALUE_AND_PROX = (wide, same)
_MATRIX_ONLY = {"odd": (3, 5), "empty": (0, 5),
                "scalar": Raises((), match="out of (range|bounds)")}


def _regularizer_op(name, make, **kwargs):
  kwargs = {"keyed": False, "out_dtype": _VALUE_AND_PROX,
            "reference": _at_float32_prox(make), "sharded_rtol": 1e-6, **kwargs}
  return Op(name, _regularizer(make), **kwargs)


def _at_float32_prox(make):
  """The prox computed on float32 and rounded once (a penalty's value is float32 anyway)."""
  def reference(key, x, strength):
    value, proxed = _regularizer(make)(key, x.astype(jnp.float32), strength)
    return value, proxed.astype(x.dtype)
  return reference


_REGULARIZERS = [
    _regularizer_op("jaxreg.L1", jr.L1),
    _regularizer_op("jaxreg.L2", jr.L2),
    _regularizer_op("jaxreg.ElasticNet", lambda s: jr.ElasticNet(s, s / 2)),
    _regularizer_op("jaxreg.GroupLasso", lambda s: jr.GroupLasso(s, axis=0),
                    shapes=_MATRIX_ONLY),
    _regularizer_op("jaxreg.Sum", lambda s: jr.Sum([jr.L1(s), jr.L2(s)])),
    _regularizer_op("jaxreg.Sum[L1 + NonNeg]", lambda s: jr.L1(s) + jr.NonNeg()),
    # c * reg: the strengths scaled (L1), every term scaled (Sum), or a Scaled wrapper.
    _regularizer_op("jaxreg.L1[scaled]", lambda s: 0.5 * jr.L1(s)),
    _regularizer_op("jaxreg.Sum[L1 + NonNeg, divided]", lambda s: (jr.L1(s) + jr.NonNeg()) / 4),
    _regularizer_op("jaxreg.regularizers.Scaled", lambda s: jr.regularizers.Scaled(s, jr.L1(0.5))),
    _regularizer_op("jaxreg.l1", jr.l1),
    _regularizer_op("jaxreg.l2", jr.l2),
    _regularizer_op("jaxreg.l1_l2", lambda s: jr.l1_l2(l1=s, l2=s)),
    Op("jaxreg.Orthogonal", lambda k, x, s: jr.Orthogonal(s)({"w": x}), keyed=False,
       out_dtype=wide, shapes=_MATRIX_ONLY | {"scalar": Raises((), match="needs matrices")},
       sharded_rtol=1e-6),
    _regularizer_op("jaxreg.MaxNorm", lambda s: jr.MaxNorm(s, epsilon=0.0),
                    shapes=_MATRIX_ONLY),
    _regularizer_op("jaxreg.MinMaxNorm", lambda s: jr.MinMaxNorm(s / 2, s, epsilon=0.0),
                    shapes=_MATRIX_ONLY),
    _regularizer_op("jaxreg.UnitNorm", lambda s: jr.UnitNorm(epsilon=0.0), hyper=None,
                    shapes=_MATRIX_ONLY),
    _regularizer_op("jaxreg.NonNeg", lambda s: jr.NonNeg(), hyper=None),
]


# Proximal maps on arrays ----------------------------------------------------------------

def _prox_op(name, fn, **kwargs):
  return Op(f"jaxreg.prox.{name}", lambda k, x, t: fn(x, t), keyed=False,
            reference=lambda k, x, t: fn(x.astype(jnp.float32), t).astype(x.dtype),
            **kwargs)


_PROX = [
    _prox_op("soft_threshold", prox.soft_threshold),
    _prox_op("hard_threshold", prox.hard_threshold),
    _prox_op("ridge", prox.ridge),
    _prox_op("elastic_net", lambda x, t: prox.elastic_net(x, t, t / 2)),
    _prox_op("group_norm", lambda x, t: prox.group_norm(x, axis=0), hyper=None,
             out_dtype=same, shapes=_MATRIX_ONLY, sharded_rtol=1e-6),
    _prox_op("group_soft_threshold", lambda x, t: prox.group_soft_threshold(x, t, 0),
             shapes=_MATRIX_ONLY, sharded_rtol=1e-6),
    _prox_op("nonneg_soft_threshold", prox.nonneg_soft_threshold),
    _prox_op("nonneg_ridge", prox.nonneg_ridge),
    _prox_op("non_negative", lambda x, t: prox.non_negative(x), hyper=None),
    _prox_op("max_norm", lambda x, t: prox.max_norm(x, t, epsilon=0.0), shapes=_MATRIX_ONLY,
             sharded_rtol=1e-6),
    _prox_op("min_max_norm", lambda x, t: prox.min_max_norm(x, t / 2, t, epsilon=0.0),
             shapes=_MATRIX_ONLY, sharded_rtol=1e-6),
    _prox_op("unit_norm", lambda x, t: prox.unit_norm(x, epsilon=0.0), hyper=None,
             shapes=_MATRIX_ONLY, sharded_rtol=1e-6),
]


# Optax transforms: two steps on {"w": x} -------------------------------------------------

def _transform(make, steps=2):
  """Two updates of ``make(lr)`` on params ``{"w": x}`` with gradients ``cos(x)``."""
  def run(key, x, learning_rate):
    del key
    tx = make(learning_rate)
    params = {"w": x}
    # As a state that comes in from outside: XLA must not fold the initial count into
    # constants, computed in another precision than the step computes them.
    state = jax.lax.optimization_barrier(tx.init(params))
    for _ in range(steps):
      grads = jax.tree.map(jnp.cos, params)
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    return params["w"]
  return run


def _transform_op(name, make):
  return Op(f"jaxreg.transforms.{name}", _transform(make), keyed=False)


_L1 = jr.L1(0.1)
_TRANSFORMS = [
    _transform_op("add_gradient",
                  lambda lr: optax.chain(transforms.add_gradient(_L1), optax.sgd(lr))),
    _transform_op("proximal",
                  lambda lr: optax.chain(optax.sgd(lr), transforms.proximal(lr, _L1))),
    _transform_op("prox_sgd", lambda lr: transforms.prox_sgd(lr, _L1, momentum=0.9)),
    _transform_op("prox_sgd[accelerated]",
                  lambda lr: transforms.prox_sgd(lr, _L1, accelerated=True)),
    _transform_op("prox_adam", lambda lr: transforms.prox_adam(lr, _L1)),
    _transform_op("prox_adagrad", lambda lr: transforms.prox_adagrad(lr, _L1)),
    _transform_op("ftrl", lambda lr: transforms.ftrl(lr, l1=0.1)),
]


# Flax modules ----------------------------------------------------------------------------

def _linen(make):
  def run(key, x, hyper):
    return make(hyper).apply({}, x, rngs={"dropout": _key_or(key)})
  return run


def _nnx(make):
  def run(key, x, hyper):
    return make(hyper)(x, rngs=_key_or(key))
  return run


_MODULES = {  # name -> (linen module, nnx module, shape, shapes)
    "Dropout": (lambda r: jl.Dropout(r, deterministic=False),
                lambda r: jn.Dropout(r, deterministic=False), (4, 8), None),
    "AlphaDropout": (lambda r: jl.AlphaDropout(r, deterministic=False),
                     lambda r: jn.AlphaDropout(r, deterministic=False), (4, 8), None),
    "GaussianDropout": (lambda r: jl.GaussianDropout(r, deterministic=False),
                        lambda r: jn.GaussianDropout(r, deterministic=False), (4, 8), None),
    "GaussianNoise": (lambda s: jl.GaussianNoise(s, deterministic=False),
                      lambda s: jn.GaussianNoise(s, deterministic=False), (4, 8), None),
    "DropPath": (lambda r: jl.DropPath(r, deterministic=False),
                 lambda r: jn.DropPath(r, deterministic=False), (4, 8), _NEEDS_BATCH_AXIS),
    "DropBlock": (lambda r: jl.DropBlock(r, 3, deterministic=False),
                  lambda r: jn.DropBlock(r, 3, deterministic=False), (4, 6, 6, 8),
                  _DROPBLOCK_SHAPES),
}


def _module_ops():
  ops = []
  for name, (linen_make, nnx_make, shape, shapes) in _MODULES.items():
    for prefix, run in (("linen", _linen(linen_make)), ("nnx", _nnx(nnx_make))):
      kwargs = {"shape": shape}
      if shapes is not None:
        kwargs["shapes"] = shapes
      if name == "DropBlock":
        kwargs["sharded_rtol"] = 1e-6
      ops.append(Op(f"jaxreg.{prefix}.{name}", run, **kwargs))
  return ops


class _ActivityModel(nn.Module):
  strength: Any

  @nn.compact
  def __call__(self, x):
    return jl.ActivityRegularization(l1=self.strength, l2=self.strength)(nn.tanh(x))


def _linen_activity(key, x, strength):
  del key
  y, mutated = _ActivityModel(strength).apply({}, x, mutable=jl.LOSSES)
  return y, jl.activity_loss(mutated)


def _nnx_activity(key, x, strength):
  del key
  layer = jn.ActivityRegularization(l1=strength, l2=strength)
  y = layer(jnp.tanh(x))
  return y, jn.activity_loss(layer)


def _linen_declared(key, x, strength):
  del key
  layer = nn.Dense(x.shape[1], kernel_init=jl.with_regularizer(lambda *_: x, jr.L2(strength)))
  variables = layer.init(jax.random.key(0), jnp.ones((1, x.shape[0])))
  reg = jl.regularizer(variables)
  return jl.param_loss(variables), reg.prox(variables, 0.5)["params"]["kernel"].value


class _Declared(nnx.Module):

  def __init__(self, x, reg):
    self.w = nnx.Param(x, regularizer=reg)


def _nnx_declared(key, x, strength):
  del key
  model = _Declared(x, jr.L2(strength))
  return jn.param_loss(model), jn.regularizer(model).prox(nnx.state(model), 0.5)["w"][...]


_FLAX_PENALTIES = [
    Op("jaxreg.linen.ActivityRegularization", _linen_activity, keyed=False,
       out_dtype=(same, wide), sharded_rtol=1e-6, also=("jaxreg.linen.activity_loss",)),
    Op("jaxreg.nnx.ActivityRegularization", _nnx_activity, keyed=False,
       out_dtype=(same, wide), sharded_rtol=1e-6, also=("jaxreg.nnx.activity_loss",)),
    # with_regularizer boxes the kernel in a Regularized; regularizer and param_loss read it.
    Op("jaxreg.linen.with_regularizer", _linen_declared, keyed=False, out_dtype=(wide, same),
       shapes={"odd": (3, 5), "empty": (0, 5), "scalar": "a Dense kernel has two axes"},
       sharded_rtol=1e-6, also=("jaxreg.linen.Regularized", "jaxreg.linen.regularizer",
                                "jaxreg.linen.param_loss")),
    Op("jaxreg.nnx.regularizer", _nnx_declared, keyed=False, out_dtype=(wide, same),
       sharded_rtol=1e-6, also=("jaxreg.nnx.param_loss",)),
]


# Cross-validation and paths --------------------------------------------------------------

def _ridge_fit(strength, key, data, weights):
  x, y = data
  x = jr.dropout(key, x, 0.1)
  return jnp.sum(weights * x * y) / (jnp.sum(weights * x**2) + strength)


def _squared_error(a, data, weights):
  x, y = data
  return jnp.sum(weights * (a * x - y) ** 2) / jnp.sum(weights)


def _cross_validate(key, x, strength):
  """Rows of ``x`` as data (their first column the feature, the second the target)."""
  data = (x[:, 0], x[:, -1] + x[:, 0])
  result = cv.cross_validate(_ridge_fit, _squared_error, data,
                             jnp.stack([strength, 2 * strength]), folds=2,
                             key=_key_or(key))
  return result.per_fold, result.mean


def _target(X):
  X = jnp.atleast_2d(X)  # A scalar X is the op's to refuse.
  return jnp.sum(X * jnp.linspace(1, -1, X.shape[-1], dtype=X.dtype), axis=-1) + 1


def _lasso_path(key, X, alpha):
  del key
  y = _target(X)
  return cv.lasso_path(X, y, alphas=jnp.stack([alpha, alpha / 4]), max_iter=200)


def _lasso_cv(key, X, alpha):
  del key
  result = cv.lasso_cv(X, _target(X), alphas=jnp.stack([alpha, alpha / 4]), folds=2,
                       max_iter=200)
  return result.mse_path, result.coef, result.intercept


_NO_REVERSE = "a while loop until the duality gap is met: no reverse-mode derivative"
_PATH_SHAPES = {"odd": (5, 3), "empty": Raises((0, 3), match="X has no rows"),
                "scalar": Raises((), match="X must be 2-D")}
_CV = [
    # 16 rows: two keys dealing the same 2 folds is a 1-in-12,870 event.
    Op("jaxreg.cv.kfold", lambda k, x, h: cv.kfold(x.shape[0], 2, key=_key_or(k)),
       shape=(16, 2), hyper=None, out_dtype=lambda d: jnp.dtype(jnp.int32),
       shapes={"odd": (3, 5), "empty": Raises((0, 5), match="folds must be <= the number "
                                                            "of rows \\(0\\)"),
               "scalar": "kfold takes a number of rows"},
       skip={d: "fold ids depend on the number of rows only" for d in
             ("dtypes", "x64", "grad", "jvp", "checkpoint", "mesh", "lowering")}),
    Op("jaxreg.cv.cross_validate", _cross_validate, shape=(8, 2), param_axis=0,
       out_dtype=lambda d: jnp.dtype(jnp.result_type(float)),
       shapes={"odd": (5, 3), "empty": Raises((0, 2), match="folds must be <= the number "
                                                            "of rows \\(0\\)"),
               "scalar": "data are rows: the harness takes two columns of x"},
       sharded_rtol=1e-5, grad_rtol=1e-3),
    Op("jaxreg.cv.lasso_path", _lasso_path, shape=(8, 4), hyper=(0.05, 0.02), keyed=False,
       out_dtype=wide, shapes=_PATH_SHAPES,
       skip={"grad": _NO_REVERSE, "checkpoint": _NO_REVERSE},
       sharded_rtol=1e-4, grad_rtol=1e-3),
    Op("jaxreg.cv.lasso_cv", _lasso_cv, shape=(8, 4), hyper=(0.05, 0.02), keyed=False,
       out_dtype=wide, shapes=_PATH_SHAPES,
       skip={"grad": _NO_REVERSE, "checkpoint": _NO_REVERSE},
       sharded_rtol=1e-4, grad_rtol=1e-3),
    Op("jaxreg.cv.alpha_max", lambda k, X, h: cv.alpha_max(X, _target(X)),
       shape=(8, 4), hyper=None, keyed=False, out_dtype=wide, shapes=_PATH_SHAPES,
       sharded_rtol=1e-6),
]

OPS: dict[str, Op] = {op.name: op for op in (
    _DROPOUT_FAMILY + _ATTENTION + _REGULARIZERS + _PROX + _TRANSFORMS + _module_ops()
    + _FLAX_PENALTIES + _CV)}


# Names with nothing to run on their own: what checks them ---------------------------------

_STATES = {  # each state class and a transform whose state it is
    "ProximalState": lambda: transforms.proximal(0.1, _L1),
    "ProxSGDState": lambda: transforms.prox_sgd(0.1, _L1),
    "FISTAState": lambda: transforms.prox_sgd(0.1, _L1, accelerated=True),
    "ProxAdamState": lambda: transforms.prox_adam(0.1, _L1),
    "ProxAdagradState": lambda: transforms.prox_adagrad(0.1, _L1),
    "FtrlState": lambda: transforms.ftrl(0.1),
}


def _check_state_types():
  params = {"w": jnp.ones(3)}
  for name, make in _STATES.items():
    tx = make()
    state = tx.init(params)
    assert type(state) is getattr(transforms, name), (name, type(state))
    _, new_state = jax.jit(tx.update)(params, state, params)
    assert type(new_state) is type(state), name


def _check_no_params_message():
  params = {"w": jnp.ones(3)}
  for make in (*_STATES.values(), lambda: transforms.add_gradient(_L1)):
    tx = make()
    try:
      tx.update(params, tx.init(params))
    except ValueError as error:
      assert str(error) == transforms.NO_PARAMS_MSG
    else:
      raise AssertionError(f"{tx} ran without params")


def _check_base_classes():
  for reg in (jr.L1(0.1), jr.L2(0.1), jr.ElasticNet(0.1, 0.1), jr.GroupLasso(0.1, axis=0),
              jr.L1(0.1) + jr.L2(0.1), jr.Orthogonal(0.1), jr.MaxNorm(1.0), jr.NonNeg()):
    assert isinstance(reg, jr.Regularizer), reg
  for reg in (jr.MaxNorm(1.0), jr.MinMaxNorm(), jr.UnitNorm(), jr.NonNeg()):
    assert isinstance(reg, jr.Constraint) and float(reg({"w": -jnp.ones((2, 2))})) == 0.0
  assert not isinstance(jr.L1(0.1), jr.Constraint)


def _check_drop_path_rates():
  rates = jr.drop_path_rates(5, 0.2)
  assert all(isinstance(rate, float) for rate in rates)
  np.testing.assert_allclose(rates, np.linspace(0, 0.2, 5))
  assert jr.drop_path_rates(1, 0.3) == [0.0]


def _check_cv_result():
  result = cv.cross_validate(_ridge_fit, _squared_error, (jnp.linspace(-1, 1, 8),) * 2,
                             jnp.array([0.1, 1.0]), folds=2, key=jax.random.key(0))
  assert isinstance(result, cv.CVResult)
  leaves = jax.tree.leaves(jax.jit(lambda r: r)(result))  # a pytree: it crosses jit
  assert len(leaves) == len(jax.tree.leaves(result))


def _check_lasso_cv_result():
  X = jnp.linspace(-1, 1, 24).reshape(8, 3) ** jnp.arange(1, 4)
  result = cv.lasso_cv(X, _target(X), alphas=4, folds=2)
  assert isinstance(result, cv.LassoCVResult)
  leaves = jax.tree.leaves(jax.jit(lambda r: r)(result))  # a pytree: it crosses jit
  assert len(leaves) == len(dataclasses.fields(cv.LassoCVResult))


def _check_collections():
  _, mutated = jl.ActivityRegularization(l1=1.0).apply({}, jnp.ones(2), mutable=jl.LOSSES)
  assert set(mutated) == {jl.LOSSES}
  layer = nnx.Linear(2, 2, kernel_metadata={jn.REGULARIZER: jr.L1(1.0)}, rngs=nnx.Rngs(0))
  assert jn.regularizer(layer).selected(layer) == {"kernel": (2, 2)}
  layer = jn.ActivityRegularization(l1=1.0)
  layer(jnp.ones(2))
  assert list(jax.tree.leaves(nnx.state(layer, jn.ActivityLoss))) == [1.0]  # 2 rows


def _check_implementations():
  assert {op.name.split("[")[1].split(",")[0].rstrip("]") for op in _ATTENTION} == set(
      attention.IMPLEMENTATIONS)


def _check_keras_epsilon():
  # The default epsilon of every norm constraint and projection is Keras's.
  for make in (jr.MaxNorm, jr.MinMaxNorm, jr.UnitNorm):
    assert make().epsilon == prox.KERAS_EPSILON == 1e-7
  x = jnp.array([[3.0], [4.0]])
  np.testing.assert_allclose(prox.max_norm(x, 1.0), x / (5 + 1e-7), rtol=1e-7)


def _check_fista_iterate():
  # FISTA's sparse iterate, found inside a chain: one proximal step from w.
  params = {"w": jnp.array([1.0, 0.05, -0.5])}
  tx = optax.chain(optax.identity(), transforms.prox_sgd(1.0, _L1, accelerated=True))
  _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_array_equal(transforms.fista_iterate(state)["w"], state[1].iterate["w"])
  np.testing.assert_allclose(transforms.fista_iterate(state)["w"], [0.9, 0.0, -0.4], rtol=1e-6)


def _check_draws():
  # Whether a module needs a key: only a rate strictly inside (0, 1) or a stddev > 0.
  from jaxreg import stochastic  # pylint: disable=import-outside-toplevel
  assert [stochastic.draws_at_rate(r) for r in (0.0, 0.5, 1.0)] == [False, True, False]
  assert [stochastic.draws_at_stddev(s) for s in (0.0, np.float32(0), 0.1)] == [
      False, False, True]
  assert jax.jit(lambda r: jnp.asarray(stochastic.draws_at_rate(r)))(0.0)  # traced: draws


COVERED: dict[str, Callable[[], None]] = {
    "jaxreg.transforms.fista_iterate": _check_fista_iterate,
    "jaxreg.stochastic.draws_at_rate": _check_draws,
    "jaxreg.stochastic.draws_at_stddev": _check_draws,
    **{f"jaxreg.transforms.{name}": _check_state_types for name in _STATES},
    "jaxreg.transforms.NO_PARAMS_MSG": _check_no_params_message,
    "jaxreg.Regularizer": _check_base_classes,
    "jaxreg.Constraint": _check_base_classes,
    "jaxreg.drop_path_rates": _check_drop_path_rates,
    "jaxreg.cv.CVResult": _check_cv_result,
    "jaxreg.cv.LassoCVResult": _check_lasso_cv_result,
    "jaxreg.linen.LOSSES": _check_collections,
    "jaxreg.nnx.REGULARIZER": _check_collections,
    "jaxreg.nnx.ActivityLoss": _check_collections,
    "jaxreg.attention.IMPLEMENTATIONS": _check_implementations,
    "jaxreg.prox.KERAS_EPSILON": _check_keras_epsilon,
}

# The modules whose __all__ the table must cover.
MODULES = ("jaxreg", "jaxreg.stochastic", "jaxreg.regularizers", "jaxreg.transforms",
           "jaxreg.linen", "jaxreg.nnx", "jaxreg.attention", "jaxreg.cv", "jaxreg.prox")
