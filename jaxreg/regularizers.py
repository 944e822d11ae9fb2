r"""Regularizers: penalties on a parameter pytree that know their value and their prox.

Each regularizer ``R`` is a small pytree object (its strengths are leaves, so they can
be traced, vmapped or scheduled; its ``where`` is static) with

* ``R(params)``: the scalar penalty, summed over the selected leaves, accumulated in at
  least float32;
* ``R.prox(params, step)``: the exact proximal map of ``step·R``,
  :math:`\arg\min_z \text{step}\cdot R(z) + \tfrac12\lVert z - \text{params}\rVert^2`,
  leaf by leaf (see :mod:`jaxreg.prox`). ``step`` is a scalar, or a pytree of the
  params' structure whose leaves broadcast against them (one step per coordinate).

Conventions (those of Keras and of the penalties ``L = L0 + λΣ|w|``, ``L = L0 + λΣw²``):

====================  ==========================  ==========================
regularizer           value                       gradient
====================  ==========================  ==========================
``L1(λ)``             :math:`λ\sum|w|`            :math:`λ\,\mathrm{sign}(w)` (0 at 0)
``L2(λ)``             :math:`λ\sum w^2`           :math:`2λw`
``ElasticNet(a, b)``  :math:`a\sum|w| + b\sum w^2`  :math:`a\,\mathrm{sign}(w) + 2bw`
``GroupLasso(λ)``     :math:`λ\sum_g\lVert w_g\rVert_2`  :math:`λ\,w_g/\lVert w_g\rVert_2`
====================  ==========================  ==========================

``L2(λ)`` is **not** ``λ/2·Σw²``: its gradient ``2λw`` equals Optax's
``add_decayed_weights(weight_decay=2λ)``. Under SGD the two are the same update; under
Adam, decayed weights added *after* the preconditioner (AdamW) are a different method.

A strength known at trace time must be finite and ``>= 0`` (else ``ValueError``); a
traced strength that is negative or NaN acts as 0.

>>> import jax.numpy as jnp
>>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([3.0])}
>>> float(L1(0.5)(params)), float(L2(0.5, where=lambda path, w: w.size > 1)(params))
(3.0, 2.5)
>>> L1(1.5).prox(params, 1.0)["w"]
Array([ 0. , -0.5], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxreg import _checks
from jaxreg import _dtypes
from jaxreg import prox as _prox
from jaxreg import select


@jax.custom_jvp
def _abs(x):
  """``|x|`` whose derivative is ``sign(x)``: 0 at 0, the subgradient of least norm."""
  return jnp.abs(x)


@_abs.defjvp
def _abs_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return jnp.abs(x), jnp.sign(x) * t


def _square(w):
  # Squared after the cast: a bf16 square is rounded to 8 bits, while the square of a
  # bf16 value is exact in float32.
  return jnp.square(_dtypes.widen(w))


def _step_per_leaf(step, params) -> list:
  """``step`` for each leaf of ``params``, in leaf order: a scalar is shared by all."""
  treedef = jax.tree.structure(params)
  if jax.tree.structure(step) == _LEAF and jnp.ndim(step) == 0:
    return [_checks.check_nonnegative(step, "step")] * treedef.num_leaves
  if jax.tree.structure(step) != treedef:
    raise ValueError(
        "step must be a scalar or a pytree with the structure of params; got "
        f"{jax.tree.structure(step)} for params {treedef}")
  return [_checks.check_nonnegative(t, "step") for t in jax.tree.leaves(step)]


_LEAF = jax.tree.structure(0.0)


def _refuse_a_step_count(params):
  """A regularizer is callable, so ``optax.inject_hyperparams`` takes one for a
  schedule and calls it on the step count: say so, rather than that nothing is
  selected in an integer scalar."""
  if (jax.tree.structure(params) == _LEAF and jnp.ndim(params) == 0
      and jnp.issubdtype(jnp.result_type(params), jnp.integer)
      and not isinstance(params, int)):
    raise TypeError(
        "a regularizer was called on an integer scalar, as optax.inject_hyperparams "
        "calls every callable hyperparameter as a schedule of the step count; pass "
        "static_args=('reg',) to optax.inject_hyperparams so it is passed as it is")


class Regularizer:
  """Base class: a penalty that sums a per-leaf term over the selected leaves.

  Subclasses define ``_leaf_value(w)`` and ``_leaf_prox(w, step)``, and name their
  strength attributes in ``_strengths`` (traced-capable pytree leaves).

  ``params`` may be a plain pytree, a Flax linen ``variables`` dict or an NNX module
  or state: only parameters are penalized (the ``'params'`` collection, ``nnx.Param``
  variables; see :mod:`jaxreg.select`), and ``prox`` returns the same structure with
  only the selected parameters changed. A ``where`` that selects no parameter raises
  ``ValueError`` unless it is ``jaxreg.select.allow_empty(...)``.
  """

  _strengths: tuple[str, ...] = ()
  _static: tuple[str, ...] = ("where",)
  separable: bool = True
  """The penalty is a sum of per-coordinate terms, so ``prox`` accepts one step per
  coordinate (as ``jaxreg.transforms.prox_adam`` passes)."""

  def __call__(self, params) -> jax.Array:
    _refuse_a_step_count(params)
    flags = select.selection(self.where, params)
    # jnp.asarray: a Python-float leaf is a parameter too, penalized as a 0-d array.
    terms = [self._leaf_value(jnp.asarray(w))
             for selected, w in zip(flags, jax.tree.leaves(params)) if selected]
    return sum(terms, start=jnp.zeros((), jnp.float32))

  def prox(self, params, step):
    """The proximal map of ``step·R`` at ``params``; selected-out leaves are returned as is."""
    flags = select.selection(self.where, params)
    steps = _step_per_leaf(step, params)
    values, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [
        self._leaf_prox(jnp.asarray(w), t) if selected else w
        for selected, w, t in zip(flags, values, steps)])

  def selected(self, params) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the parameters this regularizer penalizes in ``params``.

    >>> import jax.numpy as jnp, jaxreg as jr
    >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
    >>> jr.L2(0.1, where=jr.select.kernels()).selected(params)
    {'dense/kernel': (3, 2)}
    """
    return select.selected(self.where, params)

  def with_where(self, where) -> Regularizer:
    """The same regularizer (the same strengths, traced or not) on another ``where``."""
    children, aux = self.tree_flatten()
    out = type(self).tree_unflatten(aux, children)
    out.where = select.as_selector(where)
    return out

  def elastic_coefficients(self) -> tuple[Any, Any] | None:
    """``(a, b)`` when the per-leaf term is ``a·|w| + b·w²``, for closed-form sums."""
    return None

  def __add__(self, other):
    if not isinstance(other, Regularizer):
      return NotImplemented
    return Sum((*_terms(self), *_terms(other)))

  def __radd__(self, other):
    # ``sum([r1, r2])`` starts from 0.
    if isinstance(other, (int, float)) and other == 0:
      return self
    return NotImplemented

  def __repr__(self):
    fields = [f"{name}={getattr(self, name)!r}" for name in self._strengths + self._static]
    return f"{type(self).__name__}({', '.join(fields)})"

  # Pytree protocol: strengths are children, the rest is static (hashable) aux data.
  def tree_flatten(self):
    return (tuple(getattr(self, name) for name in self._strengths),
            tuple(getattr(self, name) for name in self._static))

  @classmethod
  def tree_unflatten(cls, aux, children):
    # Bypasses __init__: JAX rebuilds with tracers or placeholders, which the checks
    # there must not see.
    obj = object.__new__(cls)
    for name, value in zip(cls._strengths + cls._static, children + aux):
      setattr(obj, name, value)
    return obj


def _terms(reg: Regularizer) -> tuple[Regularizer, ...]:
  return reg.terms if isinstance(reg, Sum) else (reg,)


@jax.tree_util.register_pytree_node_class
class L1(Regularizer):
  r"""Lasso penalty :math:`λ\sum_i |w_i|`; its prox is soft-thresholding.

  >>> import jax.numpy as jnp
  >>> float(L1(0.25)({"w": jnp.array([1.0, -3.0])}))
  1.0
  """
  _strengths = ("strength",)

  def __init__(self, strength, *, where=None):
    self.strength = _checks.check_strength(strength, "strength")
    self.where = select.as_selector(where)

  def _leaf_value(self, w):
    return self.strength * jnp.sum(_abs(w), dtype=_dtypes.wide(w.dtype))

  def _leaf_prox(self, w, step):
    return _prox.soft_threshold(w, step * self.strength)

  def elastic_coefficients(self):
    return self.strength, 0.0


@jax.tree_util.register_pytree_node_class
class L2(Regularizer):
  r"""Ridge penalty :math:`λ\sum_i w_i^2` (no ½: gradient :math:`2λw`); prox ``w/(1+2·step·λ)``.

  >>> import jax.numpy as jnp
  >>> float(L2(0.5)({"w": jnp.array([1.0, -3.0])}))
  5.0
  """
  _strengths = ("strength",)

  def __init__(self, strength, *, where=None):
    self.strength = _checks.check_strength(strength, "strength")
    self.where = select.as_selector(where)

  def _leaf_value(self, w):
    return self.strength * jnp.sum(_square(w))

  def _leaf_prox(self, w, step):
    return _prox.ridge(w, step * self.strength)

  def elastic_coefficients(self):
    return 0.0, self.strength


@jax.tree_util.register_pytree_node_class
class ElasticNet(Regularizer):
  r"""Elastic net :math:`a\sum_i|w_i| + b\sum_i w_i^2` with ``a = l1``, ``b = l2``.

  scikit-learn's ``ElasticNet(alpha, l1_ratio)`` minimizes
  :math:`\frac{1}{2n}\lVert y - Xw\rVert^2 + \alpha\rho\lVert w\rVert_1
  + \frac{\alpha(1-\rho)}{2}\lVert w\rVert_2^2`, i.e. ``ElasticNet(l1=alpha*l1_ratio,
  l2=alpha*(1-l1_ratio)/2)`` added to the mean squared error halved.

  >>> import jax.numpy as jnp
  >>> float(ElasticNet(0.5, 0.25)({"w": jnp.array([2.0])}))
  2.0
  """
  _strengths = ("l1", "l2")

  def __init__(self, l1, l2, *, where=None):
    self.l1 = _checks.check_strength(l1, "l1")
    self.l2 = _checks.check_strength(l2, "l2")
    self.where = select.as_selector(where)

  def _leaf_value(self, w):
    return (self.l1 * jnp.sum(_abs(w), dtype=_dtypes.wide(w.dtype))
            + self.l2 * jnp.sum(_square(w)))

  def _leaf_prox(self, w, step):
    return _prox.elastic_net(w, step * self.l1, step * self.l2)

  def elastic_coefficients(self):
    return self.l1, self.l2


@jax.tree_util.register_pytree_node_class
class GroupLasso(Regularizer):
  r"""Group lasso :math:`λ\sum_g \lVert w_g\rVert_2` (Yuan & Lin, 2006).

  ``axis`` is what each group's norm reduces over, as in
  ``jnp.linalg.norm(w, axis=axis)``: for a Dense kernel of shape ``(in, out)``,
  ``axis=0`` gives one group per output unit, and the prox zeroes whole neurons.
  Its prox needs one step per leaf (a scalar): with a different step per coordinate
  the problem no longer separates by group and has no closed form.

  >>> import jax.numpy as jnp
  >>> float(GroupLasso(1.0, axis=0)({"w": jnp.array([[3.0, 0.0], [4.0, 1.0]])}))
  6.0
  """
  _strengths = ("strength",)
  _static = ("axis", "where")
  separable = False  # One norm per group: a step per coordinate has no closed form.

  def __init__(self, strength, *, axis, where=None):
    self.strength = _checks.check_strength(strength, "strength")
    axes = axis if isinstance(axis, tuple) else (axis,)
    if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
      raise ValueError(f"axis must be an int or a tuple of ints, got {axis!r}")
    self.axis = axis
    self.where = select.as_selector(where)

  def _check_axis(self, w):
    axes = self.axis if isinstance(self.axis, tuple) else (self.axis,)
    if not all(-w.ndim <= a < w.ndim for a in axes):
      raise ValueError(
          f"GroupLasso axis={self.axis!r} is out of range for a selected leaf of shape "
          f"{w.shape}; pass where= to select only leaves with enough dims")

  def _leaf_value(self, w):
    self._check_axis(w)
    norms = _prox.group_norm(_dtypes.widen(w), self.axis)
    return self.strength * jnp.sum(norms)

  def _leaf_prox(self, w, step):
    self._check_axis(w)
    if jnp.ndim(step) != 0:
      raise ValueError(
          f"GroupLasso.prox needs a scalar step per leaf, got shape {jnp.shape(step)}")
    return _prox.group_soft_threshold(w, step * self.strength, self.axis)


@jax.tree_util.register_pytree_node_class
class Sum(Regularizer):
  r"""``r1 + r2 + ...``: the values add up.

  The prox of a sum has a closed form on a leaf when at most one term selects it, or
  when every term that selects it is an L1/L2/elastic-net term (their strengths add up
  into one elastic net), with or without ``jaxreg.NonNeg`` (which clamps that prox at
  0: ``L1(λ) + NonNeg()`` gives :math:`\max(w - tλ, 0)`). Any other overlap raises ``NotImplementedError``: chain the
  gradient of one term instead (``jaxreg.transforms.add_gradient``).

  >>> import jax.numpy as jnp
  >>> r = L1(1.0) + L2(0.5)
  >>> r.prox({"w": jnp.array([3.0])}, 1.0)["w"]
  Array([1.], dtype=float32)
  """
  _strengths = ("terms",)
  _static = ()

  def __init__(self, terms):
    self.terms = tuple(terms)

  def __call__(self, params):
    return sum((term(params) for term in self.terms), start=jnp.zeros((), jnp.float32))

  def prox(self, params, step):
    steps = _step_per_leaf(step, params)
    flag_columns = [select.selection(term.where, params) for term in self.terms]

    def leaf_prox(path, w, t, *flags):
      active = [term for term, selected in zip(self.terms, flags) if selected]
      if not active:
        return w
      w = jnp.asarray(w)  # A Python-float leaf, as a 0-d array.
      if len(active) == 1:
        return active[0]._leaf_prox(w, t)
      # max(·, 0) after the prox of an even, coordinate-wise convex penalty is the
      # prox of that penalty plus the constraint w >= 0 (jaxreg.NonNeg).
      nonneg = any(getattr(term, "projects_nonnegative", False) for term in active)
      active = [term for term in active if not getattr(term, "projects_nonnegative", False)]
      coefficients = [term.elastic_coefficients() for term in active]
      if any(c is None for c in coefficients):
        raise NotImplementedError(
            f"{' + '.join(type(term).__name__ for term in active)}"
            f"{' + NonNeg' if nonneg else ''} has no closed-form "
            f"proximal map on {select.path_string(path)!r}; restrict one term with where=, or add its "
            "gradient instead of its prox")
      l1 = sum(a for a, _ in coefficients)
      l2 = sum(b for _, b in coefficients)
      z = _prox.elastic_net(w, t * l1, t * l2)
      return _prox.non_negative(z) if nonneg else z

    values, treedef = jax.tree.flatten(params)
    paths = [leaf.path for leaf in select.leaves(params)]
    return jax.tree.unflatten(treedef, [
        leaf_prox(*row) for row in zip(paths, values, steps, *flag_columns)])

  def selected(self, params) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the parameters any term penalizes (``reg.terms[i].selected``
    shows one term's)."""
    return {path: shape for term in self.terms for path, shape in term.selected(params).items()}

  @property
  def separable(self) -> bool:
    return all(term.separable for term in self.terms)

  def with_where(self, where) -> Sum:
    return Sum(term.with_where(where) for term in self.terms)

  def __repr__(self):
    return " + ".join(repr(term) for term in self.terms)


def l1(l1: float = 0.01, *, where=None) -> L1:
  """Keras-style alias: ``l1(0.01)`` is ``L1(0.01)``."""
  return L1(l1, where=where)


def l2(l2: float = 0.01, *, where=None) -> L2:
  """Keras-style alias: ``l2(0.01)`` is ``L2(0.01)``, the penalty ``0.01·Σw²``."""
  return L2(l2, where=where)


def l1_l2(l1: float = 0.0, l2: float = 0.0, *, where=None) -> ElasticNet:
  """Keras-style alias: ``l1_l2(l1=a, l2=b)`` is ``ElasticNet(a, b)``.

  The defaults are Keras 3's, ``(0.0, 0.0)``; tf.keras 2 defaulted to ``(0.01, 0.01)``.
  """
  return ElasticNet(l1, l2, where=where)

