"""G's output mapping, so generated images live where the real batch does.

Every generator ends in tanh, i.e. [-1, 1] = ``data.normalize=minmax``. With
``zscore`` data (De Matteis) the real images are ``(x - mean) / std`` per channel,
a range tanh cannot cover (MNIST: about [-0.42, 2.8]); :class:`ZScoreMap` maps
tanh's [-1, 1] onto exactly that range: ``((t + 1) / 2 - mean) / std``. The
statistics are non-persistent buffers: they come from the data description,
not from checkpoints (state dicts are the same for both modes).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

_MIN_STD = 1e-6  # as distgan.data.pixels: a constant channel must not divide by zero


class ZScoreMap(nn.Module):
    """tanh output in [-1, 1] -> per-channel z-scored pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if not mean or len(mean) != len(std):
            raise ValueError("data.normalize=zscore needs the shard manifest's per-channel mean and std "
                             f"(got mean={list(mean)}, std={list(std)}); re-write the shards to record them")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1).clamp_min(_MIN_STD),
                             persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return (((t + 1.0) * 0.5 - self.mean.to(t.dtype)) / self.std.to(t.dtype)).to(t.dtype)


def pixel_map(normalize: str, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """The output mapping for ``data.normalize`` (identity for minmax)."""
    if normalize == "zscore":
        return ZScoreMap(mean, std)
    if normalize != "minmax":
        raise ValueError(f"data.normalize must be minmax or zscore, got {normalize!r}")
    return nn.Identity()
