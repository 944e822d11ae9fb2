"""Data, formulas and checks that the linen and NNX tests share."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg.select import path_string

# rbg keys compile in a fraction of threefry's time on CPU; the tests that pass keys
# straight to Flax use threefry, the default.
KEY = jax.random.key(0, impl="rbg")
# 16 examples: DropPath's 2^16 batch masks make two equal draws a 2^-16 event.
SHAPE = (16, 6, 6, 3)
RATES = (0.2, 0.75)
# The constructor arguments of every random module, the same in linen and NNX.
MODULE_ARGS = {
    "Dropout": (0.5,),
    "AlphaDropout": (0.5,),
    "GaussianDropout": (0.5,),
    "GaussianNoise": (1.0,),
    "DropPath": (0.5,),
    "DropBlock": (0.3, 2),
}


def key(seed):
  return jax.random.key(seed, impl="rbg")


def normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def assert_all_differ(outputs, label=""):
  outputs = [np.asarray(o) for o in outputs]
  for i in range(len(outputs)):
    for j in range(i):
      assert not np.array_equal(outputs[i], outputs[j]), (label, i, j)


def regression_data():
  x = normal(10, (64, 4))
  return x, jnp.tanh(x @ normal(11, (4, 1)))


def stripes_data():
  """Horizontal stripes (class 0) against vertical ones (class 1), plus noise."""
  labels = np.arange(32) % 2
  stripes = (np.arange(8) % 2).astype(np.float32)
  images = np.where(labels[:, None, None] == 0, stripes[None, :, None], stripes[None, None, :])
  return (images + 0.3 * normal(12, (32, 8, 8)))[..., None], jnp.asarray(labels)


def paths(tree, keep=lambda leaf: True):
  return {path_string(path) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
          if keep(leaf)}


def assert_mc_moments(mean, variance, h, w, b, q, n):
  """Sample moments of ``Σ_j w_j h_j m_j/q + b``, ``m_j ~ Bernoulli(q)``, against
  their closed forms, within 5σ of each estimator."""
  a = h * w  # each hidden unit's share of the output
  exact_mean = a.sum(1) + b
  exact_var = (a ** 2).sum(1) * (1 - q) / q
  # The variance of a sample variance is (κ4 + 2σ⁴)/n; cumulants of a sum add up.
  kappa4 = ((a / q) ** 4).sum(1) * q * (1 - q) * (1 - 6 * q * (1 - q))
  np.testing.assert_array_less(np.abs(mean - exact_mean), 5 * np.sqrt(exact_var / n))
  np.testing.assert_array_less(np.abs(variance - exact_var * (n - 1) / n),
                               5 * np.sqrt((kappa4 + 2 * exact_var ** 2) / n))


def peer_option_cases(module, x, k):
  """``(layer, expected output)`` for the options that torchvision, timm and Keras users
  reach for, built from ``module`` (``jaxreg.linen`` or ``jaxreg.nnx``): DropPath
  ``per="batch"``, DropBlock ``couple_channels`` on ``NCHW``, AlphaDropout
  ``broadcast_dims``. The expected outputs are the functions' with the key ``k``."""
  import jaxreg as jr  # pylint: disable=g-import-not-at-top
  return [
      (module.DropPath(0.5, per="batch"), jr.drop_path(k, x, 0.5, per="batch")),
      (module.DropBlock(0.3, 2, couple_channels=True, data_format="channels_first"),
       jr.dropblock(k, x, 0.3, 2, couple_channels=True, data_format="channels_first")),
      (module.AlphaDropout(0.3, broadcast_dims=(1,)),
       jr.alpha_dropout(k, x, 0.3, broadcast_dims=(1,))),
  ]
