"""Lasso paths: ``jaxreg.paths.lasso_path`` against scikit-learn, celer and skglm.

Five regression problems in float64, made here from fixed seeds (no downloads): the
diabetes data (442 × 10, y centered), dense Gaussian designs of 1000 × 500 and
500 × 5000 with 50 true features, a Toeplitz design of correlation 0.9^|i-j| (1000 ×
1000, 50 true features) and ``make_regression`` (2000 × 2000, 100 informative). On each,
the whole path of 100 alphas on scikit-learn's grid (``eps=1e-3``, no intercept) is
solved at ``tol=1e-4``, the same alpha array given to every contestant:

* ``sklearn.linear_model.lasso_path`` (X in Fortran order, as its coordinate descent
  reads columns), ``celer.celer_path`` (the same duality-gap tolerance: gap ≤
  tol·‖y‖²/n), skglm's ``Lasso(...).path`` (warm-started AndersonCD; its tol bounds
  the largest KKT violation instead, an absolute figure);
* ``jaxreg.paths.lasso_path`` in float64, the public call as a user makes it (its
  input checks included), with x64 switched on around each call only: the rest of the
  benchmark process runs in float32. Float32 rows (x64 off) are reported beside it,
  outside the targets.

Each contestant is called once to check it (for jaxreg that call compiles; the compile
time reported is that first call less the steady median), again to size the rounds,
then all are called in turn, round after round, and the figure is the median
(``timing.Budget``), as in ``timing.compare``; the calls are not jitted programs, so
the protocol is done by hand, as in ``cv_bench``. Accuracy: against scikit-learn's path
at ``tol=1e-12``, the largest |coef − reference| over the path and the fraction of
(feature, alpha) entries whose zero pattern agrees. Quick runs: the first two problems.

A second table runs ``jaxreg.cv.lasso_cv`` against scikit-learn's ``LassoCV`` (5
contiguous folds, the same grid settings, intercept fitted, refit included) on the
dense 1000 × 500 problem: time, the chosen alpha, and the held-out MSE path, against
each other and against ``LassoCV`` at ``tol=1e-10`` (how far tol=1e-4 leaves each).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings

import celer
import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import toeplitz
import skglm
from sklearn.datasets import load_diabetes
from sklearn.datasets import make_regression
from sklearn.linear_model import LassoCV
from sklearn.linear_model import lasso_path
from sklearn.model_selection import KFold

from benchmarks import report
from benchmarks import targets
from benchmarks import timing
from jaxreg import cv
from jaxreg import paths

ALPHAS, EPS, TOL = 100, 1e-3, 1e-4
REFERENCE_TOL, REFERENCE_MAX_ITER = 1e-12, 100_000
CV_TIGHT_TOL = 1e-10
SKLEARN, CELER, SKGLM = "scikit-learn", "celer", "skglm"
JAX64, JAX32 = "jaxreg float64", "jaxreg float32"
LARGE = ("dense 500×5000", "Toeplitz ρ=0.9 1000×1000", "make_regression 2000×2000")
CV_PROBLEM = "dense 1000×500"
SKLEARN_BOUND, CELER_BOUND, CV_BOUND, COMPILE_BOUND = 1.0, 2.0, 1.0, 2.0
FULL = timing.Budget(10.0, 5, 30)
QUICK = timing.Budget(0.5, 2, 3)


def problems():
  """The five problems by name, ``(X, y)`` in float64; the generated ones have 50 true
  features (``make_regression``: 100) and noise."""
  out = {}
  X, y = load_diabetes(return_X_y=True)
  out["diabetes 442×10"] = (X, y - y.mean())
  rng = np.random.default_rng(0)

  def sparse_y(X, k):
    w = np.zeros(X.shape[1])
    w[rng.choice(X.shape[1], k, replace=False)] = rng.normal(size=k)
    return X @ w + 0.5 * rng.normal(size=X.shape[0])

  X = rng.normal(size=(1000, 500))
  out["dense 1000×500"] = (X, sparse_y(X, 50))
  X = rng.normal(size=(500, 5000))
  out["dense 500×5000"] = (X, sparse_y(X, 50))
  root = np.linalg.cholesky(toeplitz(0.9 ** np.arange(1000)))
  X = rng.normal(size=(1000, 1000)) @ root.T
  out["Toeplitz ρ=0.9 1000×1000"] = (X, sparse_y(X, 50))
  X, y = make_regression(2000, 2000, n_informative=100, noise=1.0, random_state=0)
  out["make_regression 2000×2000"] = (X, y)
  return out


@dataclasses.dataclass(frozen=True)
class Row:
  problem: str
  contestant: str
  seconds: float
  """Median seconds per path."""
  compile_seconds: float | None
  """jaxreg only: the first call less the steady median."""
  max_error: float
  """Largest |coef − reference| over the whole path."""
  agreement: float
  """Fraction of (feature, alpha) entries where coef == 0 exactly when reference == 0."""


@dataclasses.dataclass(frozen=True)
class CVRow:
  seconds: dict[str, float]
  compile_seconds: float
  alphas: tuple[float, float]
  """The chosen alpha: jaxreg's, scikit-learn's."""
  mse_difference: float
  """Largest |jaxreg − scikit-learn| / scikit-learn over the MSE path."""
  mse_errors: tuple[float, float]
  """The same, of jaxreg's and of scikit-learn's against LassoCV at ``CV_TIGHT_TOL``."""


@dataclasses.dataclass(frozen=True)
class Result:
  rows: list[Row]
  scales: dict[str, float]
  """Largest |reference coefficient| of each problem, the scale of the errors."""
  cv: CVRow
  notes: list[str]
  """Warnings raised by a checking call (non-convergence), one line each."""

  def _row(self, problem: str, contestant: str) -> Row:
    (row,) = [r for r in self.rows if (r.problem, r.contestant) == (problem, contestant)]
    return row

  def section(self) -> list[str]:
    body = []
    for r in self.rows:
      ratio = lambda other: f"{r.seconds / self._row(r.problem, other).seconds:.2f}×"
      body.append([r.problem, r.contestant, f"{r.seconds * 1e3:.4g}", ratio(SKLEARN),
                   ratio(CELER), "" if r.compile_seconds is None
                   else f"{r.compile_seconds:.2f}", f"{r.max_error:.1e}",
                   f"{r.agreement:.4f}"])
    scales = ", ".join(f"{name} {scale:.3g}" for name, scale in self.scales.items())
    c = self.cv
    ours, theirs = c.seconds["jaxreg lasso_cv"], c.seconds["scikit-learn LassoCV"]
    agree = "yes" if np.isclose(*c.alphas, rtol=1e-9) else (
        f"no ({c.alphas[0]:.4g} against {c.alphas[1]:.4g})")
    return [
        "## Lasso paths: jaxreg against scikit-learn, celer and skglm", "",
        f"The whole path of {ALPHAS} alphas on scikit-learn's grid (eps={EPS:g}, no "
        f"intercept), tol={TOL:g}, the same alphas for every contestant; float64 unless "
        "the row says otherwise. Median milliseconds per path over interleaved rounds; "
        "*compile*: jaxreg's first call less its steady median. scikit-learn, celer "
        "and jaxreg stop on the duality gap (≤ tol·‖y‖²/n); **skglm's tol bounds the "
        "largest KKT violation (distance of the gradient to the L1 subdifferential), "
        "not a duality gap**: on most of these problems the stricter stop, as its "
        "errors show. A compile time is one measurement, and moves with the machine's "
        "load. *Max error*: "
        "largest |coef − reference| over the path, the reference being scikit-learn at "
        f"tol={REFERENCE_TOL:g}; for scale, the largest |reference coefficient|: "
        f"{scales}. *Zero pattern*: the fraction of (feature, alpha) entries that are 0 "
        "exactly where the reference's are. The float32 rows are not in the targets.", "",
        *report._table(["problem", "contestant", "ms per path", "/ scikit-learn",
                        "/ celer", "compile (s)", "max error", "zero pattern"], body), "",
        *(f"- {note}" for note in self.notes), *([""] if self.notes else []),
        f"Cross-validation on {CV_PROBLEM}: `jaxreg.cv.lasso_cv` against scikit-learn's "
        f"`LassoCV(cv=KFold(5))` ({ALPHAS} alphas, eps={EPS:g}, tol={TOL:g}, intercept, "
        "refit on all rows included), float64. *MSE path*: the largest relative "
        "difference of a held-out MSE (alphas × folds), between the two and from "
        f"`LassoCV` at tol={CV_TIGHT_TOL:g}: both stop on the duality gap, not on the "
        "coefficients, so where the held-out MSE is small beside var(y) the "
        "tolerance alone moves it by this much.", "",
        *report._table(["problem", "lasso_cv (ms)", "LassoCV (ms)", "lasso_cv / LassoCV",
                        "compile (s)", "same alpha", "MSE path difference",
                        "lasso_cv MSE error", "LassoCV MSE error"],
                       [[CV_PROBLEM, f"{ours * 1e3:.4g}", f"{theirs * 1e3:.4g}",
                         f"{ours / theirs:.2f}×", f"{c.compile_seconds:.2f}", agree,
                         f"{c.mse_difference:.1e}",
                         *(f"{e:.1e}" for e in c.mse_errors)]]), "",
    ]

  def targets(self) -> list[targets.Target]:
    out = []
    for problem in self.scales:
      ours = self._row(problem, JAX64)
      ratio = ours.seconds / self._row(problem, SKLEARN).seconds
      out.append(targets.Target(
          f"Lasso path, {problem}: jaxreg float64 / scikit-learn = {ratio:.2f}× "
          f"(target ≤ {SKLEARN_BOUND:g}×)", ratio <= SKLEARN_BOUND))
      if problem in LARGE:
        ratio = ours.seconds / self._row(problem, CELER).seconds
        out.append(targets.Target(
            f"Lasso path, {problem}: jaxreg float64 / celer = {ratio:.2f}× "
            f"(target ≤ {CELER_BOUND:g}×)", ratio <= CELER_BOUND))
    ratio = self.cv.seconds["jaxreg lasso_cv"] / self.cv.seconds["scikit-learn LassoCV"]
    out.append(targets.Target(
        f"lasso_cv, {CV_PROBLEM}: jaxreg / scikit-learn LassoCV = {ratio:.2f}× "
        f"(target ≤ {CV_BOUND:g}×)", ratio <= CV_BOUND))
    for problem in self.scales:
      seconds = self._row(problem, JAX64).compile_seconds
      out.append(targets.Target(
          f"Lasso path, {problem}: jaxreg float64 compile = {seconds:.2f} s "
          f"(target < {COMPILE_BOUND:g} s)", seconds < COMPILE_BOUND))
    return out


def _seconds(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _race(contestants: dict, budget: timing.Budget, notes: list[str], problem: str):
  """``(median seconds, first call's output, first call's seconds)`` by contestant: a
  first call of each (the one that compiles, whose warnings become notes), a second
  that sizes the rounds, then interleaved rounds."""
  outputs, first = {}, {}
  for name, fn in contestants.items():
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      start = time.perf_counter()
      outputs[name] = jax.block_until_ready(fn())
      first[name] = time.perf_counter() - start
    notes.extend(f"{name} on {problem}: {w.category.__name__}: "
                 f"{str(w.message).splitlines()[0][:160]}" for w in caught)
  # The timed calls repeat the checked ones: their warnings would only repeat too.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    per_round = sum(_seconds(fn) for fn in contestants.values())
    samples = {name: [] for name in contestants}
    for _ in range(budget.rounds(per_round)):
      for name, fn in contestants.items():
        samples[name].append(_seconds(fn))
  return {n: statistics.median(s) for n, s in samples.items()}, outputs, first


def _jaxreg_path(X, y, grid, x64: bool):
  """The public call, with x64 on (float64) or off (float32) around it only: JAX's
  setting is per thread and restored on exit, so the rest of the process keeps its
  own. The arrays are made once, under the same setting, outside the clock."""
  dtype = jnp.float64 if x64 else jnp.float32
  with jax.enable_x64(x64):
    X, y, grid = (jnp.asarray(a, dtype) for a in (X, y, grid))

  def call():
    with jax.enable_x64(x64):
      return paths.lasso_path(X, y, alphas=grid, tol=TOL)[1]

  return call


def _grid(X, y) -> np.ndarray:
  # The grid is made before any solving, so one epoch (max_iter=1) gives the same
  # alphas as a full run at a fraction of the cost; its non-convergence is expected.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return lasso_path(X, y, alphas=ALPHAS, eps=EPS, max_iter=1)[0]


def _measure_problem(problem: str, X, y, budget, notes, log) -> tuple[list[Row], float]:
  X = np.asfortranarray(X, np.float64)
  y = np.asarray(y, np.float64)
  grid = _grid(X, y)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    start = time.perf_counter()
    reference = lasso_path(X, y, alphas=grid, tol=REFERENCE_TOL,
                           max_iter=REFERENCE_MAX_ITER)[1]
  notes.extend(f"reference on {problem}: {w.category.__name__}: "
               f"{str(w.message).splitlines()[0][:160]}" for w in caught)
  log(f"  {problem}: reference in {time.perf_counter() - start:.1f} s")
  contestants = {
      # jaxreg first: its first call compiles, before the others run.
      JAX64: _jaxreg_path(X, y, grid, x64=True),
      JAX32: _jaxreg_path(X, y, grid, x64=False),
      SKLEARN: lambda: lasso_path(X, y, alphas=grid, tol=TOL)[1],
      CELER: lambda: celer.celer_path(X, y, "lasso", alphas=grid, tol=TOL)[1],
      # skglm's path warm-starts each alpha from the previous solution (its AndersonCD
      # solver's ``path``); no intercept, as lasso_path. Its first call JIT-compiles
      # numba kernels, which the checking call absorbs.
      SKGLM: lambda: skglm.Lasso(tol=TOL, fit_intercept=False).path(X, y, grid)[1],
  }
  seconds, outputs, first = _race(contestants, budget, notes, problem)
  rows = []
  for name in (SKLEARN, CELER, SKGLM, JAX64, JAX32):  # The table's order.
    coefs = np.asarray(outputs[name], np.float64)
    assert coefs.shape == reference.shape, (name, coefs.shape, reference.shape)
    compile_seconds = first[name] - seconds[name] if name in (JAX64, JAX32) else None
    rows.append(Row(problem, name, seconds[name], compile_seconds,
                    float(np.max(np.abs(coefs - reference))),
                    float(np.mean((coefs == 0) == (reference == 0)))))
  log(f"  {problem}: " + ", ".join(f"{n} {s * 1e3:.3g} ms" for n, s in seconds.items()))
  return rows, float(np.max(np.abs(reference)))


def _measure_cv(X, y, budget, notes, log) -> CVRow:
  X = np.asfortranarray(X, np.float64)
  with jax.enable_x64(True):
    X64, y64 = jnp.asarray(X), jnp.asarray(y)

  def ours():
    with jax.enable_x64(True):
      return cv.lasso_cv(X64, y64, eps=EPS, alphas=ALPHAS, folds=5, tol=TOL)

  def theirs(tol=TOL, max_iter=1000):
    return LassoCV(cv=KFold(5), n_jobs=1, alphas=ALPHAS, eps=EPS, tol=tol,
                   max_iter=max_iter).fit(X, y)

  names = ("jaxreg lasso_cv", "scikit-learn LassoCV")
  seconds, outputs, first = _race(dict(zip(names, (ours, theirs))), budget, notes,
                                  CV_PROBLEM)
  result, model = (outputs[n] for n in names)
  mse, reference = np.asarray(result.mse_path), model.mse_path_
  assert mse.shape == reference.shape, (mse.shape, reference.shape)
  log(f"  lasso_cv: {seconds[names[0]] * 1e3:.3g} ms, LassoCV "
      f"{seconds[names[1]] * 1e3:.3g} ms")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tight = theirs(CV_TIGHT_TOL, REFERENCE_MAX_ITER).mse_path_
  notes.extend(f"LassoCV at tol={CV_TIGHT_TOL:g}: {w.category.__name__}: "
               f"{str(w.message).splitlines()[0][:160]}" for w in caught)
  relative = lambda a, b: float(np.max(np.abs(a - b) / b))
  return CVRow(seconds, first[names[0]] - seconds[names[0]],
               (float(result.alpha), float(model.alpha_)), relative(mse, reference),
               (relative(mse, tight), relative(reference, tight)))


def run(quick: bool, log) -> Result:
  budget = QUICK if quick else FULL
  chosen = list(problems().items())[:2 if quick else None]
  rows, scales, notes = [], {}, []
  for problem, (X, y) in chosen:
    problem_rows, scales[problem] = _measure_problem(problem, X, y, budget, notes, log)
    rows.extend(problem_rows)
  X, y = dict(chosen)[CV_PROBLEM]
  return Result(rows, scales, _measure_cv(X, y, budget, notes, log), notes)


if __name__ == "__main__":
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="the first two problems, "
                      "fewer rounds")
  result = run(parser.parse_args().quick, print)
  print("\n".join(result.section() + [t.line() for t in result.targets()]))
