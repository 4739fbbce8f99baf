"""The phases of a GAN step, D then G (then lazy regularisation), as data plus their loss functions.

Why the D phase looks the way it does (DDP correctness): D sees the real batch
and the fake batch in two forwards (so batch-norm statistics are per batch, as
in Viel's Algorithm 1), the two losses are summed, and there is ONE backward
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

A phase that runs less often than every step is a row with an interval, not a
branch: lazy R1 (``train.r1_every``) is a ``D_r1`` row after G's, every K steps,
stepping D's optimizer with a loss of the penalty alone; it shares D's optimizer,
schedule and scaler (``shares="D"``: saved once, under D; the schedule steps with
D's own phase only).

A :class:`Phase` names its engine (:class:`TorchEngine` for plain/DDP modules,
:class:`DeepSpeedPhaseEngine`; both below), which does the backward, the
no-sync context and the optimizer step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from distgan import dist
from distgan.train import stats
from distgan.train.modules import GanModules
from distgan.train.objectives import LossSettings
from distgan.train.precision import Precision


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
        if phase.shares is None:  # a phase on another's optimizer leaves the schedule to that phase
            phase.sched.step()
        return gn

    def zero_grad(self, phase: "Phase") -> None:
        phase.opt.zero_grad(set_to_none=True)


class DeepSpeedPhaseEngine(TorchEngine):
    """Backward / step through a DeepSpeed engine (it owns gradient reduction and ZeRO partitions)."""

    name = "deepspeed"

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        # DeepSpeed schedules the reduction across micro-steps itself (gradient_accumulation_steps
        # in its config); its own no_sync() refuses ZeRO stage 2
        return contextlib.nullcontext()

    def backward(self, phase: "Phase", loss: torch.Tensor) -> None:
        # run_phase already divided by grad_accum; DeepSpeed must not divide again
        phase.model.backward(loss, scale_wrt_gas=False)
        phase.model.step()  # a no-op between accumulation boundaries; the optimizer step at one

    def step(self, phase: "Phase") -> torch.Tensor:
        if phase.shares is None:
            phase.sched.step()  # the schedule drives the base optimizer's param_groups
        gn = phase.model.get_global_grad_norm()
        return torch.tensor(float("nan") if gn is None else float(gn))

    def zero_grad(self, phase: "Phase") -> None:
        phase.model.zero_grad()


class NonFiniteLoss(FloatingPointError):
    """A phase produced a NaN/Inf loss; the message names phase and step."""


class DeferredNonFinite:
    """Non-finite handling without a host sync in the step (``train.sync_free``).

    The per-phase "loss was not finite" flag stays a device tensor (max over
    ranks, so every rank agrees) and is handed to the fused Adam kernel as
    ``found_inf``: the kernel itself skips the update (weights, moments and step
    count untouched), exactly like a GradScaler skip. The flags are read back
    once per log interval by :meth:`check`, which then stops the run (naming
    phase and first step) or reports the skipped steps.
    """

    def __init__(self) -> None:
        self.count: dict[str, torch.Tensor] = {}
        self.first: dict[str, torch.Tensor] = {}

    def flag(self, phase: "Phase", losses: list[torch.Tensor], step: int) -> torch.Tensor:
        bad = torch.stack([(~torch.isfinite(loss.detach().float())).any() for loss in losses]).any().float()
        bad = dist.max_over_ranks_(bad.reshape(1).to(dist.comm_device())).reshape(())
        dev = next(phase.model.parameters()).device
        bad = bad.to(dev, non_blocking=True)
        n = phase.name
        if n not in self.count:
            self.count[n], self.first[n] = torch.zeros((), device=dev), torch.full((), -1.0, device=dev)
        self.first[n] = torch.where((self.first[n] < 0) & (bad > 0), torch.full_like(bad, step + 1), self.first[n])
        self.count[n] += bad
        return bad

    def check(self, step: int, skip_nonfinite: bool) -> None:
        """Read the flags back (one sync per log interval); stop or report as configured."""
        for name in sorted(self.count):
            n = int(self.count[name].item())
            if not n:
                continue
            first = int(self.first[name].item())
            self.count[name].zero_()
            self.first[name].fill_(-1)
            if skip_nonfinite:
                stats.report(f"skipped_{name}", float(n))
                continue
            raise NonFiniteLoss(
                f"non-finite {name} loss in phase {name} of step {first} ({n} step(s) up to step {step}); "
                "their updates were skipped on the device and nothing was saved from them. Lower the "
                "learning rate, or set train.skip_nonfinite=true to skip such steps")


@dataclass(kw_only=True)
class Phase:
    """One phase of a step: which model it optimises with what, how often per step and every how many steps."""

    name: str  # "D", "G", "D_r1"
    model: nn.Module  # what this phase optimises (prepared module: DDP or DeepSpeed engine)
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[GanModules, dict, LossSettings], torch.Tensor]
    repeats: int = 1
    others: list[nn.Module] = field(default_factory=list)  # frozen during this phase
    new_batch: bool = True  # draw fresh real batches before each repeat
    engine: TorchEngine = field(default_factory=TorchEngine)
    every: int = 1  # runs in step s (1-based) when s % every == 0
    shares: str | None = None  # the phase whose optimizer, schedule and scaler this one uses (their state is its)

    def due(self, step: int) -> bool:
        """Whether this phase runs in the step after ``step`` completed steps."""
        return (step + 1) % self.every == 0


def run_phase(phase: Phase, m: GanModules, batch: dict | list[dict], s: LossSettings, prec: Precision,
              step: int, skip_nonfinite: bool = False, deferred: DeferredNonFinite | None = None) -> bool:
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
    losses: list[torch.Tensor] = []
    try:
        for i, mb in enumerate(micro):
            sync = i == k - 1
            with contextlib.nullcontext() if sync else phase.engine.no_sync(phase.model):
                with prec.autocast():
                    loss = phase.loss_fn(m, mb, s)
                if deferred is not None:  # sync-free: the flag goes to the fused optimizer below
                    losses.append(loss)
                    phase.engine.backward(phase, loss / k if k > 1 else loss)
                    continue
                # the one host sync of this phase on the default path: the flag is reduced over
                # ranks on the device first, so every rank takes the same decision from one read-back
                flag = (~torch.isfinite(loss.detach())).any().float().reshape(1)
                if dist.max_over_ranks_(flag.to(dist.comm_device())).item() > 0:
                    bad = not bool(torch.isfinite(loss.detach()).item())  # which rank: error path only
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
        if deferred is not None and not phase.scaler.is_enabled():  # fp16: the scaler skips inf steps
            phase.opt.found_inf = deferred.flag(phase, losses, step)
        gn = phase.engine.step(phase)
        stats.report(f"grad_norm_{phase.name.lower()}", gn)
    finally:
        for other in phase.others:
            other.requires_grad_(True)
    return True
