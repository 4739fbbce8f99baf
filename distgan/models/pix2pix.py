"""pix2pix (Isola et al.; Lecture 9a): U-Net generator and PatchGAN discriminator.

G(src) -> image: an encoder of 4x4 stride-2 convs down to 1x1 (widths n, 2n, 4n,
8n, 8n, ...; LeakyReLU(0.2); no norm on the first and innermost layer) and a
decoder of 4x4 stride-2 transposed convs (ReLU, norm) whose every output is
concatenated with the mirrored encoder output (skip connections); dropout on the
three decoder layers nearest the bottleneck (``model.dropout``, 0.5 in the
paper), tanh out. At 256x256 and n=64 this is the paper's 8-level U-Net.

D(x, src): the 70x70 PatchGAN: (target or generated, source) stacked as channels,
three 4x4 stride-2 convs (n, 2n, 4n), a stride-1 conv (8n) and a stride-1 conv to
one logit per patch; fewer stride-2 convs at small resolutions so >= 2x2
patches remain. The loss averages over patches (``DOut.patch_logits``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from distgan.models.cond import DCond, DOut
from distgan.models.dcgan import sn_wrap
from distgan.models.norms import make_norm
from distgan.modelspec import unet_levels


class UNetGenerator(nn.Module):
    """src (B, C, R, R) in [-1, 1] -> translated image (B, C, R, R) in [-1, 1]."""

    def __init__(self, width: int, channels: int, resolution: int, norm: str = "batch", dropout: float = 0.5,
                 out_channels: int = 0):
        super().__init__()
        self.resolution, self.channels = resolution, channels
        lv = unet_levels(resolution)
        widths = [width * min(2 ** i, 8) for i in range(lv)]
        bias = norm == "none"
        self.downs = nn.ModuleList([nn.Conv2d(channels, widths[0], 4, 2, 1)])
        for i in range(1, lv):
            innermost = i == lv - 1
            layers: list[nn.Module] = [nn.LeakyReLU(0.2),
                                       nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=bias or innermost)]
            if not innermost:  # the 1x1 bottleneck has nothing to normalise over
                layers.append(make_norm(norm, widths[i]))
            self.downs.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        for k, i in enumerate(range(lv - 1, 0, -1)):
            c_in = widths[i] if i == lv - 1 else 2 * widths[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, widths[i - 1], 4, 2, 1, bias=bias),
                      make_norm(norm, widths[i - 1])]
            if k < 3 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.ups.append(nn.Sequential(*layers))
        self.out = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out_channels or channels, 4, 2, 1),
                                 nn.Tanh())
        self.pixel_map: nn.Module = nn.Identity()  # build_models sets the data's mapping

    def forward(self, src: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if src.dim() != 4:
            raise ValueError(f"the pix2pix generator translates source images (B, C, H, W); got a tensor of "
                             f"shape {tuple(src.shape)} (it takes no latent vector)")
        skips = []
        h = src
        for down in self.downs:
            h = down(h)
            skips.append(h)
        h = skips.pop()
        for up in self.ups:
            h = torch.cat([up(h), skips.pop()], 1)
        return self.pixel_map(self.out(h))


def patch_strides(resolution: int) -> int:
    """Stride-2 layers of the PatchGAN: 3 (70x70 patches) unless the image is too small."""
    return max(1, min(3, int(math.log2(max(resolution, 2) / 4))))


class PatchDiscriminator(nn.Module):
    """(x, src) -> DOut(logits = mean patch logit (B,), patch_logits (B, P), features)."""

    def __init__(self, width: int, channels: int, resolution: int, cond: DCond, norm: str = "batch",
                 sn: bool = False):
        super().__init__()
        self.cond = cond
        wrap = sn_wrap(sn)
        bias = norm == "none"
        n_down = patch_strides(resolution)
        ch = width
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels + cond.input_extra(), ch, 4, 2, 1)), nn.LeakyReLU(0.2)]
        for i in range(1, n_down + 1):
            nxt = width * min(2 ** i, 8)
            stride = 2 if i < n_down else 1
            layers += [wrap(nn.Conv2d(ch, nxt, 4, stride, 1, bias=bias)), make_norm(norm, nxt), nn.LeakyReLU(0.2)]
            ch = nxt
        self.features = nn.Sequential(*layers)
        self.out = wrap(nn.Conv2d(ch, 1, 4, 1, 1))
        cond.build_heads(ch, ch, wrap)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        h = self.features(self.cond.input(x, y))
        patches = self.out(h).flatten(1)
        return DOut(logits=patches.mean(1), features=h.mean((2, 3)), patch_logits=patches)
