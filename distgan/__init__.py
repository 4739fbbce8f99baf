"""distgan: train GANs on clusters from WebDataset shards; use what was trained.

``import distgan`` stays light (no torch): the public helpers below load lazily.

    G, info = distgan.load_generator("runs/mnist_cdcgan")
    images = distgan.generate(G, info, 20, labels=[3, 8], seed=0)   # uint8 NHWC
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"load_generator": "distgan.api", "generate": "distgan.api", "GeneratorInfo": "distgan.api",
         "SampleError": "distgan.api"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:  # PEP 562: import distgan.api only when first used
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distgan' has no attribute {name!r}")
