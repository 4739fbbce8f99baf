"""DCGAN generator and discriminator (Radford et al.; seeds 000 and 001).

All-convolutional: strided transposed convs up from 4x4 in G, strided convs down
to 4x4 in D, batch norm (or any named norm), ReLU + Tanh in G, LeakyReLU(0.2) in D,
no fully connected hidden layers. Width ``n`` is G's last / D's first feature
width; each halving of resolution doubles it. Class conditioning enters through
a :class:`~distgan.models.cond.Conditioning` object, so one G and one D serve
every conditioning mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from distgan.models.cond import Conditioning, DOut
from distgan.models.norms import make_norm


def _levels(resolution: int) -> int:
    lv = math.log2(resolution / 4)
    if resolution < 8 or lv != int(lv):
        raise ValueError(f"dcgan resolution must be a power of two >= 8, got {resolution}")
    return int(lv)


class DCGANGenerator(nn.Module):
    """z (B, d) [+ condition] -> image (B, C, R, R) in [-1, 1]."""

    def __init__(self, z_dim: int, width: int, channels: int, resolution: int,
                 cond: Conditioning, norm: str = "batch"):
        super().__init__()
        self.z_dim, self.resolution, self.channels = z_dim, resolution, channels
        self.cond = cond
        levels = _levels(resolution)
        ch = width * 2 ** (levels - 1)
        in_ch = z_dim + cond.g_input_extra()
        self.stem = nn.Sequential(nn.ConvTranspose2d(in_ch, ch, 4, 1, 0, bias=False))
        self.stem_norm = cond.g_norm(norm, ch)
        blocks = []
        for _ in range(levels - 1):
            blocks.append(nn.ModuleDict({
                "conv": nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                "norm": cond.g_norm(norm, ch // 2)}))
            ch //= 2
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.cond.g_input(z, y).view(z.shape[0], -1, 1, 1)
        h = torch.relu(self.cond.apply_norm(self.stem_norm, self.stem(h), y))
        for b in self.blocks:
            h = torch.relu(self.cond.apply_norm(b["norm"], b["conv"](h), y))
        return torch.tanh(self.out(h))


class DCGANDiscriminator(nn.Module):
    """image (B, C, R, R) [+ condition] -> DOut(logits (B,), features, class_logits)."""

    def __init__(self, width: int, channels: int, resolution: int, cond: Conditioning,
                 norm: str = "batch", sn: bool = False):
        super().__init__()
        self.cond = cond
        levels = _levels(resolution)
        wrap = nn.utils.spectral_norm if sn else (lambda m: m)
        ch = width
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels + cond.d_input_extra(), ch, 4, 2, 1)),
                                   nn.LeakyReLU(0.2)]
        for _ in range(levels - 1):
            layers += [wrap(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False)), make_norm(norm, ch * 2),
                       nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.feat_ch = ch
        self.out = wrap(nn.Conv2d(ch, 1, 4, 1, 0))
        cond.build_d_heads(self, ch, wrap)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        h = self.features(self.cond.d_input(x, y))
        logits = self.out(h).flatten()
        return self.cond.d_output(self, h, logits, y)
