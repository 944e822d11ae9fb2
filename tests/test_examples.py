"""Every script in examples/ runs end to end, with small settings, so that none can rot.

Each script runs in a subprocess as a user runs it (``python examples/x.py ...``): its
argparse flags, its plotting (matplotlib's Agg backend) and its writing to ``--out``
are exercised. A new example adds its flags to ``SMOKE_ARGS``; a script without an
entry fails ``test_every_example_has_smoke_args``. ``{out}`` in the flags stands for a
fresh temporary folder.

A run costs mostly JAX's start-up and compilation, so the demo scripts keep their
default model and data with fewer epochs (about as fast as a tiny model), and the tests
below check what each script claims, not only that it finishes.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

import cpu_devices

SMOKE_ARGS = {
    # At its defaults: what it claims about the sharded run is claimed for those.
    "data_parallel.py": [],
    "overfitting.py": ["--epochs", "60", "--out", "{out}"],
    "lasso_path.py": ["--out", "{out}"],
    "mc_dropout.py": ["--epochs", "20", "--samples", "30", "--out", "{out}"],
    "choose_strength.py": ["--folds", "2", "--steps", "5", "--width", "8", "--grid-size", "2",
                           "--alphas", "5", "--out", "{out}"],
}

_EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Run:
  """A finished run of one example: its output and the folder it wrote to."""

  def __init__(self, script: str, args: list[str], out: pathlib.Path):
    self.out = out
    args = [arg.replace("{out}", str(out)) for arg in args]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    process = subprocess.run([sys.executable, str(_EXAMPLES / script), *args],
                             capture_output=True, text=True, env=env, timeout=300)
    self.returncode, self.stdout, self.stderr = (
        process.returncode, process.stdout, process.stderr)


@pytest.fixture(scope="session")
def run(once_per_session, tmp_path_factory):
  """``run(script, args=None)``: the script's run with its smoke flags (or ``args``),
  made once per session and shared by the tests that read it."""

  def get(script: str, args: list[str] | None = None) -> Run:
    args = SMOKE_ARGS[script] if args is None else args
    make = lambda: Run(script, args, tmp_path_factory.mktemp(script.removesuffix(".py")))
    return once_per_session(" ".join(["example", script, *args]).replace("/", "_"), make)

  return get


def _assert_png(path: pathlib.Path):
  assert path.is_file(), f"{path} was not written"
  assert path.read_bytes()[:8] == _PNG_MAGIC, f"{path} is not a PNG"
  assert path.stat().st_size > 10_000, f"{path} is too small to hold a plot"


def _table_rows(stdout: str, header_word: str) -> list[list[str]]:
  """The rows under the first line that contains ``header_word`` (after a dashed line if
  there is one), up to the first line that is not a row of the table."""
  lines = stdout.splitlines()
  start = next(i for i, line in enumerate(lines) if header_word in line) + 1
  if lines[start].startswith("---"):
    start += 1
  rows = []
  for line in lines[start:]:
    if not re.search(r"\d", line) or ":" in line:
      break
    rows.append(line.split())
  return rows


def test_every_example_has_smoke_args():
  scripts = {path.name for path in _EXAMPLES.glob("*.py")}
  assert scripts - set(SMOKE_ARGS) == set(), (
      "add these examples to SMOKE_ARGS in tests/test_examples.py")
  assert set(SMOKE_ARGS) - scripts == set(), "SMOKE_ARGS names scripts that do not exist"


@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_example_runs(script, run):
  result = run(script)
  assert result.returncode == 0, f"{script} failed:\n{result.stderr[-3000:]}"
  assert result.stdout.strip(), f"{script} printed nothing"


def test_overfitting_prints_the_table_and_writes_the_plot(run):
  result = run("overfitting.py")
  assert result.returncode == 0, result.stderr[-3000:]
  header = next(line for line in result.stdout.splitlines() if line.startswith("setting"))
  for column in ("train acc", "test acc", "gap", "test CE", "zero weights"):
    assert column in header
  rows = _table_rows(result.stdout, "setting")
  names = [" ".join(row[:-9]) for row in rows]
  assert names == ["none", "dropout 0.5", "L2 (kernels)", "L1 (prox_adam)",
                   "dropout 0.5 + L2"]
  for row in rows:
    train_acc, test_acc, gap = (float(v) for v in row[-6:-3])
    assert 0 <= train_acc <= 1 and 0 <= test_acc <= 1
    assert gap == pytest.approx(train_acc - test_acc, abs=1.5e-3)
  assert "wall time:" in result.stdout
  _assert_png(result.out / "overfitting.png")


def test_overfitting_regularization_closes_the_gap(run):
  """The demo's claims: the unregularized gap is the largest by far, L1 by prox_adam
  zeroes most kernel weights, and L2 none."""
  result = run("overfitting.py")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {" ".join(row[:-9]): row[-9:] for row in _table_rows(result.stdout, "setting")}
  gap = {name: float(row[5]) for name, row in rows.items()}
  test_acc = {name: float(row[4]) for name, row in rows.items()}
  zeros = {name: float(row[8].rstrip("%")) / 100 for name, row in rows.items()}
  best = max((name for name in rows if name != "none"), key=test_acc.get)
  assert test_acc[best] > test_acc["none"] + 0.03, test_acc
  assert gap["none"] > gap[best] + 0.1, gap
  assert zeros["L1 (prox_adam)"] > 0.5, zeros
  assert zeros["L2 (kernels)"] < 0.01, zeros
  assert zeros["none"] == 0 and zeros["dropout 0.5"] == 0, zeros


def test_overfitting_rejects_bad_flags(run):
  result = run("overfitting.py", ["--train-size", "5"])
  assert result.returncode == 2
  assert "--train-size" in result.stderr and "got 5" in result.stderr


def test_lasso_path_agrees_with_sklearn_at_every_strength(run):
  result = run("lasso_path.py")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _table_rows(result.stdout, "max |w - sklearn|")
  assert len(rows) == 30
  differences = [float(row[3]) for row in rows]
  assert max(differences) <= 1e-4, differences
  # Below the first strength (where all coefficients are 0 up to rounding), the same
  # coefficients are exactly 0 in both.
  assert all(row[1] == row[2] for row in rows[1:]), rows
  assert "jaxreg agrees with scikit-learn" in result.stdout
  # Subgradient steps on the same objective leave more coefficients nonzero.
  assert sum(int(row[4]) for row in rows) > sum(int(row[1]) for row in rows)
  _assert_png(result.out / "lasso_path.png")


def test_data_parallel_checks_its_claims_at_its_defaults(run):
  """The 8-device runs agree with the 1-device ones as the script states, over its
  whole default run (60 NNX steps, 10 linen steps), with exact zeros to compare."""
  result = run("data_parallel.py")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  agree = re.findall(r"losses agree to rtol 0.001 at each of the first (\d+) steps: True",
                     result.stdout)
  assert agree == ["60", "10"], result.stdout
  zeros = re.findall(r"exact zeros: (\d+) of \d+ parameters; (\d+) are zero in one run only"
                     r".*\(lr = 0.003\): True; parameter shardings kept: True", result.stdout)
  assert len(zeros) == 2 and all(int(count) > 1000 for count, _ in zeros), result.stdout


def test_data_parallel_as_two_processes_of_four_devices(tmp_path):
  """The two-process command of docs/sharding.md: two "hosts" of 4 CPU devices each."""
  port = 12355 + os.getpid() % 1000  # Apart from a concurrent run's coordinator.
  env = cpu_devices.environment(4)
  processes = [subprocess.Popen(
      [sys.executable, str(_EXAMPLES / "data_parallel.py"), "--distributed",
       "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id",
       str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [process.communicate(timeout=300)[0] for process in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  assert outputs[0].count("at each of the first") == 2, outputs[0]


def test_mc_dropout_most_uncertain_tenth_is_least_accurate(run):
  result = run("mc_dropout.py")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _table_rows(result.stdout, "tenth by entropy")
  assert [int(row[0]) for row in rows] == list(range(1, 11))
  accuracy = [float(row[-1]) for row in rows]
  assert accuracy[-1] == min(accuracy), accuracy
  assert accuracy[-1] < accuracy[0] - 0.2, accuracy
  _assert_png(result.out / "mc_dropout.png")
