"""Fixed noise and labels for sample grids, and writing grids as PNG.

The grid has one row per class for conditional models (row i = class i), so a
glance tells whether G honours the label.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from distgan.data import denormalize
from distgan.fsutil import atomic_write_bytes


def fixed_inputs(num: int, z_dim: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(z, labels or None, images per row) from a private generator (training RNG untouched)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    if num_classes:
        per = max(1, num // num_classes)
        labels = torch.arange(num_classes).repeat_interleave(per)
        return torch.randn(len(labels), z_dim, generator=gen), labels, per
    return torch.randn(num, z_dim, generator=gen), None, max(1, int(math.sqrt(num)))


def grid_tensor(images: torch.Tensor, nrow: int, pixels: tuple | None = None) -> torch.Tensor:
    """Generated images -> [0, 1] float CHW grid.

    ``pixels = (normalize_mode, mean, std)`` maps G's output back to pixel values
    (z-scored runs); without it images are taken to be in [-1, 1].
    """
    if pixels is not None:
        unit = denormalize(images, *pixels).float() / 255.0
    else:
        unit = (images.float().clamp(-1, 1) + 1) / 2
    return make_grid(unit, nrow=nrow, padding=2, pad_value=1.0)


def save_grid(images: torch.Tensor, nrow: int, path: str | Path, pixels: tuple | None = None) -> None:
    """Write generated images as one PNG grid, atomically (see :func:`grid_tensor`)."""
    buf = io.BytesIO()
    save_image(grid_tensor(images, nrow, pixels), buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
