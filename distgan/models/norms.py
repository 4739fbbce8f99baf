"""Normalisation layers looked up by name, so the trainer can swap in synced versions.

``make_norm("batch", 64)`` -> BatchNorm2d; ``"none"`` -> Identity. Other modules
register more names with :func:`register_norm` (the distributed layer registers
``sync_batch``).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

NormFactory = Callable[[int], nn.Module]
NORMS: dict[str, NormFactory] = {
    "batch": lambda c: nn.BatchNorm2d(c),
    "none": lambda c: nn.Identity(),
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
}


def register_norm(name: str, factory: NormFactory) -> None:
    """Make ``name`` available to :func:`make_norm`."""
    NORMS[name] = factory


def make_norm(name: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer for ``channels`` feature maps."""
    if name == "sync_batch" and name not in NORMS:
        import distgan.dist  # noqa: F401  (registers sync_batch)
    if name not in NORMS:
        raise ValueError(f"unknown norm '{name}'; available: {', '.join(sorted(NORMS))}")
    return NORMS[name](channels)
