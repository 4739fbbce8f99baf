"""Pixel normalisation: stored uint8 images <-> the range models see, every direction in one place.

``minmax`` maps [0, 255] to [-1, 1] (what a tanh generator produces);
``zscore`` maps to ``(x/255 - mean) / std`` per channel, with the mean and std
the shard writer recorded in ``manifest.json`` (in [0, 1] units).

    x = normalize(batch["image"], "zscore", manifest.mean, manifest.std)
    images = denormalize(x, "zscore", manifest.mean, manifest.std)   # uint8 NCHW again
    hwc = to_uint8_nhwc(G(z, y), info.normalize, info.mean, info.std)  # numpy, for files

The data pipeline, the generator's output layer (``distgan.models.pixelmap``),
sampling, export and the metrics all map through these functions. The module
is a leaf (torch and numpy only), so loading a generator does not import the
data pipeline.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

MODES = ("minmax", "zscore")
MIN_STD = 1e-6  # a constant channel (std 0) must not divide by zero


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"normalize mode must be one of {MODES}, got {mode!r}")


def channel_stats(mean: Sequence[float], std: Sequence[float], device: torch.device | str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as float32 (1, C, 1, 1) tensors, std kept away from 0."""
    m = torch.tensor(list(mean), device=device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), device=device, dtype=torch.float32).view(1, -1, 1, 1).clamp_min(MIN_STD)
    return m, s


def _stats(mode: str, mean: Sequence[float], std: Sequence[float],
           x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_mode(mode)
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"zscore needs one mean and std per channel: images have {c} channels, got "
                         f"{len(mean)} means and {len(std)} stds (re-write the shards to record them)")
    return channel_stats(mean, std, x.device)


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


def to_uint8_nhwc(images: torch.Tensor, mode: str, mean: Sequence[float] = (),
                  std: Sequence[float] = ()) -> np.ndarray:
    """Model-range NCHW (e.g. G's output) -> uint8 NHWC numpy array (the layout image files use)."""
    return denormalize(images.detach().float().cpu(), mode, mean, std).permute(0, 2, 3, 1).contiguous().numpy()


def to_minmax(images: torch.Tensor, mode: str, mean: Sequence[float] = (), std: Sequence[float] = ()) -> torch.Tensor:
    """Model-range float NCHW -> [-1, 1] (unclamped, same dtype); minmax images are returned as they are.

    The metrics' feature extractors take [-1, 1]; a z-scored run's G produces
    per-channel standardised pixels, which this maps back.
    """
    if mode == "minmax":
        return images
    m, s = _stats(mode, mean, std, images)
    return (images * s.to(images.dtype) + m.to(images.dtype)) * 2.0 - 1.0


def unit_affine(mode: str, mean: Sequence[float], std: Sequence[float],
                channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, each float32 (C,), with ``model_range * scale + shift`` in [0, 1] units.

    For a model that must carry the mapping as buffers (the exported generator).
    """
    check_mode(mode)
    if mode == "zscore":
        m, s = channel_stats(mean, std)
        return s.view(-1), m.view(-1)
    return torch.full((channels,), 0.5), torch.full((channels,), 0.5)


def tanh_to_zscore(t: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A tanh output in [-1, 1] -> z-scored pixels ``((t + 1) / 2 - mean) / std`` (the inverse of
    :func:`to_minmax` for zscore); ``mean``/``std`` from :func:`channel_stats`, result in ``t``'s dtype."""
    return (((t + 1.0) * 0.5 - mean.to(t.dtype)) / std.to(t.dtype)).to(t.dtype)


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [-1, 1] float NCHW -> float NCHW of integer values in [0, 255] (the Inception input)."""
    if images.dtype == torch.uint8:
        return images.float()
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round()
