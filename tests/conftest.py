"""Shared test settings: hypothesis runs without deadlines (jit compiles inside a
draw) and with a fixed seed, so a failure is reproduced by the next run; an expensive
run that several tests read is made once per session, whichever workers run them."""

import os
import pickle

import filelock
import hypothesis
import pytest

# The suite compiles thousands of small programs and runs most of them once, so compile
# time dominates it: LLVM's costly optimization passes are skipped (about a third less
# CPU). XLA's own passes (fusion, layouts, algebraic rewrites) still run and fast math
# stays off; speed is measured in benchmarks/, at the default optimization.
# Subprocesses inherit the flags (tests/cpu_devices.py adds a device count to them).
os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true"]).strip()

hypothesis.settings.register_profile(
    "jaxreg", deadline=None, max_examples=25, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("jaxreg")


@pytest.fixture(scope="session")
def once_per_session(tmp_path_factory, worker_id):
  """``once_per_session(name, make)``: ``make()``, called by one pytest worker for the
  whole session; every other worker waits for it and reads the pickled result.

  pytest-xdist sends a module's tests to any worker, so a session fixture alone would
  run an example script or the 8-device subprocess once per worker that gets one of
  the tests reading it. The result lives beside the workers' temporary folders, which
  are new for each session."""
  folder = tmp_path_factory.getbasetemp()
  if worker_id != "master":
    folder = folder.parent  # Shared by this session's workers.

  def get(name: str, make):
    path = folder / f"{name}.pickle"
    with filelock.FileLock(f"{path}.lock"):
      if not path.exists():
        path.write_bytes(pickle.dumps(make()))
      return pickle.loads(path.read_bytes())

  return get
