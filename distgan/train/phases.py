"""The two phases of a GAN step, D then G, as data plus two loss functions.

Why the D phase looks the way it does (DDP correctness): D sees the real batch
and the fake batch in two forwards (so batch-norm statistics are per batch, as
in seed 001 Algorithm 1), the two losses are summed, and there is ONE backward
per phase. Two backwards per phase under DDP desynchronise replicas silently.
In the G phase D is frozen (requires_grad=False) and called unwrapped (no DDP
hooks: nothing of D is reduced), while gradients still flow through it into G.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from distgan import losses
from distgan.train import stats
from distgan.train.precision import Precision


class NonFiniteLoss(FloatingPointError):
    """A phase produced a NaN/Inf loss; the message names phase and step."""


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


@dataclass
class Phase:
    name: str  # "D" or "G"
    model: nn.Module  # what this phase optimises (prepared module)
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[GanModels, dict, LossSettings], torch.Tensor]
    repeats: int = 1
    others: list[nn.Module] = field(default_factory=list)  # frozen during this phase
    new_batch: bool = True  # draw a fresh real batch before each repeat


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


def run_phase(phase: Phase, m: GanModels, batch: dict, s: LossSettings, prec: Precision,
              step: int, skip_nonfinite: bool = False) -> bool:
    """One optimisation step of ``phase``; returns False when a non-finite loss was skipped."""
    for other in phase.others:
        other.requires_grad_(False)
    phase.model.requires_grad_(True)
    phase.opt.zero_grad(set_to_none=True)
    with prec.autocast():
        loss = phase.loss_fn(m, batch, s)
    if not torch.isfinite(loss.detach()).item():
        phase.opt.zero_grad(set_to_none=True)
        if skip_nonfinite:
            stats.report(f"skipped_{phase.name}", 1.0)
            return False
        raise NonFiniteLoss(f"non-finite {phase.name} loss ({loss.item()}) at step {step}; "
                            "nothing was saved from this step. Lower the learning rate, or set "
                            "train.skip_nonfinite=true to skip such steps")
    phase.scaler.scale(loss).backward()
    phase.scaler.unscale_(phase.opt)
    gn = torch.nn.utils.clip_grad_norm_(phase.model.parameters(), float("inf"))
    stats.report(f"grad_norm_{phase.name.lower()}", gn)
    phase.scaler.step(phase.opt)
    phase.scaler.update()
    phase.sched.step()
    for other in phase.others:
        other.requires_grad_(True)
    return True
