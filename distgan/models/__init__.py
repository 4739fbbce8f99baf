"""Generator and discriminator families, built from the model config.

    G, D = build_models(cfg.model, DataInfo(channels=1, resolution=32, num_classes=10))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from distgan.config import ModelConfig
from distgan.models.cond import DOut, make_conditioning
from distgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from distgan.models.init import init_weights


@dataclass
class DataInfo:
    """What the models need to know about the data."""
    channels: int
    resolution: int
    num_classes: int = 0
    classes: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)


def build_models(mc: ModelConfig, info: DataInfo) -> tuple[nn.Module, nn.Module]:
    """Build (G, D) for ``mc`` and the data described by ``info``, weights initialised."""
    num_classes = info.num_classes if mc.cond != "none" else 0
    norm_g = mc.norm_g or mc.norm
    norm_d = mc.norm_d or mc.norm
    if mc.arch != "dcgan":
        raise ValueError(f"model.arch '{mc.arch}' is not available yet; available: dcgan")
    g_cond = make_conditioning(mc.cond, num_classes, mc.cond_weight)
    d_cond = make_conditioning(mc.cond, num_classes, mc.cond_weight)
    G = DCGANGenerator(mc.z_dim, mc.width, info.channels, info.resolution, g_cond, norm_g)
    D = DCGANDiscriminator(mc.width, info.channels, info.resolution, d_cond, norm_d, mc.spectral_norm)
    init_weights(G, mc.init, mc.init_std)
    init_weights(D, mc.init, mc.init_std)
    return G, D


__all__ = ["DOut", "DataInfo", "build_models"]
