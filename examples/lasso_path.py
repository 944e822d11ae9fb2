"""L1 performs feature selection: the Lasso path of the diabetes data, checked against
scikit-learn.

The Lasso (scikit-learn's objective, with n the number of rows)

    min_w  1/(2n) ||y - Xw||² + λ ||w||₁          (jr.L1(λ) on the loss 1/(2n)||y - Xw||²)

is solved for 30 strengths λ at once: one ``jax.vmap`` over λ of FISTA, that is
``jaxreg.transforms.prox_sgd(1/L, jr.L1(λ), accelerated=True)`` with L the Lipschitz
constant of the gradient. Each solution is compared with
``sklearn.linear_model.lasso_path`` at the same λ (same data, same objective, solved to
a tolerance of 1e-12). As λ grows the soft-threshold step sets coefficients exactly to
0, one feature after another: ``<out>/lasso_path.png`` plots the coefficients against λ.
The last column shows why the prox matters: the same steps with the L1 subgradient
λ·sign(w) added to the gradient (``add_gradient(jr.L1(λ))`` before ``optax.sgd``) make
coefficients oscillate around 0, never land on it, and select no feature.
The first λ of the grid is the boundary at which every coefficient becomes 0; there
rounding may leave one coefficient at 1e-14 instead of 0.

The script runs in float64 (``jax.config.update("jax_enable_x64", True)``): the
agreement to 1e-4 at every λ is an agreement between two solvers, and float32's
7 digits leave too little room below coefficients of size 100.

  python examples/lasso_path.py
  python examples/lasso_path.py --help
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
jax.config.update("jax_enable_x64", True)  # Before any array is made; see the docstring.
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")  # Files only: the script never opens a window.
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn import datasets
from sklearn import linear_model
from sklearn import preprocessing

import jaxreg as jr
from jaxreg import transforms

TOLERANCE = 1e-4  # the largest coefficient difference to scikit-learn accepted


def load_data():
  """Standardized features and centred target, so that no intercept is needed."""
  data = datasets.load_diabetes()
  x = preprocessing.StandardScaler().fit_transform(data.data)
  return x, data.target - data.target.mean(), list(data.feature_names)


def strengths(x, y, count: int, eps: float = 1e-3) -> np.ndarray:
  """scikit-learn's grid: from the smallest λ at which every coefficient is 0,
  max|Xᵀy|/n, down to eps times it, evenly spaced in log."""
  lambda_max = np.max(np.abs(x.T @ y)) / len(y)
  return np.geomspace(lambda_max, eps * lambda_max, count)


def solve_path(x, y, lambdas, iterations: int, *, proximal: bool = True):
  """The Lasso solution at every λ, by one vmap of ``prox_sgd(accelerated=True)``;
  with ``proximal=False``, subgradient descent on the same objective instead."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  n = x.shape[0]
  # The gradient of 1/(2n)||y - Xw||² is (XᵀX w - Xᵀy)/n; its Lipschitz constant is the
  # largest eigenvalue of XᵀX/n, and FISTA converges with the step 1/L.
  gram, xty = x.T @ x / n, x.T @ y / n
  learning_rate = 1.0 / float(jnp.linalg.eigvalsh(gram)[-1])

  def solve(strength):
    if proximal:
      tx = transforms.prox_sgd(learning_rate, jr.L1(strength), accelerated=True)
    else:  # λ·sign(w) added to the gradient: the step never lands on 0 but by chance.
      tx = optax.chain(transforms.add_gradient(jr.L1(strength)), optax.sgd(learning_rate))
    w = jnp.zeros(x.shape[1])

    def step(_, carry):
      w, state = carry
      updates, state = tx.update(gram @ w - xty, state, w)
      return optax.apply_updates(w, updates), state

    w, state = jax.lax.fori_loop(0, iterations, step, (w, tx.init(w)))
    # FISTA's params are its extrapolated point; the proximal point, exactly sparse,
    # is kept in the state.
    return state.iterate if proximal else w

  return np.asarray(jax.jit(jax.vmap(solve))(jnp.asarray(lambdas)))


def plot(lambdas, ours, reference, names, path: pathlib.Path):
  fig, ax = plt.subplots(figsize=(9, 5))
  for j, (name, color) in enumerate(zip(names, plt.cm.tab10.colors)):
    ax.plot(lambdas, ours[:, j], color=color, label=name)
    ax.plot(lambdas, reference[:, j], "o", color=color, markersize=3, markerfacecolor="none")
  ax.plot([], [], "o", color="gray", markersize=3, markerfacecolor="none",
          label="scikit-learn")
  ax.set_xscale("log")
  ax.axhline(0, color="black", linewidth=0.5)
  ax.set(xlabel="λ (L1 strength)", ylabel="coefficient (standardized features)",
         title="Lasso path of the diabetes data: jaxreg FISTA (lines), scikit-learn (circles)")
  ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--alphas", type=int, default=30, help="number of strengths λ")
  parser.add_argument("--iterations", type=int, default=20_000,
                      help="FISTA iterations at every λ")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out"),
                      help="folder for lasso_path.png")
  args = parser.parse_args(argv)
  if args.alphas < 2:
    parser.error(f"--alphas must be >= 2, got {args.alphas}")
  if args.iterations < 1:
    parser.error(f"--iterations must be >= 1, got {args.iterations}")

  x, y, names = load_data()
  lambdas = strengths(x, y, args.alphas)
  start = time.perf_counter()
  ours = solve_path(x, y, lambdas, args.iterations)
  seconds = time.perf_counter() - start
  subgradient = solve_path(x, y, lambdas, args.iterations, proximal=False)
  # scikit-learn returns coefs as (features, alphas), in the order of the alphas given.
  _, reference, _ = linear_model.lasso_path(x, y, alphas=lambdas, tol=1e-12, max_iter=1_000_000)
  reference = reference.T
  difference = np.max(np.abs(ours - reference), axis=1)

  print(f"Lasso path on diabetes ({x.shape[0]} rows, {x.shape[1]} standardized features), "
        f"{args.alphas} strengths, {args.iterations} FISTA iterations each, float64")
  print(f"{'λ':>10}{'nonzero (jaxreg)':>18}{'nonzero (sklearn)':>19}{'max |w - sklearn|':>19}"
        f"{'nonzero (subgradient)':>23}")
  for strength, w, ref, diff, sub in zip(lambdas, ours, reference, difference, subgradient):
    print(f"{strength:>10.4g}{np.sum(w != 0):>18d}{np.sum(ref != 0):>19d}{diff:>19.2e}"
          f"{np.sum(sub != 0):>23d}")
  # The λ at which each feature leaves the model: the smallest λ beyond which it stays 0.
  active = ours != 0
  leaves = {name: lambdas[np.nonzero(active[:, j])[0].min()] if active[:, j].any() else None
            for j, name in enumerate(names)}
  order = sorted((name for name in names if leaves[name] is not None), key=lambda n: leaves[n])
  print("features leaving the model as λ grows: " + ", ".join(order))
  worst = float(difference.max())
  verdict = "agrees" if worst <= TOLERANCE else "DOES NOT agree"
  print(f"max coefficient difference over the path: {worst:.2e}: jaxreg {verdict} with "
        f"scikit-learn to {TOLERANCE:g} at every λ; the vmapped path took {seconds:.1f} s "
        "(compilation included)")
  args.out.mkdir(parents=True, exist_ok=True)
  path = args.out / "lasso_path.png"
  plot(lambdas, ours, reference, names, path)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
