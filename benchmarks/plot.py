"""The figure of a run: dropout forward time against size, and the ratios."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # Files only: the benchmark may run without a display.
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)

from benchmarks import half_bench  # noqa: E402
from benchmarks import implementations  # noqa: E402

RATE, DTYPE = 0.5, "float32"


def _series(rows, pass_, dtype=DTYPE):
  chosen = sorted((r for r in rows if (r.rate, r.dtype, r.pass_) == (RATE, dtype, pass_)),
                  key=lambda r: r.size)
  return [r.size for r in chosen], [r.seconds for r in chosen]


def save(rows, path, title: str) -> None:
  sizes, seconds = _series(rows, "forward")
  _, seconds_fb = _series(rows, "forward+backward")
  fig, (times, ratios) = plt.subplots(1, 2, figsize=(12, 4.5))
  for name in implementations.SPEED:
    style = ":" if name == "copy x*2" else "-"
    times.plot(sizes, [s[name] * 1e3 for s in seconds], style, marker="o", label=name)
  times.set(xscale="log", yscale="log", xlabel="elements", ylabel="ms per call",
            title=f"Forward dropout, rate {RATE}, {DTYPE}")
  times.set_xscale("log", base=2)
  times.legend()
  curves = {
      "flax.linen / jaxreg": [s["flax.linen"] / s["jaxreg"] for s in seconds],
      "flax.nnx / jaxreg": [s["flax.nnx"] / s["jaxreg"] for s in seconds],
      "bernoulli+where / jaxreg": [s["bernoulli+where"] / s["jaxreg"] for s in seconds],
      "jaxreg / copy": [s["jaxreg"] / s["copy x*2"] for s in seconds],
      "flax.linen / jaxreg, fwd+bwd": [s["flax.linen"] / s["jaxreg"] for s in seconds_fb],
  }
  for dtype in half_bench.HALF_DTYPES:  # jaxreg at 16 bits over 32, where measured.
    half_sizes, half = _series(rows, "forward", dtype)
    if half_sizes == sizes:
      curves[f"jaxreg {dtype} / float32"] = [h["jaxreg"] / s["jaxreg"]
                                             for h, s in zip(half, seconds)]
  for label, values in curves.items():
    ratios.plot(sizes, values, "--" if "fwd+bwd" in label else "-", marker="o", label=label)
  ratios.axhline(1.0, color="grey", linewidth=0.8)
  ratios.set(yscale="log", xlabel="elements", ylabel="ratio",
             title=f"Ratios, rate {RATE}, {DTYPE}")
  ratios.set_xscale("log", base=2)
  ratios.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
