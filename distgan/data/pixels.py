"""Pixel normalisation between stored uint8 images and model inputs, both ways.

``minmax`` maps [0, 255] to [-1, 1] (what a tanh generator produces);
``zscore`` maps to ``(x/255 - mean) / std`` per channel, with the mean and std
the shard writer recorded in ``manifest.json`` (in [0, 1] units).

    x = normalize(batch["image"], "zscore", manifest.mean, manifest.std)
    images = denormalize(x, "zscore", manifest.mean, manifest.std)   # uint8 NCHW again
"""
from __future__ import annotations

from typing import Sequence

import torch

MODES = ("minmax", "zscore")
_MIN_STD = 1e-6  # a constant channel (std 0) must not divide by zero


def _stats(mode: str, mean: Sequence[float], std: Sequence[float],
           x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if mode not in MODES:
        raise ValueError(f"normalize mode must be one of {MODES}, got {mode!r}")
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"zscore needs one mean and std per channel: images have {c} channels, got "
                         f"{len(mean)} means and {len(std)} stds (re-write the shards to record them)")
    m = torch.tensor(list(mean), device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), device=x.device, dtype=torch.float32).view(1, -1, 1, 1).clamp_min(_MIN_STD)
    return m, s


def normalize(images: torch.Tensor, mode: str, mean: Sequence[float] = (), std: Sequence[float] = ()) -> torch.Tensor:
    """uint8 NCHW -> float32: minmax to [-1, 1]; zscore with the manifest's per-channel stats."""
    x = images.float() / 255.0
    if mode == "minmax":
        return x * 2.0 - 1.0
    m, s = _stats(mode, mean, std, x)
    return (x - m) / s


def denormalize(images: torch.Tensor, mode: str, mean: Sequence[float] = (), std: Sequence[float] = ()) -> torch.Tensor:
    """Inverse of :func:`normalize`: float NCHW -> uint8 NCHW (rounded, clamped to [0, 255])."""
    x = images.float()
    if mode == "minmax":
        x = (x + 1.0) / 2.0
    else:
        m, s = _stats(mode, mean, std, x)
        x = x * s + m
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)
