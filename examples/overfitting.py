"""Overfitting and its cure on real data: an MLP on scikit-learn's 8x8 digits.

Trained on 300 images of which a fifth carry a wrong label (as labels collected by
people do), an unregularized MLP learns its training set by heart, wrong labels too:
100% training accuracy, and a test accuracy well below it, the generalization gap. The
same Flax NNX model is trained under five settings

  none              plain Adam
  dropout 0.5       jaxreg.nnx.Dropout after each hidden layer
  L2 (kernels)      coupled L2: jr.L2(λ, where=jr.select.kernels())(params) in the loss
  L1 (prox_adam)    jr.L1(λ) by proximal Adam steps: soft-thresholding, exact zeros
  dropout 0.5 + L2  both at once

which differ only in numbers (a dropout rate, an L2 and an L1 strength), so all five
train together in one jitted, vmapped program. A strength of 0 is no penalty:
``prox_adam`` with ``jr.L1(0)`` is Adam. The test images and their labels are fixed
and never changed.

The wrong labels are what there is to overfit: with every label right
(``--label-noise 0``) the gap is about 0.05 under every setting, and no regularizer
raises the test accuracy above the unregularized 0.95 by more than 0.002.

It prints a table (train and test accuracy, the gap between them, the test
cross-entropy, how many of the wrong labels the model learned, the share of weights
that are exactly 0) and writes ``<out>/overfitting.png``: the accuracy curves of every
setting, and the histogram of the weights, where L1's exact zeros stand beside L2's
small but nonzero weights.

  python examples/overfitting.py            # the defaults: what `make demo` runs
  python examples/overfitting.py --help
"""

from __future__ import annotations

import argparse
import pathlib
import time
from typing import Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")  # Files only: the script never opens a window.
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn import datasets
from sklearn import model_selection
from tqdm import tqdm

import jaxreg as jr
from jaxreg import nnx as jnnx
from jaxreg import transforms

# The held-out images: the same whatever the flags say.
TEST_SIZE = 800
TEST_SPLIT_SEED = 0
BATCH_SIZE = 32
LEARNING_RATE = 1e-3


class Setting(NamedTuple):
  dropout: float  # drop probability after each hidden layer
  l2: float  # λ of jr.L2 on the kernels, added to the loss
  l1: float  # λ of jr.L1 on the kernels, applied by prox_adam


SETTINGS = {
    "none": Setting(0.0, 0.0, 0.0),
    "dropout 0.5": Setting(0.5, 0.0, 0.0),
    "L2 (kernels)": Setting(0.0, 1e-2, 0.0),
    "L1 (prox_adam)": Setting(0.0, 0.0, 3e-3),
    "dropout 0.5 + L2": Setting(0.5, 3e-3, 0.0),
}


class MLP(nnx.Module):
  """64 -> width -> width -> 10, ReLU, dropout after each hidden layer."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.hidden1 = nnx.Linear(64, width, rngs=rngs)
    self.dropout1 = jnnx.Dropout(0.0)
    self.hidden2 = nnx.Linear(width, width, rngs=rngs)
    self.dropout2 = jnnx.Dropout(0.0)
    self.out = nnx.Linear(width, 10, rngs=rngs)

  def __call__(self, x, *, key=None):
    """Training mode with a key, evaluation mode (no dropout) without one."""
    keys = jax.random.split(key) if key is not None else (None, None)
    x = self.dropout1(nnx.relu(self.hidden1(x)), deterministic=key is None, rngs=keys[0])
    x = self.dropout2(nnx.relu(self.hidden2(x)), deterministic=key is None, rngs=keys[1])
    return self.out(x)


def load_data(train_size: int, label_noise: float, seed: int):
  """Digits scaled to [0, 1]: ``train_size`` training images drawn with ``seed`` from
  the images that are not in the fixed test set, a share ``label_noise`` of them given
  a wrong label (another class, at random). The test labels are never changed.

  Returns ``(x_train, y_train, wrong), (x_test, y_test)``; ``wrong`` marks the
  training images whose label was changed.
  """
  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  x_pool, x_test, y_pool, y_test = model_selection.train_test_split(
      x, y, test_size=TEST_SIZE, random_state=TEST_SPLIT_SEED, stratify=y)
  if train_size < len(x_pool):
    x_pool, _, y_pool, _ = model_selection.train_test_split(
        x_pool, y_pool, train_size=train_size, random_state=seed, stratify=y_pool)
  rng = np.random.default_rng(seed)
  wrong = np.zeros(len(y_pool), bool)
  wrong[rng.choice(len(y_pool), round(label_noise * len(y_pool)), replace=False)] = True
  # Adding 1..9 modulo 10 gives each changed image a class other than its own.
  y_noisy = np.where(wrong, (y_pool + rng.integers(1, 10, len(y_pool))) % 10, y_pool)
  return (x_pool, y_noisy, wrong), (x_test, y_test)


# What the program measures after every epoch, per setting, in this order.
METRICS = ("train acc", "test acc", "test CE", "wrong labels learned")


class Program(NamedTuple):
  """The pure functions of one setting; ``vmap`` runs them for many settings at once."""
  init: Callable  # (params, setting) -> optimizer state
  epoch: Callable  # (params, opt_state, setting, key) -> (params, opt_state, metrics)
  logits: Callable  # (params, setting, x, key=None) -> logits; dropout on with a key


def make_program(graphdef, train, test) -> Program:
  """The training program of :class:`MLP` on ``train``, evaluated on ``test``."""
  (x_train, y_train, wrong), (x_test, y_test) = train, test
  kernels = jr.select.kernels()

  def logits(params, setting, x, key=None):
    model = nnx.merge(graphdef, params)
    # A traced rate (one per setting under vmap), set on this copy of the model only.
    model.dropout1.rate = model.dropout2.rate = setting.dropout
    return model(x, key=key)

  def optimizer(setting):
    # With a strength of 0 the prox is the identity, and prox_adam is optax.adam.
    return transforms.prox_adam(LEARNING_RATE, jr.L1(setting.l1, where=kernels))

  def loss(params, setting, x, y, key):
    data = optax.softmax_cross_entropy_with_integer_labels(
        logits(params, setting, x, key), y).mean()
    return data + jr.L2(setting.l2, where=kernels)(params)

  def train_step(carry, batch, setting):
    params, opt_state = carry
    x, y, key = batch
    grads = jax.grad(loss)(params, setting, x, y, key)
    updates, opt_state = optimizer(setting).update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  def evaluate(params, setting):
    """The :data:`METRICS`, without dropout."""
    train_pred = jnp.argmax(logits(params, setting, x_train), -1)
    test_logits = logits(params, setting, x_test)
    return jnp.stack([
        jnp.mean(train_pred == y_train),
        jnp.mean(jnp.argmax(test_logits, -1) == y_test),
        optax.softmax_cross_entropy_with_integer_labels(test_logits, y_test).mean(),
        jnp.sum((train_pred == y_train) & wrong) / jnp.maximum(jnp.sum(wrong), 1)])

  def epoch(params, opt_state, setting, key):
    """One pass over the training set in shuffled minibatches; then the metrics."""
    order_key, dropout_key = jax.random.split(key)
    steps = len(x_train) // BATCH_SIZE
    order = jax.random.permutation(order_key, len(x_train))[:steps * BATCH_SIZE]
    batches = (x_train[order].reshape(steps, BATCH_SIZE, -1),
               y_train[order].reshape(steps, BATCH_SIZE),
               jax.random.split(dropout_key, steps))
    (params, opt_state), _ = jax.lax.scan(
        lambda carry, batch: train_step(carry, batch, setting), (params, opt_state), batches)
    return params, opt_state, evaluate(params, setting)

  def init(params, setting):
    return optimizer(setting).init(params)

  return Program(init, epoch, logits)


def kernel_weights(params) -> np.ndarray:
  """Every kernel entry of one setting's params, flattened."""
  flags = jr.select.mask(jr.select.kernels(), params)
  return np.concatenate([np.ravel(w) for selected, w in
                         zip(jax.tree.leaves(flags), jax.tree.leaves(params)) if selected])


def train_all(args):
  """Trains every setting at once; returns (history, kernel weights, seconds, data)."""
  train, test = load_data(args.train_size, args.label_noise, args.seed)
  init_key, train_key = jax.random.split(jax.random.key(args.seed))
  graphdef, params = nnx.split(MLP(args.width, rngs=nnx.Rngs(params=init_key)), nnx.Param)
  settings = Setting(*(jnp.asarray(v, jnp.float32) for v in zip(*SETTINGS.values())))
  count = len(SETTINGS)
  # Every setting starts from the same weights and sees the same batches and keys.
  params = jax.tree.map(lambda p: jnp.broadcast_to(p, (count, *p.shape)), params)
  program = make_program(graphdef, jax.tree.map(jnp.asarray, train),
                         jax.tree.map(jnp.asarray, test))
  start = time.perf_counter()
  opt_state = jax.jit(jax.vmap(program.init))(params, settings)
  epoch = jax.jit(jax.vmap(program.epoch, in_axes=(0, 0, 0, None)))
  history = []  # per epoch: (settings, len(METRICS))
  bar = tqdm(jax.random.split(train_key, args.epochs), unit="epoch",
             desc=f"{count} settings in one vmapped program")
  for key in bar:
    params, opt_state, metrics = epoch(params, opt_state, settings, key)
    history.append(np.asarray(metrics))  # Waits for the epoch: the bar shows real progress.
    bar.set_postfix(test_acc="/".join(f"{a:.2f}" for a in history[-1][:, 1]), refresh=False)
  seconds = time.perf_counter() - start
  weights = [kernel_weights(jax.tree.map(lambda p: p[i], params)) for i in range(count)]
  return np.stack(history), weights, seconds, (train, test)


def print_table(args, history, weights, seconds, data):
  (x_train, _, wrong), (x_test, _) = data
  print(f"\nMLP 64-{args.width}-{args.width}-10 on {len(x_train)} digits "
        f"({np.sum(wrong)} of them with a wrong label), tested on {len(x_test)} others "
        f"(all labels right); {args.epochs} epochs of Adam, lr {LEARNING_RATE}, batch {BATCH_SIZE}")
  header = (f"{'setting':<18}{'dropout':>8}{'L2 λ':>7}{'L1 λ':>7}{'train acc':>11}"
            f"{'test acc':>10}{'gap':>8}{'test CE':>9}{'wrong labels learned':>22}"
            f"{'zero weights':>14}")
  print(header)
  print("-" * len(header))
  for (name, setting), final, w in zip(SETTINGS.items(), history[-1], weights):
    train_acc, test_acc, test_ce, learned = final
    print(f"{name:<18}{setting.dropout:>8g}{setting.l2:>7g}{setting.l1:>7g}"
          f"{train_acc:>11.3f}{test_acc:>10.3f}{train_acc - test_acc:>8.3f}{test_ce:>9.3f}"
          f"{learned:>22.0%}{np.mean(w == 0):>14.1%}")
  print(f"wall time: {seconds:.1f} s for the {len(SETTINGS)} settings together "
        "(one jitted, vmapped program, compilation included)")
  print("gap = train acc - test acc (train acc is measured against the training labels, "
        "wrong ones included); test CE = mean cross-entropy on the test images; wrong "
        "labels learned = share of the mislabelled training images predicted as "
        "labelled; zero weights = share of kernel entries exactly 0")


def plot(history, weights, label_noise: float, path: pathlib.Path):
  fig, (test, train, hist) = plt.subplots(1, 3, figsize=(16, 4.6))
  epochs = np.arange(1, len(history) + 1)
  colors = dict(zip(SETTINGS, plt.cm.tab10.colors))
  for i, name in enumerate(SETTINGS):
    test.plot(epochs, history[:, i, 1], color=colors[name], label=name)
    train.plot(epochs, history[:, i, 0], color=colors[name], label=name)
  low = max(0.0, history[-1, :, :2].min() - 0.1)
  test.set(xlabel="epoch", ylabel="accuracy", ylim=(low, 1.01),
           title="test accuracy (correct labels)")
  train.set(xlabel="epoch", ylim=(low, 1.01),
            title=f"train accuracy (against the labels given, {label_noise:.0%} wrong)")
  ideal = train.axhline(1 - label_noise, color="gray", linestyle=":",
                        label="every right label learned, no wrong one")
  train.legend(handles=[ideal], loc="lower right", fontsize=9)
  for ax in (test, train):
    ax.grid(alpha=0.3)
  test.legend(loc="lower right", fontsize=9)
  # |w| on a log axis and, left of it, a bar for the weights that are exactly 0:
  # L2 shrinks the weights no data gradient holds up towards 0 (to 1e-30 and below),
  # but only the L1 prox puts them at 0.
  edges = np.logspace(-40, 0, 81)
  zero_at, zero_width = edges[0] / 1e3, edges[0] / 1e3 * 0.9
  for name in ("none", "L2 (kernels)", "L1 (prox_adam)"):
    w = np.abs(weights[list(SETTINGS).index(name)])
    hist.hist(np.clip(w[w > 0], edges[0], edges[-1]), bins=edges, histtype="step",
              color=colors[name], linewidth=1.5,
              label=f"{name}: {np.mean(w == 0):.0%} exactly 0")
    hist.bar(zero_at, np.sum(w == 0), width=zero_width, color=colors[name], alpha=0.6)
  hist.set_xscale("log")
  hist.set_yscale("log")
  hist.set_xticks([zero_at, 1e-30, 1e-20, 1e-10, 1], ["0", "1e-30", "1e-20", "1e-10", "1"])
  hist.set(xlabel="|weight|", ylabel="count", title="kernel weights after training")
  hist.legend(loc="upper center", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--epochs", type=int, default=150, help="passes over the training set")
  parser.add_argument("--train-size", type=int, default=300,
                      help=f"training images (the {TEST_SIZE} test images stay the same)")
  parser.add_argument("--label-noise", type=float, default=0.2,
                      help="share of the training images given a wrong label")
  parser.add_argument("--width", type=int, default=128, help="units in each hidden layer")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out"),
                      help="folder for overfitting.png")
  parser.add_argument("--seed", type=int, default=0,
                      help="weights, training images, wrong labels, batch order, dropout masks")
  args = parser.parse_args(argv)
  pool = 1797 - TEST_SIZE  # load_digits has 1797 images.
  if args.epochs < 1:
    parser.error(f"--epochs must be >= 1, got {args.epochs}")
  if not BATCH_SIZE <= args.train_size <= pool:
    parser.error(f"--train-size must be in [{BATCH_SIZE}, {pool}], got {args.train_size}")
  if not 0 <= args.label_noise < 1:
    parser.error(f"--label-noise must be in [0, 1), got {args.label_noise}")
  if args.width < 1:
    parser.error(f"--width must be >= 1, got {args.width}")
  history, weights, seconds, data = train_all(args)
  print_table(args, history, weights, seconds, data)
  args.out.mkdir(parents=True, exist_ok=True)
  path = args.out / "overfitting.png"
  plot(history, weights, args.label_noise, path)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
