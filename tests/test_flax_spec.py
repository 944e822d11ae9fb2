"""The Flax modules come from one specification each (jaxreg/_flax_spec.py): linen and
NNX define the same modules with the same fields and defaults, each as its spec says,
with Flax's own ``Dropout`` flags, and each spec calls its op with the op's arguments.

Read off the classes (linen dataclass fields, the NNX ``__init__`` signature), never
off the specs alone, so a hand-written or drifted class would fail here.
"""

import dataclasses
import inspect
import pickle
import subprocess
import sys

from flax import nnx
import flax.linen as nn
import pytest

from jaxreg import _flax_spec
from jaxreg import linen as jl
from jaxreg import nnx as jn
from jaxreg import stochastic

SPECS = {spec.name: spec for spec in (*_flax_spec.RANDOM,
                                      _flax_spec.ACTIVITY_REGULARIZATION)}
RANDOM = [spec.name for spec in _flax_spec.RANDOM]
# The flags each random module adds, with Flax's defaults: linen's ``deterministic`` is
# None (given once, to the constructor or the call), NNX's False, as in Flax.
LINEN_FLAGS = {"deterministic": None, "rng_collection": "dropout"}
NNX_FLAGS = {"deterministic": False, "rng_collection": "dropout", "rngs": None}


def linen_fields(cls):
  """``[(name, default, type)]`` of a linen module's fields, Flax's own left out."""
  return [(f.name, _flax_spec.REQUIRED if f.default is dataclasses.MISSING else f.default,
           f.type) for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def nnx_fields(cls):
  """``[(name, default, type)]`` of an NNX module's ``__init__`` arguments."""
  parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # self
  return [(p.name, p.default, p.annotation) for p in parameters]


def spec_fields(spec):
  return [(f.name, f.default, f.type) for f in spec.fields]


def without(fields, flags):
  return [field for field in fields if field[0] not in flags]


def modules(module, base):
  return {name for name in module.__all__
          if isinstance(getattr(module, name), type) and issubclass(getattr(module, name), base)}


def test_linen_and_nnx_define_the_same_modules_one_per_spec():
  assert modules(jl, nn.Module) == modules(jn, nnx.Module) == set(SPECS)


@pytest.mark.parametrize("name", list(SPECS))
def test_linen_and_nnx_have_the_fields_and_defaults_of_the_spec(name):
  spec, linen, nnx_ = SPECS[name], getattr(jl, name), getattr(jn, name)
  flags = (LINEN_FLAGS, NNX_FLAGS) if spec.stream else ({}, {})
  assert without(linen_fields(linen), flags[0]) == spec_fields(spec)
  assert without(nnx_fields(nnx_), flags[1]) == spec_fields(spec)
  # The flags sit where the spec puts them, with Flax's defaults.
  linen_flags = [(n, d) for n, d, _ in linen_fields(linen) if n in flags[0]]
  nnx_flags = [(n, d) for n, d, _ in nnx_fields(nnx_) if n in flags[1]]
  assert linen_flags == list(flags[0].items())
  assert nnx_flags == list(flags[1].items())
  assert [n for n, _, _ in linen_fields(linen)] == [
      f.name for f in spec.with_flags(jl._flags(spec.stream))]
  assert [n for n, _, _ in nnx_fields(nnx_)] == [
      f.name for f in spec.with_flags(jn._flags(spec.stream))]


@pytest.mark.parametrize("name", list(SPECS))
def test_nnx_takes_by_position_what_the_spec_says(name):
  spec = SPECS[name]
  parameters = inspect.signature(getattr(jn, name).__init__).parameters
  positional = [p for p, v in parameters.items()
                if v.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD][1:]  # self
  assert positional == [f.name for f in spec.fields if f.by_position]
  assert all(v.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        inspect.Parameter.KEYWORD_ONLY) for v in parameters.values())


def test_dropout_has_the_flax_dropout_fields_and_arguments_in_order():
  theirs = [(n, d) for n, d, _ in linen_fields(nn.Dropout)]
  ours = [(n, d) for n, d, _ in linen_fields(jl.Dropout)]
  assert ours[:len(theirs)] == theirs
  theirs = list(inspect.signature(nnx.Dropout.__init__).parameters.values())
  ours = list(inspect.signature(jn.Dropout.__init__).parameters.values())
  assert [(p.name, p.kind, p.default) for p in ours[:len(theirs)]] == [
      (p.name, p.kind, p.default) for p in theirs]


@pytest.mark.parametrize("name", RANDOM)
def test_each_spec_calls_its_op_with_the_ops_own_arguments_and_defaults(name):
  spec = SPECS[name]
  assert spec.op is getattr(stochastic, spec.op.__name__)
  assert spec.draws in (stochastic.draws_at_rate, stochastic.draws_at_stddev)
  assert spec.amount == spec.fields[0].name
  op = list(inspect.signature(spec.op).parameters.values())[2:]  # key, x
  positional = [p.name for p in op if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD]
  assert positional == [f.name for f in spec.fields if f.required]
  defaults = {p.name: p.default for p in op if p.kind == inspect.Parameter.KEYWORD_ONLY}
  assert "deterministic" in defaults
  for field in spec.fields:
    if not field.required:
      assert defaults[field.name] == field.default, field.name


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("module", [jl, jn], ids=["linen", "nnx"])
def test_classes_are_named_documented_and_picklable(module, name):
  cls = getattr(module, name)
  assert (cls.__module__, cls.__qualname__) == (module.__name__, name)
  assert pickle.loads(pickle.dumps(cls)) is cls
  doc = inspect.getdoc(cls)
  assert doc.startswith(SPECS[name].doc)  # The formula.
  for field, _, _ in (linen_fields if module is jl else nnx_fields)(cls):
    assert f"\n  {field}: " in doc, field
  assert "\n>>> " in doc  # An example, which the doctests run.


def test_the_spec_module_imports_no_flax():
  code = "import sys, jaxreg._flax_spec; assert not any(m.startswith('flax') for m in sys.modules)"
  subprocess.run([sys.executable, "-c", code], check=True)
