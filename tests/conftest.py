"""Shared test settings: hypothesis runs without deadlines (jit compiles inside a
draw) and with a fixed seed, so a failure is reproduced by the next run."""

import hypothesis

hypothesis.settings.register_profile(
    "jaxreg", deadline=None, max_examples=25, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("jaxreg")
