r"""What a regularizer is, and the two ways to make one from others: sums and scalings.

A :class:`Regularizer` ``R`` is a small pytree object (its strengths are leaves, so they
can be traced, vmapped or scheduled; its ``where`` and other settings are static aux
data) with

* ``R(params)``: the scalar penalty, summed over the selected leaves, accumulated in at
  least float32;
* ``R.prox(params, step)``: the exact proximal map of ``step·R``,
  :math:`\arg\min_z \text{step}\cdot R(z) + \tfrac12\lVert z - \text{params}\rVert^2`,
  leaf by leaf. ``step`` is a scalar, or a pytree of the params' structure whose leaves
  broadcast against them (one step per coordinate).

``r1 + r2`` is a :class:`Sum`; ``c * r``, ``r * c`` and ``r / c`` are the penalty
:math:`c\,R`, whose prox at step :math:`t` is that of :math:`R` at step :math:`c\,t`
(for :math:`c > 0`; the identity for :math:`c = 0`). A penalty that is linear in its
strengths comes back as itself with its strengths scaled (``0.5 * L1(0.1)`` is
``L1(0.05)``), a sum with each term scaled, a constraint as itself for ``c > 0`` (see
:mod:`jaxreg.constraints`), anything else wrapped in :class:`Scaled`. ``c`` is a real
scalar, finite and ``>= 0`` (a negatively scaled penalty is not convex and has no
prox), checked as a strength is: a traced ``c`` works, and one that is negative or NaN
acts as 0. ``r / 0`` raises ``ValueError``; a traced 0 divisor gives the zero penalty.
The concrete penalties are in :mod:`jaxreg.regularizers`, which exports these classes
too.

>>> import jax.numpy as jnp, jaxreg as jr
>>> 0.5 * jr.L1(0.1)
L1(strength=0.05, where=None)
>>> float((jr.L2(1.0) / 4)({"w": jnp.array([2.0])}))
1.0
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _checks
from jaxreg import _safe
from jaxreg import prox as _prox
from jaxreg import select

__all__ = ["Regularizer", "Scaled", "Sum"]

_LEAF = jax.tree.structure(0.0)


def _step_per_leaf(step, params) -> list:
  """``step`` for each leaf of ``params``, in leaf order: a scalar is shared by all.

  The one check of a prox's step (the proximal transforms pass theirs unchecked)."""
  treedef = jax.tree.structure(params)
  if jax.tree.structure(step) == _LEAF and jnp.ndim(step) == 0:
    return [_checks.check_nonnegative(step, "step")] * treedef.num_leaves
  if jax.tree.structure(step) != treedef:
    raise ValueError(
        "step must be a scalar or a pytree with the structure of params; got "
        f"{jax.tree.structure(step)} for params {treedef}")
  return [_checks.check_nonnegative(t, "step") for t in jax.tree.leaves(step)]


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


def _is_number(c) -> bool:
  """Whether ``c`` may scale a regularizer (then checked); else ``*`` is not defined."""
  return isinstance(c, (numbers.Number, jax.Array, np.ndarray, np.generic))


def _checked_scale(c, reg):
  """``c`` of ``c * reg``, checked as a strength (:func:`jaxreg._checks.check_strength`)."""
  try:
    return _checks.check_strength(c, "c")
  except ValueError as error:
    if np.asarray(c, np.float64) < 0:  # Concrete: a traced c raises nothing.
      raise ValueError(f"{error}: {reg!r} scaled by a negative c is not convex and "
                       "has no proximal map") from None
    raise


class Regularizer:
  """Base class: a penalty that sums a per-leaf term over the selected leaves.

  Subclasses define ``_leaf_value(w)`` and ``_leaf_prox(w, step)``, and name their
  strength attributes in ``_strengths`` (traced-capable pytree leaves) and their
  other settings in ``_static`` (hashable aux data). ``_homogeneous = True`` says the
  value is linear in the strengths, so that ``c * R`` scales them.

  ``params`` may be a plain pytree, a Flax linen ``variables`` dict or an NNX module
  or state: only parameters are penalized (the ``'params'`` collection, ``nnx.Param``
  variables; see :mod:`jaxreg.select`), and ``prox`` returns the same structure with
  only the selected parameters changed. A ``where`` that selects no parameter raises
  ``ValueError`` unless it is ``jaxreg.select.allow_empty(...)``.

  Regularizers compare by identity. Under ``jit`` what counts is their pytree
  structure (the class, ``where`` and the static settings; selectors compare by
  value), so the same penalty made again, with other strengths or scaled by another
  ``c``, reuses the trace.
  """

  _strengths: tuple[str, ...] = ()
  _static: tuple[str, ...] = ("where",)
  _homogeneous: bool = False
  separable: bool = True
  """The penalty is a sum of per-coordinate terms, so ``prox`` accepts one step per
  coordinate (as ``jaxreg.transforms.prox_adam`` passes)."""

  # np.float32(2) * reg calls reg.__rmul__ instead of a NumPy loop over an object.
  __array_ufunc__ = None

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

  def __mul__(self, c):
    if not _is_number(c):
      return NotImplemented
    return self._scaled(_checked_scale(c, self))

  __rmul__ = __mul__

  def __truediv__(self, c):
    if not _is_number(c):
      return NotImplemented
    c = _checked_scale(c, self)
    if isinstance(c, jax.core.Tracer):
      # A traced 0 cannot raise: it gives 1/c = 0, as a traced bad strength gives 0.
      return self._scaled(_safe.safe_reciprocal(c))
    if c == 0:
      raise ValueError(f"c must be > 0 in {self!r} / c, got {c}: division by zero")
    return self._scaled(1 / c)

  def _scaled(self, c) -> Regularizer:
    """``c·R`` for a checked ``c``: its strengths scaled, or ``Scaled(c, R)``."""
    if not self._homogeneous:
      return Scaled(c, self)
    children, aux = self.tree_flatten()
    return type(self).tree_unflatten(aux, tuple(
        _checks.check_nonnegative(c * value, name)  # c·λ may overflow to inf.
        for name, value in zip(self._strengths, children)))

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
class Sum(Regularizer):
  r"""``r1 + r2 + ...``: the values add up.

  The prox of a sum has a closed form on a leaf when at most one term selects it, or
  when every term that selects it is an L1/L2/elastic-net term (their strengths add up
  into one elastic net), with or without ``jaxreg.NonNeg`` (which clamps that prox at
  0: ``L1(λ) + NonNeg()`` gives :math:`\max(w - tλ, 0)`). Any other overlap raises
  ``NotImplementedError``: chain the gradient of one term instead
  (``jaxreg.transforms.add_gradient``). ``c * (r1 + r2)`` is ``c * r1 + c * r2``.

  >>> import jax.numpy as jnp, jaxreg as jr
  >>> r = jr.L1(1.0) + jr.L2(0.5)
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
            f"{' + NonNeg' if nonneg else ''} has no closed-form proximal map on "
            f"{select.path_string(path)!r}; restrict one term with where=, or add its "
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

  def _scaled(self, c) -> Sum:
    return Sum(term._scaled(c) for term in self.terms)

  def __repr__(self):
    return " + ".join(repr(term) for term in self.terms)


@jax.tree_util.register_pytree_node_class
class Scaled(Regularizer):
  r"""``c * reg`` for a ``reg`` that scaling its strengths cannot express.

  Its value is :math:`c\,R(w)` and its prox at step :math:`t` is ``reg``'s at step
  :math:`c\,t`. A constraint (an indicator) is its own multiple for every
  :math:`c > 0`, so ``2 * MaxNorm(1.0)`` is the ``MaxNorm`` itself; ``0 * C`` is the
  zero penalty, whose prox is the identity, and a traced ``c`` gives a ``Scaled``
  that projects where ``c > 0`` and leaves the weights alone where ``c == 0``. Your
  own subclasses of :class:`Regularizer` are scaled by this wrapper too. ``scale`` is
  a pytree leaf, as strengths are.

  >>> import jax.numpy as jnp, jaxreg as jr
  >>> zero = 0.0 * jr.NonNeg()
  >>> zero
  0.0 * NonNeg(where=None)
  >>> zero.prox({"w": jnp.array([-1.0, 2.0])}, 1.0)["w"]
  Array([-1.,  2.], dtype=float32)
  """
  _strengths = ("scale", "regularizer")
  _static = ()

  def __init__(self, scale, regularizer):
    if not isinstance(regularizer, Regularizer) or isinstance(regularizer, Sum):
      raise TypeError(f"Scaled takes a regularizer other than a sum, got {regularizer!r}; "
                      "write c * reg, which scales each term of a sum")
    self.scale = _checked_scale(scale, regularizer)
    self.regularizer = regularizer

  @property
  def where(self):
    return self.regularizer.where

  @property
  def separable(self) -> bool:
    return self.regularizer.separable

  @property
  def is_constraint(self) -> bool:
    # Read by jaxreg.transforms.add_gradient: a scaled indicator has no gradient either.
    return getattr(self.regularizer, "is_constraint", False)

  def _leaf_value(self, w):
    return self.scale * self.regularizer._leaf_value(w)

  def _leaf_prox(self, w, step):
    if not self.is_constraint:
      return self.regularizer._leaf_prox(w, self.scale * step)
    # c·indicator is the indicator for c > 0 (a projection, whatever the step) and
    # the zero penalty for c = 0.
    return jnp.where(self.scale > 0, self.regularizer._leaf_prox(w, step), w)

  def elastic_coefficients(self):
    coefficients = self.regularizer.elastic_coefficients()
    return None if coefficients is None else tuple(self.scale * c for c in coefficients)

  def with_where(self, where) -> Scaled:
    return Scaled.tree_unflatten((), (self.scale, self.regularizer.with_where(where)))

  def _scaled(self, c) -> Regularizer:
    return self.regularizer._scaled(_checks.check_nonnegative(c * self.scale, "c"))

  def __repr__(self):
    return f"{self.scale!r} * {self.regularizer!r}"
