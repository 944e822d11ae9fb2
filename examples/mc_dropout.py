"""Monte-Carlo dropout on the digits MLP: a model that knows when it does not know.

The MLP of ``overfitting.py`` is trained with dropout 0.5 (all labels right). At test
time ``jr.mc_predict`` runs it with dropout still on, under many independent keys at
once (one ``vmap``), and averages the softmax outputs (Gal & Ghahramani, 2016). The
entropy of that mean, ``H = -Σ_c p̄_c log p̄_c``, is the predictive uncertainty.

Sorted by entropy into tenths, the test images show it: the most uncertain tenth is the
least accurate, by far, and keeping only the images the model is sure of raises the
accuracy. The script prints the accuracy per tenth and writes ``<out>/mc_dropout.png``.

  python examples/mc_dropout.py
  python examples/mc_dropout.py --help
"""

from __future__ import annotations

import argparse
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")  # Files only: the script never opens a window.
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

import jaxreg as jr
# The model, the data and the training program of the main demo (this folder).
from overfitting import MLP, Setting, load_data, make_program


def train(args):
  """Trains the MLP with dropout 0.5; returns (params, program, setting, test data)."""
  train_data, (x_test, y_test) = load_data(args.train_size, label_noise=0.0, seed=args.seed)
  init_key, train_key = jax.random.split(jax.random.key(args.seed))
  graphdef, params = nnx.split(MLP(args.width, rngs=nnx.Rngs(params=init_key)), nnx.Param)
  program = make_program(graphdef, jax.tree.map(jnp.asarray, train_data),
                         (jnp.asarray(x_test), jnp.asarray(y_test)))
  setting = Setting(dropout=0.5, l2=0.0, l1=0.0)
  opt_state = program.init(params, setting)
  epoch = jax.jit(program.epoch)
  for key in tqdm(jax.random.split(train_key, args.epochs), desc="training", unit="epoch"):
    params, opt_state, _ = epoch(params, opt_state, setting, key)
  return params, program, setting, (x_test, y_test)


def entropy(p):
  """Entropy in nats of each row of probabilities; 0·log 0 counts as 0."""
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def plot(deciles, coverage, accuracy_kept, single_accuracy, path: pathlib.Path):
  fig, (bars, curve) = plt.subplots(1, 2, figsize=(11, 4.2))
  bars.bar(np.arange(1, len(deciles) + 1), deciles, color="tab:blue")
  bars.set(xlabel="tenth of the test images by predictive entropy (1 = most certain)",
           ylabel="accuracy", title="accuracy against MC-dropout uncertainty",
           ylim=(min(deciles.min() - 0.1, 0.9), 1.0), xticks=np.arange(1, len(deciles) + 1))
  curve.plot(coverage, accuracy_kept, color="tab:blue", label="keep the most certain")
  curve.axhline(single_accuracy, color="gray", linestyle=":",
                label="all images, dropout off")
  curve.set(xlabel="share of test images kept", ylabel="accuracy on those kept",
            title="refusing the uncertain images")
  curve.legend(loc="lower left")
  for ax in (bars, curve):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--epochs", type=int, default=60, help="passes over the training set")
  parser.add_argument("--train-size", type=int, default=300, help="training images")
  parser.add_argument("--width", type=int, default=128, help="units in each hidden layer")
  parser.add_argument("--samples", type=int, default=100,
                      help="Monte-Carlo samples (dropout masks) per test image")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out"),
                      help="folder for mc_dropout.png")
  parser.add_argument("--seed", type=int, default=0, help="weights, data, masks")
  args = parser.parse_args(argv)
  for flag in ("epochs", "train_size", "width", "samples"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")

  params, program, setting, (x_test, y_test) = train(args)

  def probabilities(key, x):
    return jax.nn.softmax(program.logits(params, setting, x, key))

  predict = jax.jit(lambda key, x: jr.mc_predict(probabilities, key, x,
                                                  num_samples=args.samples))
  mean, _ = predict(jax.random.key(args.seed + 1), x_test)  # the mean over the masks
  mean = np.asarray(mean)
  correct = mean.argmax(-1) == y_test
  uncertainty = entropy(mean)
  dropout_off = np.asarray(program.logits(params, setting, x_test)).argmax(-1)
  single_accuracy = float(np.mean(dropout_off == y_test))

  order = np.argsort(uncertainty, kind="stable")  # most certain first
  tenths = np.array_split(order, 10)
  deciles = np.array([correct[t].mean() for t in tenths])
  print(f"\nMLP 64-{args.width}-{args.width}-10 trained with dropout 0.5 on {args.train_size} "
        f"digits; {len(y_test)} test images, {args.samples} dropout masks each")
  print(f"accuracy: {single_accuracy:.3f} with dropout off, {correct.mean():.3f} from the "
        "Monte-Carlo mean")
  print(f"{'tenth by entropy':>17}{'entropy (nats)':>18}{'accuracy':>10}")
  for i, (tenth, accuracy) in enumerate(zip(tenths, deciles), 1):
    span = f"{uncertainty[tenth].min():.3f}-{uncertainty[tenth].max():.3f}"
    print(f"{i:>17d}{span:>18}{accuracy:>10.3f}")
  least = int(np.argmin(deciles)) + 1
  print(f"least accurate tenth: {least} "
        f"({'the most uncertain' if least == 10 else 'not the most uncertain'})")

  kept = np.arange(1, len(order) + 1)
  accuracy_kept = np.cumsum(correct[order]) / kept
  coverage = kept / len(order)
  print(f"keeping the 90% most certain images: accuracy "
        f"{accuracy_kept[int(0.9 * len(order)) - 1]:.3f}")
  args.out.mkdir(parents=True, exist_ok=True)
  path = args.out / "mc_dropout.png"
  plot(deciles, coverage, accuracy_kept, single_accuracy, path)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
