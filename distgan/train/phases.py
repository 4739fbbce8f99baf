"""The two phases of a GAN step, D then G, as data plus two loss functions.

Why the D phase looks the way it does (DDP correctness): D sees the real batch
and the fake batch in two forwards (so batch-norm statistics are per batch, as
in seed 001 Algorithm 1), the two losses are summed, and there is ONE backward
per phase (per micro-step). DDP reduces gradients during backward, so one
backward means one all-reduce of the summed gradient; two backwards per phase
under DDP desynchronise replicas silently (measured; see the README). The
alternative, one forward on ``cat(real, fake)``, would mix real and fake in one
set of batch-norm statistics, which changes what plain-BN D learns. In the G
phase D is frozen (requires_grad=False) and called unwrapped (no DDP hooks:
nothing of D is reduced, so AC-GAN/projection heads cannot trigger "unused
parameter" errors), while gradients still flow through it into G.

Gradient accumulation (``train.grad_accum = k``): k micro-batches per phase,
each loss divided by k, the first k-1 backwards inside the engine's no-sync
context (DDP skips the all-reduce), the last one synchronises, then one
optimizer step. A non-finite loss is detected on any rank and decided on all
ranks together (a rank raising alone would leave the others hanging).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from distgan import dist
from distgan.train import stats
from distgan.train.objectives import GanModels, LossSettings
from distgan.train.precision import Precision


class NonFiniteLoss(FloatingPointError):
    """A phase produced a NaN/Inf loss; the message names phase and step."""


class TorchEngine:
    """Backward / no-sync / optimizer step for plain or DDP-wrapped modules (the Accelerate path)."""

    name = "accelerate"

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        model = getattr(model, "_orig_mod", model)  # torch.compile'd DDP: the wrapper owns no_sync
        return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()

    def backward(self, phase: "Phase", loss: torch.Tensor) -> None:
        phase.scaler.scale(loss).backward()

    def step(self, phase: "Phase") -> torch.Tensor:
        """Unscale, measure the gradient norm, step optimizer + scaler + schedule; returns the norm."""
        phase.scaler.unscale_(phase.opt)
        grads = [p.grad for p in phase.model.parameters() if p.grad is not None]
        gn = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())  # foreach kernels
        phase.scaler.step(phase.opt)  # skipped by the scaler (fp16) when grads are inf/nan
        phase.scaler.update()
        phase.sched.step()
        return gn

    def zero_grad(self, phase: "Phase") -> None:
        phase.opt.zero_grad(set_to_none=True)


@dataclass
class Phase:
    name: str  # "D" or "G"
    model: nn.Module  # what this phase optimises (prepared module: DDP or DeepSpeed engine)
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[GanModels, dict, LossSettings], torch.Tensor]
    repeats: int = 1
    others: list[nn.Module] = field(default_factory=list)  # frozen during this phase
    new_batch: bool = True  # draw fresh real batches before each repeat
    engine: Any = field(default_factory=TorchEngine)


def run_phase(phase: Phase, m: GanModels, batch: dict | list[dict], s: LossSettings, prec: Precision,
              step: int, skip_nonfinite: bool = False) -> bool:
    """One optimisation step of ``phase`` over one batch or a list of micro-batches.

    Returns False when a non-finite loss was skipped (``skip_nonfinite``);
    raises :class:`NonFiniteLoss` otherwise. Either way no optimizer state was
    touched by the bad step.
    """
    micro = batch if isinstance(batch, list) else [batch]
    k = len(micro)
    for other in phase.others:
        other.requires_grad_(False)
    phase.model.requires_grad_(True)
    phase.engine.zero_grad(phase)
    try:
        for i, mb in enumerate(micro):
            sync = i == k - 1
            with contextlib.nullcontext() if sync else phase.engine.no_sync(phase.model):
                with prec.autocast():
                    loss = phase.loss_fn(m, mb, s)
                bad = not bool(torch.isfinite(loss.detach()).item())
                if dist.any_rank(bad):  # every rank takes the same decision
                    phase.engine.zero_grad(phase)
                    if skip_nonfinite:
                        stats.report(f"skipped_{phase.name}", 1.0)
                        return False
                    where = f"({loss.item()}) on this rank" if bad else \
                        f"on another rank (this rank's: {loss.item():.4g})"
                    raise NonFiniteLoss(
                        f"non-finite {phase.name} loss {where} in phase {phase.name} of step "
                        f"{step + 1} (after {step} completed steps); nothing was saved from this step. Lower "
                        "the learning rate, or set train.skip_nonfinite=true to skip such steps")
                phase.engine.backward(phase, loss / k if k > 1 else loss)
        gn = phase.engine.step(phase)
        stats.report(f"grad_norm_{phase.name.lower()}", gn)
    finally:
        for other in phase.others:
            other.requires_grad_(True)
    return True
