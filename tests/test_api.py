"""The public surface: every name of the previous layout still imports from its path,
old module paths warn, and ``dir`` shows what a user may use and nothing private."""

import importlib
import pkgutil
import subprocess
import sys
import types
import warnings

import pytest

import jaxreg as jr

# Every public name each module exported before the package was split into
# jaxreg.masks/, jaxreg.stochastic/, jaxreg.attention/ and jaxreg.transforms/.
NAMES_BEFORE_THE_SPLIT = {
    "jaxreg": [
        "Constraint", "ElasticNet", "GroupLasso", "L1", "L2", "MaxNorm", "MinMaxNorm",
        "NonNeg", "Orthogonal", "Regularizer", "Sum", "UnitNorm", "alpha_dropout",
        "drop_connect", "drop_path", "drop_path_rates", "dropblock", "dropout",
        "dropout_mask", "gaussian_dropout", "gaussian_noise", "l1", "l1_l2", "l2",
        "mc_predict"],
    "jaxreg.activity": ["ACTIVITY_REDUCTIONS", "activity_penalty", "check_activity_reduction"],
    "jaxreg.attention": ["IMPLEMENTATIONS", "dot_product_attention"],
    "jaxreg.constraints": ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"],
    "jaxreg.cv": ["CVResult", "alpha_max", "cross_validate", "kfold", "lasso_path"],
    "jaxreg.masks": [
        "KeepMask", "RESIDUALS", "as_residual", "check_residual", "keep_mask",
        "keep_probability", "mask_shape", "pack", "random_bits", "residual_policy",
        "resolution_bits", "scale_kept", "standard_normal", "unpack"],
    "jaxreg.orthogonal": ["Orthogonal"],
    "jaxreg.paths": ["alpha_max", "lasso_path"],
    "jaxreg.per_layer": ["declared"],
    "jaxreg.prox": [
        "KERAS_EPSILON", "elastic_net", "group_norm", "group_soft_threshold",
        "hard_threshold", "max_norm", "min_max_norm", "non_negative", "nonneg_ridge",
        "nonneg_soft_threshold", "ridge", "soft_threshold", "unit_norm"],
    "jaxreg.regularizers": [
        "ElasticNet", "GroupLasso", "L1", "L2", "Regularizer", "Sum", "l1", "l1_l2", "l2"],
    "jaxreg.select": [
        "AllowEmpty", "BoolTree", "ByPath", "Callback", "Exclude", "Floating", "Kernels",
        "Leaf", "Paths", "allow_empty", "as_selector", "by_path", "exclude", "kernels",
        "leaves", "mask", "path_string", "paths", "selected", "selection"],
    "jaxreg.transforms": [
        "FISTAState", "FtrlState", "NO_PARAMS_MSG", "ProxAdagradState", "ProxAdamState",
        "ProxSGDState", "ProximalState", "add_gradient", "ftrl", "prox_adagrad",
        "prox_adam", "prox_sgd", "proximal"],
    "jaxreg.linen": [
        "ActivityRegularization", "AlphaDropout", "DropBlock", "DropPath", "Dropout",
        "GaussianDropout", "GaussianNoise", "LOSSES", "Regularized", "activity_loss",
        "param_loss", "regularizer", "with_regularizer"],
    "jaxreg.nnx": [
        "ActivityLoss", "ActivityRegularization", "AlphaDropout", "DropBlock", "DropPath",
        "Dropout", "GaussianDropout", "GaussianNoise", "REGULARIZER", "activity_loss",
        "param_loss", "regularizer"],
}
# Module paths that moved; each still imports, with a DeprecationWarning per name.
MOVED = {
    "jaxreg.dropout": ("jaxreg.stochastic", [
        "alpha_dropout", "draws_at_rate", "draws_at_stddev", "drop_connect", "drop_path",
        "drop_path_rates", "dropblock", "dropout", "dropout_mask", "gaussian_dropout",
        "gaussian_noise", "mc_predict"]),
    "jaxreg.adaptive": ("jaxreg.transforms", [
        "FtrlState", "ProxAdagradState", "ftrl", "prox_adagrad"]),
}
# Every module whose dotted name has no part starting with "_" (but for the old paths
# above, which forward to the new ones): each declares __all__.
PUBLIC_MODULES = sorted(
    info.name for info in pkgutil.walk_packages(jr.__path__, "jaxreg.")
    if not any(part.startswith("_") for part in info.name.split("."))
    and info.name not in MOVED)


@pytest.mark.parametrize("module", list(NAMES_BEFORE_THE_SPLIT))
def test_every_name_of_the_previous_layout_imports_from_its_path(module):
  mod = importlib.import_module(module)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # None of these paths moved: no warning.
    missing = [name for name in NAMES_BEFORE_THE_SPLIT[module] if not hasattr(mod, name)]
  assert not missing
  assert set(NAMES_BEFORE_THE_SPLIT[module]) <= set(mod.__all__)


@pytest.mark.parametrize("old", list(MOVED))
def test_a_moved_module_path_still_imports_and_warns(old):
  new, names = MOVED[old]
  for name in names:
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: import {name} from {new}"):
      value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_the_old_from_import_of_dropout_warns_and_gives_the_function():
  with pytest.warns(DeprecationWarning, match="jaxreg.dropout is deprecated"):
    from jaxreg.dropout import gaussian_noise  # pylint: disable=import-outside-toplevel
  assert gaussian_noise is jr.gaussian_noise


def test_jr_dropout_is_the_function_whatever_was_imported_first():
  # A fresh interpreter, so that no earlier import decides the order.
  code = ("import jaxreg.dropout, jaxreg.stochastic, jaxreg; "
          "import types; assert callable(jaxreg.dropout) and not isinstance("
          "jaxreg.dropout, types.ModuleType), jaxreg.dropout; "
          "assert jaxreg.stochastic.dropout is jaxreg.dropout")
  subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_module_declares_all_and_every_entry_resolves(module):
  mod = importlib.import_module(module)
  assert len(set(mod.__all__)) == len(mod.__all__)  # No name twice.
  assert [name for name in mod.__all__ if not hasattr(mod, name)] == []
  assert not [name for name in mod.__all__ if name.startswith("_")]


def test_dir_lists_the_public_names_the_modules_and_the_lazy_adapters_only():
  listed = dir(jr)
  assert set(jr.__all__) <= set(listed)
  assert {"linen", "nnx", "transforms", "stochastic", "attention", "cv", "prox",
          "select", "masks"} <= set(listed)
  assert [name for name in listed if name.startswith("_") and name != "__version__"] == []
  for name in listed:
    assert getattr(jr, name) is not None


def test_lazy_adapters_load_on_first_access():
  code = ("import sys, jaxreg as jr; assert 'flax' not in sys.modules; "
          "assert 'optax' not in sys.modules; jr.transforms.prox_sgd; jr.nnx.Dropout; "
          "jr.linen.Dropout; assert isinstance(jr.transforms, type(sys))")
  subprocess.run([sys.executable, "-c", code], check=True)
