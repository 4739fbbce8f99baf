"""Optional dependencies: import them with an error that names the extra to install.

    plt = pyplot()                       # matplotlib, for report / sweep plots
    require("scipy", "bench", "the FID benchmark's reference implementation")

The core install (``pip install distgan``) trains, samples, exports and logs to
TensorBoard; plots, W&B / MLflow, the embedded MNIST digits, ONNX export, the
FID Inception weights and the benchmarks' references are extras (see the
``[project.optional-dependencies]`` table of pyproject.toml).
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional package is not installed; the message says which extra brings it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming ``pip install 'distgan[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingExtra(f"{purpose} needs the '{top}' package, which is not installed: "
                           f"pip install 'distgan[{extra}]' (or pip install {top})") from None


def pyplot(purpose: str = "plotting") -> ModuleType:
    """matplotlib.pyplot on the file-only Agg backend (no display on cluster nodes)."""
    matplotlib = require("matplotlib", "plots", purpose)
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
