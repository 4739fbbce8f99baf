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

from distgan.train import stats
from distgan.train.objectives import GanModels, LossSettings
from distgan.train.precision import Precision


class NonFiniteLoss(FloatingPointError):
    """A phase produced a NaN/Inf loss; the message names phase and step."""


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
