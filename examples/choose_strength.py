"""Choosing λ and the dropout rate by k-fold cross-validation, as one vmapped program.

1. Digits MLP (scikit-learn's 8x8 digits, 64 -> width -> 10, ReLU, dropout after the
   hidden layer, L2 on the kernels, full-batch Adam). The L2 strength and the dropout
   rate are chosen by 5-fold cross-validation on the training split: every (strength,
   rate, fold) trains at once under one ``jax.vmap`` (``jaxreg.cv.cross_validate``),
   because a traced strength or rate is an ordinary input to ``jr.L2`` and
   ``jr.dropout``. The chosen point is then trained on the whole training split and
   its test accuracy printed beside no regularization and Keras-style defaults
   (``l2(0.01)``, dropout 0.5).
2. Diabetes Lasso. α is chosen on scikit-learn's grid by ``jaxreg.cv.lasso_cv`` (one
   warm-started path per fold, each training fold centered on its means, as
   ``LassoCV(fit_intercept=True)``), on the same 5 folds as ``LassoCV(cv=KFold(5))``;
   both choices are printed side by side, with the one-standard-error choice (glmnet's
   ``lambda.1se``: the largest α whose mean error is within one standard error of the
   best). ``<out>/choose_strength.png`` plots the CV curve, mean ± standard error,
   with the best and the one-SE α marked. This part runs in float64.

  python examples/choose_strength.py
  python examples/choose_strength.py --help
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")  # Files only: the script never opens a window.
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn import datasets, linear_model, model_selection

import jaxreg as jr
from jaxreg import cv

LEARNING_RATE = 3e-3
DEFAULTS = {"no regularization": (0.0, 0.0), "Keras-style defaults": (0.01, 0.5)}


def digits_split(seed: int):
  x, labels = datasets.load_digits(return_X_y=True)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      x / 16.0, labels, test_size=0.25, stratify=labels, random_state=seed)
  return ((jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train)),
          (jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test)))


def make_fit(width: int, steps: int):
  """``fit(hparams, key, data, weights)``: full-batch Adam on the rows of weight 1."""
  optimizer = optax.adam(LEARNING_RATE)

  def init(key):
    k1, k2 = jax.random.split(key)
    return {"hidden": {"kernel": jax.random.normal(k1, (64, width)) * (2 / 64) ** 0.5,
                       "bias": jnp.zeros(width)},
            "out": {"kernel": jax.random.normal(k2, (width, 10)) * width**-0.5,
                    "bias": jnp.zeros(10)}}

  def fit(hparams, key, data, weights):
    penalty = jr.L2(hparams["l2"], where=jr.select.kernels())
    init_key, dropout_key = jax.random.split(key)

    def loss(params, key):
      return cross_entropy(params, data, weights, key, hparams["rate"]) + penalty(params)

    def step(state, key):
      params, opt_state = state
      updates, opt_state = optimizer.update(jax.grad(loss)(params, key), opt_state)
      return (optax.apply_updates(params, updates), opt_state), None

    params = init(init_key)
    state = (params, optimizer.init(params))
    return jax.lax.scan(step, state, jax.random.split(dropout_key, steps))[0][0]

  return fit


def logits_of(params, x, key=None, rate=0.0):
  hidden = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  hidden = jr.dropout(key, hidden, rate, deterministic=key is None)
  return hidden @ params["out"]["kernel"] + params["out"]["bias"]


def cross_entropy(params, data, weights, key=None, rate=0.0):
  """Weighted mean cross-entropy: the training loss, and the CV score without a key."""
  x, labels = data
  losses = optax.softmax_cross_entropy_with_integer_labels(logits_of(params, x, key, rate),
                                                           labels)
  return weights @ losses / weights.sum()


def accuracy(params, data) -> float:
  x, labels = data
  return float(jnp.mean(jnp.argmax(logits_of(params, x), axis=1) == labels))


def choose_digits(args) -> None:
  train, test = digits_split(args.seed)
  strengths = np.concatenate([[0.0], np.geomspace(1e-4, 1e-2, args.grid_size - 1)])
  rates = np.linspace(0.0, 0.5, args.grid_size)
  l2, rate = np.meshgrid(strengths, rates, indexing="ij")
  grid = {"l2": jnp.asarray(l2.ravel(), jnp.float32),
          "rate": jnp.asarray(rate.ravel(), jnp.float32)}
  fit = make_fit(args.width, args.steps)
  folds = cv.kfold(len(train[1]), args.folds, key=jax.random.key(args.seed),
                   stratify=train[1])
  start = time.perf_counter()
  result = cv.cross_validate(fit, cross_entropy, train, grid, folds=folds,
                             key=jax.random.key(args.seed + 1))
  seconds = time.perf_counter() - start
  points = len(grid["l2"])
  print(f"digits MLP: {points} points (L2 strength x dropout rate) x {args.folds} folds "
        f"= {points * args.folds} fits, one vmapped program, {seconds:.1f} s "
        "(compile included)")
  print(f"{'L2 λ':>8}{'rate':>6}{'CV cross-entropy':>18}{'± SE':>8}")
  for i in range(points):
    mark = "  <- best" if i == int(result.best_index) else ""
    state = "failed" if result.failed[i] else f"{float(result.mean[i]):18.4f}"
    print(f"{float(grid['l2'][i]):>8.0e}{float(grid['rate'][i]):>6.2f}{state:>18}"
          f"{float(result.stderr[i]):>8.4f}{mark}")
  best = result.best
  settings = {"chosen by CV": (float(best["l2"]), float(best["rate"])), **DEFAULTS}
  # The final fits, on the whole training split: one compiled fit (the strength and the
  # rate are traced), called once per setting.
  final_fit = jax.jit(fit)
  weights = jnp.ones(len(train[1]), jnp.float32)
  print(f"\n{'setting':<22}{'L2 λ':>8}{'rate':>6}{'test accuracy':>15}")
  for name, (strength, drop) in settings.items():
    hparams = {"l2": jnp.float32(strength), "rate": jnp.float32(drop)}
    trained = final_fit(hparams, jax.random.key(args.seed + 2), train, weights)
    print(f"{name:<22}{strength:>8.0e}{drop:>6.2f}{accuracy(trained, test):>15.4f}")


def choose_lasso(args) -> None:
  X, y = datasets.load_diabetes(return_X_y=True)
  with jax.enable_x64(True):
    result = cv.lasso_cv(X, y, alphas=args.alphas, folds=args.folds, tol=1e-10,
                         max_iter=100_000)
    lasso_cv = linear_model.LassoCV(alphas=args.alphas, cv=model_selection.KFold(args.folds),
                                    tol=1e-10, max_iter=100_000).fit(X, y)
    alphas, mean = np.asarray(result.alphas), np.asarray(result.mean)
    stderr = np.asarray(result.stderr)
    best, one_se = float(result.alpha), float(result.alpha_one_se)
  print(f"\ndiabetes Lasso, {args.alphas} alphas x {args.folds} folds (float64):")
  print(f"{'':<28}{'alpha':>10}{'CV MSE':>10}")
  print(f"{'jaxreg best':<28}{best:>10.4g}{mean.min():>10.1f}")
  print(f"{'jaxreg one-SE':<28}{one_se:>10.4g}{mean[alphas == one_se][0]:>10.1f}")
  print(f"{'sklearn LassoCV (same folds)':<28}{lasso_cv.alpha_:>10.4g}"
        f"{lasso_cv.mse_path_.mean(1).min():>10.1f}")
  difference = np.max(np.abs(mean / lasso_cv.mse_path_.mean(1) - 1))
  print(f"largest relative difference of the CV curves: {difference:.1e}")
  path = args.out / "choose_strength.png"
  plot(alphas, mean, stderr, best, one_se, lasso_cv.alpha_, args.folds, path)
  print(f"wrote {path}")


def plot(alphas, mean, stderr, best, one_se, sklearn_alpha, folds, path) -> None:
  fig, ax = plt.subplots(figsize=(6.5, 4))
  ax.fill_between(alphas, mean - stderr, mean + stderr, alpha=0.3, label="± standard error")
  ax.plot(alphas, mean, color="C0", label="mean held-out MSE (jaxreg)")
  ax.axvline(best, color="C1", linestyle="--", label=f"best α = {best:.3g}")
  ax.axvline(one_se, color="C2", linestyle=":", label=f"one-SE α = {one_se:.3g}")
  ax.plot([sklearn_alpha], [np.interp(np.log(sklearn_alpha), np.log(alphas[::-1]),
                                      mean[::-1])], "kx", label="LassoCV's α")
  ax.set_xscale("log")
  ax.set_xlabel("α (Lasso strength)")
  ax.set_ylabel("held-out mean squared error")
  ax.set_title(f"diabetes: {folds}-fold CV curve of the Lasso")
  ax.legend(fontsize=8)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validation")
  parser.add_argument("--steps", type=int, default=300, help="Adam steps per MLP fit")
  parser.add_argument("--width", type=int, default=64, help="hidden units of the MLP")
  parser.add_argument("--grid-size", type=int, default=4,
                      help="L2 strengths (0 and a log grid up to 1e-2) and as many dropout "
                           "rates (0 to 0.5): grid-size² points")
  parser.add_argument("--alphas", type=int, default=100, help="points on the Lasso α grid")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out"),
                      help="folder for choose_strength.png")
  parser.add_argument("--seed", type=int, default=0, help="split, folds, weights, dropout")
  args = parser.parse_args(argv)
  for flag, least in (("folds", 2), ("steps", 1), ("width", 1), ("grid_size", 2),
                      ("alphas", 2)):
    if getattr(args, flag) < least:
      parser.error(f"--{flag.replace('_', '-')} must be >= {least}, "
                   f"got {getattr(args, flag)}")
  choose_digits(args)
  choose_lasso(args)


if __name__ == "__main__":
  main()
