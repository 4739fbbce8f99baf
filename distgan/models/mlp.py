"""Fully connected conditional GAN (Toutouh, FashionMNIST).

G: [z, embed(y)] -> n -> 2n -> 4n -> C*R*R with LeakyReLU(0.2) and tanh
(n = 256: 110 -> 256 -> 512 -> 1024 -> 784). D: [flat image, embed(y)] -> 4n ->
2n -> n -> 1 with LeakyReLU(0.2) and dropout (794 -> 1024 -> 512 -> 256 -> 1).
Toutouh's cGAN uses no normalisation (``model.norm=none``); a named norm is applied to
the hidden vectors as 1x1 maps, so batch / synced / conditional BN work too.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from distgan.models.cond import DCond, DOut, GCond
from distgan.models.dcgan import sn_wrap
from distgan.models.norms import make_norm


def _vec_norm(norm: nn.Module, h: torch.Tensor, apply) -> torch.Tensor:
    return apply(norm, h[:, :, None, None]).flatten(1)


def _check(norm: str) -> None:
    if norm == "instance":
        raise ValueError("model.arch=mlp cannot use instance norm (a vector has no spatial extent to "
                         "normalise over); use model.norm=none or batch")


class MLPGenerator(nn.Module):
    """z (B, d) [+ condition] -> image (B, C, R, R) in [-1, 1]."""

    def __init__(self, z_dim: int, width: int, channels: int, resolution: int, cond: GCond, norm: str = "none"):
        super().__init__()
        _check(norm)
        if cond.mode == "branch":
            raise ValueError("model.arch=mlp has no feature maps for a label branch; use model.cond=embed_concat "
                             "or channels")
        self.z_dim, self.resolution, self.channels, self.cond = z_dim, resolution, channels, cond
        dims = [cond.input_dim(z_dim), width, 2 * width, 4 * width]
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=norm == "none") for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(cond.norm(norm, d) for d in dims[1:])
        self.out = nn.Linear(dims[-1], channels * resolution * resolution)
        self.pixel_map: nn.Module = nn.Identity()  # build_models sets the data's mapping

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.cond.input(z, y)
        for lin, norm in zip(self.linears, self.norms):
            h = nn.functional.leaky_relu(
                _vec_norm(norm, lin(h), lambda n, x: self.cond.normed(n, x, y)), 0.2)
        x = torch.tanh(self.out(h)).view(z.shape[0], self.channels, self.resolution, self.resolution)
        return self.pixel_map(x)


class MLPDiscriminator(nn.Module):
    """image (B, C, R, R) [+ condition] -> DOut(logits (B,), features (B, n))."""

    def __init__(self, width: int, channels: int, resolution: int, cond: DCond, norm: str = "none",
                 sn: bool = False, dropout: float = 0.3):
        super().__init__()
        _check(norm)
        self.cond = cond
        wrap = sn_wrap(sn)
        dims = [channels * resolution * resolution + cond.input_extra(), 4 * width, 2 * width, width]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            layers.append(wrap(nn.Linear(a, b, bias=i == 0 or norm == "none")))
            if i > 0:
                layers.append(_Flat(make_norm(norm, b)))
            layers += [nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.out = wrap(nn.Linear(width, 1))
        cond.build_heads(width, width, wrap)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        h = self.features(self.cond.input(x.flatten(1), y))
        return self.cond.output(h, self.out(h).flatten(), y)


class _Flat(nn.Module):
    """A 2-d norm applied to (B, F) vectors as (B, F, 1, 1) maps."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h[:, :, None, None]).flatten(1)
