"""How a condition (class label or attributes) enters G and D.

A :class:`Conditioning` owns every conditioning-specific piece, so the G and D
families stay single classes: extra input channels, label maps, conditional
norms, extra D heads. Modes are registered by name (``model.cond``).

Label tensors: class labels are ``long`` (B,) or, for weighted / multi-class
sampling, ``float`` (B, num_classes) label vectors; attributes are float (B, A).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from distgan.models.norms import make_norm


@dataclass
class DOut:
    """What a discriminator returns: adversarial logits, features, optional class logits."""
    logits: torch.Tensor  # (B,)
    features: torch.Tensor  # (B, F) pooled last hidden features (feature matching)
    class_logits: torch.Tensor | None = None  # (B, num_classes) for AC-GAN


def label_vector(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) class indices or (B, C) weights -> float (B, C) label vector."""
    if y.dtype in (torch.long, torch.int32, torch.int64):
        return F.one_hot(y, num_classes).float()
    return y.float()


class Conditioning(nn.Module):
    """Unconditional default; subclasses override the hooks they need."""

    def __init__(self, num_classes: int = 0, weight: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.weight = weight

    # G side
    def g_input_extra(self) -> int:
        return 0

    def g_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return z

    def g_norm(self, norm: str, channels: int) -> nn.Module:
        return make_norm(norm, channels)

    def apply_norm(self, norm: nn.Module, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return norm(h)

    # D side
    def d_input_extra(self) -> int:
        return 0

    def d_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return x

    def build_d_heads(self, d: nn.Module, feat_ch: int, wrap: Callable[[nn.Module], nn.Module]) -> None:
        pass

    def d_output(self, d: nn.Module, h: torch.Tensor, logits: torch.Tensor,
                 y: torch.Tensor | None) -> DOut:
        return DOut(logits=logits, features=h.mean(dim=(2, 3)))


class ChannelConditioning(Conditioning):
    """Seed 000: one-hot label concatenated to G's latent and as constant maps to D's image.

    ``weight`` scales the label channels ("weighted conditioning"); sampling may
    pass soft / multi-class label vectors.
    """

    def g_input_extra(self) -> int:
        return self.num_classes

    def g_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([z, self.weight * label_vector(_need(y), self.num_classes).to(z.dtype)], 1)

    def d_input_extra(self) -> int:
        return self.num_classes

    def d_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        v = self.weight * label_vector(_need(y), self.num_classes).to(x.dtype)
        maps = v[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return torch.cat([x, maps], 1)


def _need(y: torch.Tensor | None) -> torch.Tensor:
    if y is None:
        raise ValueError("this model is class-conditional: pass labels y")
    return y


CONDITIONINGS: dict[str, type[Conditioning]] = {
    "none": Conditioning,
    "channels": ChannelConditioning,
}


def make_conditioning(mode: str, num_classes: int, weight: float = 1.0, **kwargs) -> Conditioning:
    """Build the conditioning object for ``model.cond = mode``."""
    if mode not in CONDITIONINGS:
        raise ValueError(f"model.cond '{mode}' is not available; choose one of {', '.join(CONDITIONINGS)}")
    if mode != "none" and num_classes < 1:
        raise ValueError(f"model.cond '{mode}' needs labelled data, but the shards have no classes "
                         "(use model.cond=none)")
    return CONDITIONINGS[mode](num_classes=num_classes, weight=weight, **kwargs)
