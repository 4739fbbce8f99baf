"""Generator and discriminator families, built from the model config.

    G, D = build_models(cfg.model, DataInfo(channels=1, resolution=32, num_classes=10))
    info = data_info(cfg, read_manifest(cfg.data.shards))   # resolves data.attributes

``model.arch`` picks the family (:data:`BUILDERS`, one entry per
:data:`distgan.modelspec.ARCHS` entry: dcgan, upsample, mlp, pix2pix); ``model.cond``
how the label enters (see :mod:`distgan.models.cond`); ``model.norm`` /
``norm_g`` / ``norm_d`` the norms by name; ``model.spectral_norm`` wraps every D
weight layer. G is called ``G(z, y)`` (pix2pix: ``G(src)``), D ``D(x, y) -> DOut``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from distgan.config import Config, ModelConfig
from distgan.models.cond import DCond, DOut, GCond
from distgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from distgan.models.init import init_weights
from distgan.models.labels import LabelSpace
from distgan.models.mlp import MLPDiscriminator, MLPGenerator
from distgan.models.pix2pix import PatchDiscriminator, UNetGenerator
from distgan.models.pixelmap import pixel_map
from distgan.models.upsample import ConvDropoutDiscriminator, UpsampleGenerator
from distgan.modelspec import MAX_ATTRIBUTES, arch_spec, resolve_modes


@dataclass
class DataInfo:
    """What the models need to know about the data."""
    channels: int
    resolution: int
    num_classes: int = 0
    classes: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)  # the attributes G and D condition on
    attr_encoding: str = "onehot"  # "onehot" | "number" (Bordon et al. ablation)
    normalize: str = "minmax"  # pixel normalisation of the data; G's output is mapped to match
    mean: list[float] = field(default_factory=list)  # per-channel, [0, 1] units (zscore)
    std: list[float] = field(default_factory=list)


def select_attributes(wanted: list[str], available: list[str], source: str = "the shards") -> list[int]:
    """Column indices of ``wanted`` in ``available``; unknown names are an error listing the available ones."""
    unknown = [a for a in wanted if a not in available]
    if unknown:
        listing = ", ".join(available) if available else "(none: the shards carry no attributes)"
        raise ValueError(f"data.attributes: unknown attribute(s) {', '.join(map(repr, unknown))}; "
                         f"{source} offer: {listing}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"data.attributes lists an attribute twice: {wanted}")
    return [available.index(a) for a in wanted]


def data_info(cfg: Config, manifest: Any) -> DataInfo:
    """DataInfo for ``cfg`` and a shard manifest, with ``data.attributes`` resolved.

    The attributes are the chosen subset (all of the manifest's when
    ``data.attributes`` is empty), in the order the config names them.
    """
    attrs = list(manifest.attributes)
    if cfg.data.attributes:
        idx = select_attributes(list(cfg.data.attributes), attrs, f"the shards in {cfg.data.shards}")
        attrs = [attrs[i] for i in idx]
    return DataInfo(channels=manifest.channels, resolution=cfg.data.resolution,
                    num_classes=manifest.num_classes, classes=list(manifest.classes), attributes=attrs,
                    attr_encoding=cfg.data.attr_encoding, normalize=cfg.data.normalize,
                    mean=list(manifest.mean), std=list(manifest.std))


def label_space(mc: ModelConfig, info: DataInfo) -> LabelSpace:
    """What ``y`` is for this model: nothing, class labels or binary attributes."""
    g, d = resolve_modes(mc.cond, mc.cond_g, mc.cond_d)
    if arch_spec(mc.arch).paired or (g == "none" and d == "none" and not mc.cond_norm):
        return LabelSpace("none")
    if mc.cond == "multilabel":
        n = len(info.attributes)
        if n == 0:
            raise ValueError("model.cond=multilabel needs shards with attributes (e.g. CelebA) and "
                             "data.attributes naming the ones to condition on")
        if n > MAX_ATTRIBUTES:
            raise ValueError(f"model.cond=multilabel conditions on {n} attributes; choose at most "
                             f"{MAX_ATTRIBUTES} with data.attributes (each combination is a category), from: "
                             + ", ".join(info.attributes))
        return LabelSpace("attrs", n, info.attr_encoding)
    if info.num_classes < 1:
        raise ValueError(f"model.cond '{mc.cond}' needs labelled data, but the shards have no classes "
                         "(use model.cond=none, or model.cond=multilabel for attributes)")
    return LabelSpace("classes", info.num_classes)


@dataclass(frozen=True)
class Sides:
    """What every family's builder gets: the model config, the data, the label space and the norms by side."""
    mc: ModelConfig
    info: DataInfo
    space: LabelSpace
    norm_g: str
    norm_d: str

    def conds(self) -> tuple[GCond, DCond]:
        """How the label enters G and D. Built in this order, before either network: the random
        initialisation of every family's layers depends on it (a seed gives the same models)."""
        mc = self.mc
        g_mode, d_mode = resolve_modes(mc.cond, mc.cond_g, mc.cond_d)
        return (GCond(g_mode, self.space, mc.z_dim, mc.embed_dim, mc.cond_weight, mc.cond_norm or mc.cond == "cbn"),
                DCond(d_mode, self.space, mc.embed_dim, mc.cond_weight, mc.proj_features))


def _dcgan(s: Sides) -> tuple[nn.Module, nn.Module]:
    mc, C, R = s.mc, s.info.channels, s.info.resolution
    gc, dc = s.conds()
    return (DCGANGenerator(mc.z_dim, mc.width, C, R, gc, s.norm_g, mc.label_branch_depth),
            DCGANDiscriminator(mc.width, C, R, dc, s.norm_d, mc.spectral_norm))


def _upsample(s: Sides) -> tuple[nn.Module, nn.Module]:
    mc, C, R = s.mc, s.info.channels, s.info.resolution
    gc, dc = s.conds()
    return (UpsampleGenerator(mc.z_dim, mc.width, C, R, gc, s.norm_g, mc.kernel, mc.g_act, mc.label_branch_depth),
            ConvDropoutDiscriminator(mc.width, C, R, dc, s.norm_d, mc.spectral_norm, mc.kernel, mc.dropout))


def _mlp(s: Sides) -> tuple[nn.Module, nn.Module]:
    mc, C, R = s.mc, s.info.channels, s.info.resolution
    gc, dc = s.conds()
    return (MLPGenerator(mc.z_dim, mc.width, C, R, gc, s.norm_g),
            MLPDiscriminator(mc.width, C, R, dc, s.norm_d, mc.spectral_norm, mc.dropout))


def _pix2pix(s: Sides) -> tuple[nn.Module, nn.Module]:
    mc, C, R = s.mc, s.info.channels, s.info.resolution
    if mc.cond != "none" or mc.cond_g or mc.cond_d or mc.cond_norm:
        raise ValueError("model.arch=pix2pix is conditioned on the source image; set model.cond=none "
                         "(and leave cond_g, cond_d, cond_norm unset)")
    return (UNetGenerator(mc.width, C, R, s.norm_g, mc.dropout),
            PatchDiscriminator(mc.width, C, R, DCond("image", s.space, image_channels=C), s.norm_d, mc.spectral_norm))


BUILDERS: dict[str, Callable[[Sides], tuple[nn.Module, nn.Module]]] = {
    "dcgan": _dcgan, "upsample": _upsample, "mlp": _mlp, "pix2pix": _pix2pix}
"""(G, D) of each family of :data:`distgan.modelspec.ARCHS`, by ``model.arch``: adding a family is its
module, its ``ARCHS`` entry (what a config may ask of it) and its builder here."""


def build_models(mc: ModelConfig, info: DataInfo) -> tuple[nn.Module, nn.Module]:
    """Build (G, D) for ``mc`` and the data described by ``info``, weights initialised."""
    arch_spec(mc.arch)  # a ValueError naming the families for an unknown one
    G, D = BUILDERS[mc.arch](Sides(mc, info, label_space(mc, info), mc.norm_g or mc.norm, mc.norm_d or mc.norm))
    G.pixel_map = pixel_map(info.normalize, info.mean, info.std)
    init_weights(G, mc.init, mc.init_std)
    init_weights(D, mc.init, mc.init_std)
    return G, D


__all__ = ["BUILDERS", "DOut", "DataInfo", "LabelSpace", "build_models", "data_info", "label_space",
           "select_attributes"]
