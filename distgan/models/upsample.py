"""Upsample + conv generator and conv + dropout discriminator (Lecture 9a's MNIST GAN and AC-GAN).

G: fully connected z -> s x s x 4n (7x7x256 for 28x28, n=64), then per stage a
k x k conv halving the width, norm, activation and a x2 nearest upsample, and a
last k x k conv to the image with tanh. D: per stage a k x k conv (widths n, 2n,
...), norm (none in the lecture's models), LeakyReLU(0.2), 2x2 average-pool down-sampling
and dropout, then a fully connected layer on the flattened features (6272 -> 1
for 28x28, n=64). The resolution is s * 2^L with s <= 7 (28 -> 7, 32 -> 4).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from distgan.models.cond import DCond, DOut, GCond
from distgan.models.dcgan import sn_wrap
from distgan.models.norms import make_norm
from distgan.modelspec import upsample_levels

ACTS = {"relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2)}


class UpsampleGenerator(nn.Module):
    """z (B, d) [+ condition] -> image (B, C, R, R) in [-1, 1]."""

    def __init__(self, z_dim: int, width: int, channels: int, resolution: int, cond: GCond,
                 norm: str = "batch", kernel: int = 5, act: str = "lrelu", branch_depth: int = 0):
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.cond = z_dim, resolution, channels, cond
        self.s, lv = upsample_levels(resolution)
        ch = width * 2 ** lv
        b_ch = cond.branch_channels(ch)
        self.act = ACTS[act]()
        self.stem = nn.Linear(cond.input_dim(z_dim), (ch - b_ch) * self.s * self.s, bias=norm == "none")
        self.stem_norm = cond.norm(norm, ch - b_ch)
        if b_ch:
            cond.build_branch(b_ch, self.s, norm, branch_depth, ACTS[act])
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(lv):
            self.convs.append(nn.Conv2d(ch, ch // 2, kernel, 1, kernel // 2, bias=norm == "none"))
            self.norms.append(cond.norm(norm, ch // 2))
            ch //= 2
        self.out = nn.Conv2d(ch, channels, kernel, 1, kernel // 2)
        self.pixel_map: nn.Module = nn.Identity()  # build_models sets the data's mapping

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(self.cond.input(z, y)).view(z.shape[0], -1, self.s, self.s)
        h = self.act(self.cond.normed(self.stem_norm, h, y))
        if self.cond.branch is not None:
            h = torch.cat([h, self.cond.branch_maps(y, h.dtype)], 1)
        for conv, norm in zip(self.convs, self.norms):
            h = self.act(self.cond.normed(norm, conv(h), y))
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        return self.pixel_map(torch.tanh(self.out(h)))


class ConvDropoutDiscriminator(nn.Module):
    """image (B, C, R, R) [+ condition] -> DOut; conv, LeakyReLU, pool, dropout per stage."""

    def __init__(self, width: int, channels: int, resolution: int, cond: DCond, norm: str = "none",
                 sn: bool = False, kernel: int = 5, dropout: float = 0.3):
        super().__init__()
        self.cond = cond
        s, lv = upsample_levels(resolution)
        wrap = sn_wrap(sn)
        layers: list[nn.Module] = []
        ch_in, ch = channels + cond.input_extra(), width
        for i in range(lv):
            layers.append(wrap(nn.Conv2d(ch_in, ch, kernel, 1, kernel // 2, bias=i == 0 or norm == "none")))
            if i > 0:  # as in DCGAN, the first layer sees raw pixels un-normalised
                layers.append(make_norm(norm, ch))
            layers += [nn.LeakyReLU(0.2), nn.AvgPool2d(2), nn.Dropout(dropout)]
            ch_in, ch = ch, ch * 2
        self.features = nn.Sequential(*layers)
        flat = ch_in * s * s
        self.out = wrap(nn.Linear(flat, 1))
        cond.build_heads(ch_in, flat, wrap)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        h = self.features(self.cond.input(x, y))
        return self.cond.output(h, self.out(h.flatten(1)).flatten(), y)
