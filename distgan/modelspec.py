"""What a model config asks for before any layer exists: the rules G and D are built by.

Torch-free, so :meth:`distgan.config.Config.validate` checks a config against the
same rules the model families apply when they build (one owner for each rule):

- :data:`ARCHS`: the model families by ``model.arch``, each an :class:`ArchSpec` (its
  stage plan, whether it is conditioned on a source image, whether it works on
  feature maps); :mod:`distgan.models` builds each entry's G and D;

- :func:`resolve_modes`: the (G side, D side) conditioning pair of ``model.cond`` and
  its ``cond_g`` / ``cond_d`` overrides (the table is in :mod:`distgan.models.cond`);
- the stage plan of each family for ``data.resolution``: :func:`dcgan_levels`
  (4 * 2^L or 7 * 2^L), :func:`upsample_levels` (s * 2^L, 3 <= s <= 7),
  :func:`unet_levels` (a power of two >= 8);
- :data:`MAX_ATTRIBUTES`: how many attributes a multi-label model conditions on.

Each raises ``ValueError`` naming the setting and what it needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

MAX_ATTRIBUTES = 8  # 2^A combinations become categories (conditional BN, sample-grid rows)

G_MODES = ("none", "channels", "embed_concat", "embed_mul", "branch")
D_MODES = ("none", "channels", "embed_concat", "projection", "acgan", "image")
MODES: dict[str, tuple[str, str]] = {
    "none": ("none", "none"), "channels": ("channels", "channels"),
    "embed_concat": ("embed_concat", "embed_concat"), "embed_mul": ("embed_mul", "embed_concat"),
    "projection": ("channels", "projection"), "acgan": ("channels", "acgan"),
    "cbn": ("none", "channels"), "multilabel": ("branch", "channels"),
}


def resolve_modes(cond: str, cond_g: str = "", cond_d: str = "") -> tuple[str, str]:
    """(G side, D side) for ``model.cond`` and its per-side overrides."""
    if cond not in MODES:
        raise ValueError(f"model.cond '{cond}' is not available; choose one of {', '.join(MODES)}")
    g, d = MODES[cond]
    g, d = cond_g or g, cond_d or d
    if g not in G_MODES:
        raise ValueError(f"model.cond_g '{g}' is not available; choose one of {', '.join(G_MODES)}")
    if d not in D_MODES:
        raise ValueError(f"model.cond_d '{d}' is not available; choose one of {', '.join(D_MODES)}")
    return g, d


def dcgan_levels(resolution: int) -> tuple[int, int]:
    """(stem size s, number of x2 stages L) with ``resolution = s * 2**L``, s in {4, 7}, L >= 1.

    s = 4 gives the standard DCGAN (32, 64, 128 px); s = 7 gives the 7 -> 14 -> 28
    topology of the InfoGAN-style models used on 28x28 MNIST / Fashion-MNIST
    (Lucic et al., "Are GANs Created Equal?"), so those data sets train and are
    scored at their native size instead of being resized to 32.
    """
    for s in (4, 7):
        lv = math.log2(resolution / s) if resolution > 0 else -1
        if lv >= 1 and lv == int(lv):
            return s, int(lv)
    raise ValueError(f"model.arch=dcgan needs data.resolution = 4 * 2^L (8, 16, 32, 64, 128, ...) "
                     f"or 7 * 2^L (14, 28, 56, ...), got {resolution}")


def upsample_levels(resolution: int) -> tuple[int, int]:
    """(stem size s, number of x2 stages L) with resolution = s * 2^L and s <= 7."""
    s, lv = resolution, 0
    while s % 2 == 0 and s > 7:
        s, lv = s // 2, lv + 1
    if lv == 0 or s < 3:
        raise ValueError(f"model.arch=upsample needs data.resolution = s * 2^L with 3 <= s <= 7 and L >= 1 "
                         f"(e.g. 28, 32, 64), got {resolution}")
    return s, lv


def unet_levels(resolution: int) -> int:
    """Down-sampling levels of the pix2pix U-Net (down to 1x1)."""
    lv = math.log2(resolution) if resolution > 0 else -1
    if resolution < 8 or lv != int(lv):
        raise ValueError(f"model.arch=pix2pix needs data.resolution a power of two >= 8 (256 in the paper), "
                         f"got {resolution}")
    return int(lv)


def any_resolution(resolution: int) -> None:
    """The plan of a family that flattens its images: every positive resolution builds."""
    if resolution < 1:
        raise ValueError(f"data.resolution must be positive, got {resolution}")


@dataclass(frozen=True)
class ArchSpec:
    """A model family as a config sees it (``model.arch``); its layers live in :mod:`distgan.models`."""

    plan: Callable[[int], Any]
    """The family's stage plan for ``data.resolution``; a ValueError naming what it needs otherwise."""
    paired: bool = False
    """Conditioned on a source image (image-to-image), never on a label or noise alone."""
    feature_maps: bool = True
    """G and D work on feature maps: instance norm and a G-side label branch are possible."""


ARCHS: dict[str, ArchSpec] = {
    "dcgan": ArchSpec(dcgan_levels),  # strided (transposed) convolutions from a 4x4 or 7x7 stem (Radford et al.)
    "upsample": ArchSpec(upsample_levels),  # upsampling + convolution in G, convolutions with dropout in D
    "mlp": ArchSpec(any_resolution, feature_maps=False),  # fully connected G and D on flattened images
    "pix2pix": ArchSpec(unet_levels, paired=True),  # U-Net G and PatchGAN D on (source, target) pairs (Isola et al.)
}


def arch_spec(arch: str) -> ArchSpec:
    """The :data:`ARCHS` entry of ``model.arch``; a ValueError naming the families otherwise."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ValueError(f"model.arch '{arch}' is not available; choose one of {', '.join(ARCHS)}") from None
