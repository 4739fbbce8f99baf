"""Adversarial losses as pure functions of D's logits (Viel's Algorithm 1 and friends).

``d_loss(name, real_logits, fake_logits)`` and ``g_loss(name, fake_logits)``:

- ``bce``: D minimises BCE(D(x), 1) + BCE(D(G(z)), 0); G minimises BCE(D(G(z)), 1)
  (the non-saturating G loss of the source experiments). Sigmoid is folded into the loss
  (``binary_cross_entropy_with_logits``) for numerical stability.
- ``nonsat``: same as ``bce`` (named for readers who know it that way).
- ``hinge``: D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z)).
- ``lsgan``: least squares with targets 1 / 0; G: (D(G(z)) - 1)^2 / 2.

Logits may be (B,) per image or (B, P) per patch (PatchGAN): every loss is a
mean over all entries. Also: feature matching (Viel), the AC-GAN class loss
(Viel; Lecture 9a) and pix2pix's L1 reconstruction term (Lecture 9a).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "nonsat", "hinge", "lsgan")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from logits on real and fake samples."""
    if name in ("bce", "nonsat"):
        return _bce(real, 1.0) + _bce(fake, 0.0)
    if name == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if name == "lsgan":
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()
    raise ValueError(f"unknown train.loss '{name}'; available: {', '.join(LOSSES)}")


def g_loss(name: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's logits on generated samples."""
    if name in ("bce", "nonsat"):
        return _bce(fake, 1.0)
    if name == "hinge":
        return -fake.mean()
    if name == "lsgan":
        return 0.5 * ((fake - 1.0) ** 2).mean()
    raise ValueError(f"unknown train.loss '{name}'; available: {', '.join(LOSSES)}")


def feature_matching(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> torch.Tensor:
    """Viel: MSE between batch-mean D features of real and fake images."""
    return F.mse_loss(fake_feats.mean(0), real_feats.detach().mean(0))


def aux_class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN auxiliary classifier loss (cross entropy with the conditioning labels)."""
    return F.cross_entropy(class_logits, labels)


def l1_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pix2pix reconstruction term: mean |G(src) - target|."""
    return (fake - target).abs().mean()
