"""G's output mapping, so generated images live where the real batch does.

Every generator ends in tanh, i.e. [-1, 1] = ``data.normalize=minmax``. With
``zscore`` data (De Matteis) the real images are ``(x - mean) / std`` per channel,
a range tanh cannot cover (MNIST: about [-0.42, 2.8]); :class:`ZScoreMap` maps
tanh's [-1, 1] onto exactly that range with :func:`distgan.pixels.tanh_to_zscore`.
The statistics are non-persistent buffers: they come from the data description,
not from checkpoints (state dicts are the same for both modes).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from distgan.pixels import channel_stats, tanh_to_zscore


class ZScoreMap(nn.Module):
    """tanh output in [-1, 1] -> per-channel z-scored pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if not mean or len(mean) != len(std):
            raise ValueError("data.normalize=zscore needs the shard manifest's per-channel mean and std "
                             f"(got mean={list(mean)}, std={list(std)}); re-write the shards to record them")
        m, s = channel_stats(mean, std)
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return tanh_to_zscore(t, self.mean, self.std)


def pixel_map(normalize: str, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """The output mapping for ``data.normalize`` (identity for minmax)."""
    if normalize == "zscore":
        return ZScoreMap(mean, std)
    if normalize != "minmax":
        raise ValueError(f"data.normalize must be minmax or zscore, got {normalize!r}")
    return nn.Identity()
