"""Shared test settings: hypothesis runs without deadlines (jit compiles inside a
draw) and with a fixed seed, so a failure is reproduced by the next run."""

import os

import hypothesis

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
