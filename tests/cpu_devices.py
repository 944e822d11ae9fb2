"""The environment of a subprocess that runs JAX on several emulated CPU devices.

The device count is fixed when JAX starts, so multi-device checks run in a subprocess
with ``--xla_force_host_platform_device_count``; it is added to the flags the tests
run with (see conftest.py), not put in their place.
"""

import os


def environment(count: int) -> dict[str, str]:
  flags = os.environ.get("XLA_FLAGS", "")
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={count}".strip())
