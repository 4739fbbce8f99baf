"""What each phase minimises: the D and G objectives for every model family.

``d_loss_fn(models, batch, settings)`` and ``g_loss_fn(...)`` build the phase
loss from the batch (``real`` images, optional ``label``), fresh noise and
labels, and report their statistics. Adding a conditioning mode or objective
happens here and in ``distgan.losses``; the optimisation mechanics
(autocast, scaling, DDP, stepping) stay in ``phases.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from distgan import losses
from distgan.train import stats


@dataclass
class GanModels:
    G: nn.Module  # as prepared (DDP-wrapped when distributed)
    D: nn.Module
    G_raw: nn.Module  # the plain modules behind the wrappers
    D_raw: nn.Module
    z_dim: int
    num_classes: int


@dataclass
class LossSettings:
    loss: str = "bce"
    feature_matching: bool = False
    aux_weight: float = 1.0
    conditional: bool = False
    acgan: bool = False



def sample_latent(n: int, m: GanModels, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise z ~ N(0, I) and, for conditional models, labels ~ U{0..c-1} (seed 001 Algorithm 3)."""
    z = torch.randn(n, m.z_dim, device=device)
    y = torch.randint(0, m.num_classes, (n,), device=device) if m.num_classes else None
    return z, y


def d_loss_fn(m: GanModels, batch: dict, s: LossSettings) -> torch.Tensor:
    real, y_real = batch["real"], batch.get("label") if s.conditional else None
    z, y_fake = sample_latent(real.shape[0], m, real.device)
    with torch.no_grad():  # G is not trained here; unwrapped to skip DDP bookkeeping
        fake = m.G_raw(z, y_fake)
    out_real = m.D(real, y_real)
    out_fake = m.D(fake, y_fake)
    loss = losses.d_loss(s.loss, out_real.logits, out_fake.logits)
    if s.acgan:
        aux = losses.aux_class_loss(out_real.class_logits, y_real) + \
            losses.aux_class_loss(out_fake.class_logits, y_fake)
        stats.report("loss_d_aux", aux)
        loss = loss + s.aux_weight * aux
    stats.report("loss_d", loss)
    stats.report("d_real", torch.sigmoid(out_real.logits))
    stats.report("d_fake", torch.sigmoid(out_fake.logits))
    return loss


def g_loss_fn(m: GanModels, batch: dict, s: LossSettings) -> torch.Tensor:
    real = batch["real"]
    z, y_fake = sample_latent(real.shape[0], m, real.device)
    fake = m.G(z, y_fake)
    out_fake = m.D_raw(fake, y_fake)
    if s.feature_matching:
        with torch.no_grad():
            real_feats = m.D_raw(real, batch.get("label") if s.conditional else None).features
        loss = losses.feature_matching(real_feats, out_fake.features)
    else:
        loss = losses.g_loss(s.loss, out_fake.logits)
    if s.acgan:
        aux = losses.aux_class_loss(out_fake.class_logits, y_fake)
        stats.report("loss_g_aux", aux)
        loss = loss + s.aux_weight * aux
    stats.report("loss_g", loss)
    stats.report("d_fake_g", torch.sigmoid(out_fake.logits))
    return loss
