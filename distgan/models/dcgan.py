"""DCGAN generator and discriminator (Radford et al.; De Matteis; Viel; Bordon et al.).

All-convolutional: strided transposed convs up from 4x4 (7x7 for 28-pixel data)
in G, strided convs down to the same stem size in D, batch norm (or any named norm),
ReLU + Tanh in G, LeakyReLU(0.2) in D,
no fully connected hidden layers. Width ``n`` is G's last / D's first feature
width; each halving of resolution doubles it. With ``norm=batch`` and no
conditioning the layers (and parameter counts) are those of the standard DCGAN:
normalised convs and the first/last layers carry no bias.
The condition enters through :class:`~distgan.models.cond.GCond` /
:class:`~distgan.models.cond.DCond`, so one G and one D serve every mode.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from distgan.models.cond import DCond, DOut, GCond
from distgan.models.norms import make_norm
from distgan.models.spectral import spectral_norm
from distgan.modelspec import dcgan_levels


def identity(m: nn.Module) -> nn.Module:
    return m


def sn_wrap(enabled: bool) -> Callable[[nn.Module], nn.Module]:
    """Spectral norm (Miyato et al.) around a weight layer when enabled (u, v kept as buffers)."""
    return spectral_norm if enabled else identity


class DCGANGenerator(nn.Module):
    """z (B, d) [+ condition] -> image (B, C, R, R) in [-1, 1]."""

    def __init__(self, z_dim: int, width: int, channels: int, resolution: int, cond: GCond,
                 norm: str = "batch", branch_depth: int = 0):
        super().__init__()
        self.z_dim, self.resolution, self.channels = z_dim, resolution, channels
        self.cond = cond
        stem, lv = dcgan_levels(resolution)
        ch = width * 2 ** (lv - 1)
        bias = norm == "none"
        b_ch = cond.branch_channels(ch)
        self.stem = nn.ConvTranspose2d(cond.input_dim(z_dim), ch - b_ch, stem, 1, 0, bias=bias)
        self.stem_norm = cond.norm(norm, ch - b_ch)
        if b_ch:
            cond.build_branch(b_ch, stem, norm, branch_depth, nn.ReLU)
        blocks = []
        for _ in range(lv - 1):
            blocks.append(nn.ModuleDict({"conv": nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=bias),
                                         "norm": cond.norm(norm, ch // 2)}))
            ch //= 2
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False)
        self.pixel_map: nn.Module = nn.Identity()  # build_models sets the data's mapping

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.cond.input(z, y).view(z.shape[0], -1, 1, 1)
        h = torch.relu(self.cond.normed(self.stem_norm, self.stem(h), y))
        if self.cond.branch is not None:
            h = torch.cat([h, self.cond.branch_maps(y, h.dtype)], 1)
        for b in self.blocks:
            h = torch.relu(self.cond.normed(b["norm"], b["conv"](h), y))
        return self.pixel_map(torch.tanh(self.out(h)))


class DCGANDiscriminator(nn.Module):
    """image (B, C, R, R) [+ condition] -> DOut(logits (B,), features, class_logits)."""

    def __init__(self, width: int, channels: int, resolution: int, cond: DCond,
                 norm: str = "batch", sn: bool = False):
        super().__init__()
        self.cond = cond
        stem, lv = dcgan_levels(resolution)
        wrap = sn_wrap(sn)
        bias = norm == "none"
        ch = width
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels + cond.input_extra(), ch, 4, 2, 1, bias=False)),
                                   nn.LeakyReLU(0.2)]
        for _ in range(lv - 1):
            layers += [wrap(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=bias)), make_norm(norm, ch * 2),
                       nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.out = wrap(nn.Conv2d(ch, 1, stem, 1, 0, bias=False))
        cond.build_heads(ch, ch * stem * stem, wrap)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        h = self.features(self.cond.input(x, y))
        return self.cond.output(h, self.out(h).flatten(), y)
