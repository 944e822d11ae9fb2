r"""Optax gradient transformations built on jaxreg's regularizers.

Two ways to add a penalty :math:`R` to a loss :math:`L_0`:

* **coupled** (:func:`add_gradient`): add :math:`\nabla R(w)` to the gradient before the
  optimizer sees it, so the optimizer minimizes :math:`L_0 + R` like any other loss.
  For ``L1`` the gradient is :math:`λ\,\mathrm{sign}(w)`: constant in size, so the
  weights oscillate around 0 and almost never land on it.
* **proximal** (:func:`proximal`, :func:`prox_sgd`, :func:`prox_adam`,
  :func:`prox_adagrad`, :func:`ftrl`): take the optimizer's step on :math:`L_0` alone,
  then apply the proximal map of the penalty,
  :math:`w \leftarrow \operatorname{prox}_{η_t R}(w + u)`. For ``L1`` this is
  soft-thresholding, which sets coordinates to exactly 0.

Every transform reads the penalty from the regularizer object (``reg(params)``,
``jax.grad(reg)``, ``reg.prox(params, step)``), so ``where=``, sums and traced
strengths behave as they do there. All states are NamedTuples of arrays, and every
transform needs ``params`` in ``update``.

**Learning rates.** :func:`proximal` is chained after an optimizer and must use the
step size that optimizer used: the same float, or the same schedule, evaluated at the
same count. Its count starts at 0 and advances once per ``update``, as the count of
``optax.scale_by_learning_rate`` does, so ``optax.chain(optax.sgd(lr), proximal(lr,
reg))`` with one ``lr`` object (float or schedule) is exactly :func:`prox_sgd`. A chain
cannot be inspected from inside, so a mismatch (a schedule in one place, a float in
the other) is not detected there: pass the same object twice. :func:`prox_sgd` and
:func:`prox_adam` take the learning rate once and cannot mismatch. A learning rate
that is neither a number nor a callable raises ``TypeError``. A learning rate of 0 (a
schedule's last step, a warm-up's first) leaves the weights where they are, in every
proximal optimizer here: FISTA's momentum and FTRL's closed form included.

**Parameters** may be arrays or Python floats (a Python-float leaf is a parameter, moved
as a 0-d array, as Optax's ``apply_updates`` does). ``optax.inject_hyperparams`` takes
every callable argument for a schedule, a regularizer too: pass
``static_args=("reg",)``.

**Conventions.** ``L2(λ)`` is :math:`λ\sum w^2`, with gradient :math:`2λw`; Optax's
``add_decayed_weights(wd)`` adds :math:`wd\cdot w`. So:

* ``chain(add_gradient(L2(λ)), sgd(lr))`` is ``chain(add_decayed_weights(2λ),
  sgd(lr))``: the same update;
* ``chain(add_gradient(L2(λ)), adam(lr))`` is coupled L2 ("Adam + L2"), **not**
  ``adamw(lr, weight_decay=2λ)``;
* ``adamw(lr, weight_decay=2λ)`` is ``chain(scale_by_adam(), add_gradient(L2(λ)),
  scale_by_learning_rate(lr))``: decoupled weight decay;
* ``chain(sgd(lr), proximal(lr, L2(λ)))`` decays implicitly,
  :math:`w \leftarrow (w - lr\,g)/(1 + 2\,lr\,λ)`.

Under Adam the coupled penalty gradient is divided by the preconditioner, so weights
with large gradients are barely decayed; AdamW adds the decay after the
preconditioner (Loshchilov & Hutter, "Decoupled weight decay regularization", ICLR
2019). Neither is wrong; they are different methods.

**Arguments.** The learning rate comes first in every transform here, as in Optax.
Under FISTA (``prox_sgd(..., accelerated=True)``) the params are extrapolated points;
:func:`fista_iterate` returns the sparse proximal point from the optimizer state.

>>> import jax, jax.numpy as jnp, optax, jaxreg as jr
>>> params = jnp.array([0.5, -0.05, 2.0])
>>> tx = jr.transforms.prox_sgd(0.1, jr.L1(1.0))
>>> updates, state = tx.update(jnp.zeros(3), tx.init(params), params)
>>> optax.apply_updates(params, updates)
Array([0.4, 0. , 1.9], dtype=float32)

The package holds one private module per transform (``_gradient``, ``_proximal``,
``_sgd``, ``_fista``, ``_adam``, ``_adaptive``) and the rules they share (``_base``);
every public name is imported from here.
"""

from jaxreg.transforms._adam import ProxAdamState
from jaxreg.transforms._adam import prox_adam
from jaxreg.transforms._adaptive import FtrlState
from jaxreg.transforms._adaptive import ProxAdagradState
from jaxreg.transforms._adaptive import ftrl
from jaxreg.transforms._adaptive import prox_adagrad
from jaxreg.transforms._base import NO_PARAMS_MSG
from jaxreg.transforms._fista import FISTAState
from jaxreg.transforms._fista import fista_iterate
from jaxreg.transforms._gradient import add_gradient
from jaxreg.transforms._proximal import ProximalState
from jaxreg.transforms._proximal import proximal
from jaxreg.transforms._sgd import ProxSGDState
from jaxreg.transforms._sgd import prox_sgd

__all__ = [
    "NO_PARAMS_MSG",
    "ProximalState",
    "ProxSGDState",
    "FISTAState",
    "ProxAdamState",
    "ProxAdagradState",
    "FtrlState",
    "add_gradient",
    "proximal",
    "prox_sgd",
    "fista_iterate",
    "prox_adam",
    "prox_adagrad",
    "ftrl",
]
