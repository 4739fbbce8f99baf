"""What a run does after a step, each part deciding for itself when it is due.

    duties = [NonFiniteCheck(...), StatsAndHealth(...), SampleGrids(...), HealthVerdict(...),
              ReplicaCheck(...), StopAgreement(...), Checkpoints(...), MetricsDuty(...)]
    done = AfterStep(step, final=step == cfg.train.steps)
    for duty in duties:
        if duty.due(done):
            duty.run(done)
    if done.stopping: ...

Step numbers count completed steps: ``AfterStep.step`` is k once the k-th step
has finished (so ``log.every=10`` logs after steps 10, 20, ...). The order of
the list is the order of the work, and it matters: statistics and sample grids
gather the health warnings the verdict reads; the verdict and a stop request
feed the stop agreement; a checkpoint is written before metrics may mark it best.
A duty reads what earlier ones left in the :class:`AfterStep` record, nothing else.
A duty with a ``resumed(step)`` method is called once before a resumed attempt's
first step, to finish what the checkpointed step was due and may not have got.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from distgan import dist
from distgan.log import get_logger
from distgan.train import stages
from distgan.train.health import HealthMonitor, HealthWarning

log = get_logger("train")


@dataclass
class AfterStep:
    """One finished step, and what the duties so far found: the record the later ones read."""

    step: int  # steps completed, this one included
    final: bool  # the run's last step (train.steps)
    warnings: list[HealthWarning] = field(default_factory=list)
    health_stop: bool = False  # a warning whose signal is in train.stop_on
    stopping: bool = False  # every rank agreed to checkpoint and stop after this step


class Duty(Protocol):
    def due(self, s: AfterStep) -> bool: ...

    def run(self, s: AfterStep) -> None: ...


@dataclass(frozen=True)
class Every:
    """Due every ``k`` steps (``k`` = 0: never), and at the final step when ``at_end``."""

    k: int
    at_end: bool = True

    def __call__(self, s: AfterStep) -> bool:
        return bool(self.k and s.step % self.k == 0) or (self.at_end and s.final)


def boundary(log_every: int, ckpt_every: int) -> Callable[[AfterStep], bool]:
    """The steps at which a sync-free run reads its device flags back: log and checkpoint steps, and the end."""
    logs, ckpts = Every(log_every), Every(ckpt_every)
    return lambda s: logs(s) or ckpts(s)


class NonFiniteCheck:
    """Sync-free runs: read the deferred non-finite flags back at each boundary, before anything is logged or saved."""

    def __init__(self, deferred: Any, skip_nonfinite: bool, at: Callable[[AfterStep], bool]):
        self.deferred, self.skip_nonfinite, self.due = deferred, skip_nonfinite, at

    def run(self, s: AfterStep) -> None:
        self.deferred.check(s.step, self.skip_nonfinite)


class StatsAndHealth:
    """Every ``log.every`` steps: the interval's statistics (averaged over ranks) to the run's logger, and
    the health monitor's view of them (its warnings go into the record)."""

    def __init__(self, every: int, collect: Callable[[], dict[str, float]], health: HealthMonitor, out: Any):
        self.due, self.collect, self.health, self.out = Every(every), collect, health, out

    def run(self, s: AfterStep) -> None:
        values = self.collect()
        s.warnings += self.health.observe(s.step, values)  # same averaged values on every rank
        values.update({f"health/{k}": v for k, v in self.health.values.items()})
        self.out.scalars(s.step, values)


class SampleGrids:
    """Every ``log.sample_every`` steps: the fixed-noise grid (rank 0; a failed write is logged, training goes
    on) and the mode-collapse check, G(z, y) against the last real batch."""

    def __init__(self, every: int, rank: int, out: Any, g_eval: torch.nn.Module, grid: tuple,
                 health: HealthMonitor, last_real: Callable[[], tuple[torch.Tensor, Any]] | None, z_dim: int,
                 generator: torch.Generator, device: torch.device):
        self.due, self.rank, self.out, self.g_eval, self.grid = Every(every), rank, out, g_eval, grid
        self.health, self.last_real, self.z_dim, self.generator, self.device = \
            health, last_real, z_dim, generator, device

    def run(self, s: AfterStep) -> None:
        if self.rank == 0:
            self.out.sample_grid(s.step, self.g_eval, *self.grid)
        if self.last_real is not None:  # paired (pix2pix) models translate: no diversity to check
            real, y = self.last_real()
            z = torch.randn(len(real), self.z_dim, generator=self.generator).to(self.device)
            s.warnings += self.health.check_diversity(s.step, self.g_eval, real, y, z)


class HealthVerdict:
    """Every step with warnings: log them; one whose signal is in ``train.stop_on`` asks the run to stop."""

    def __init__(self, health: HealthMonitor):
        self.health = health

    def due(self, s: AfterStep) -> bool:
        return bool(s.warnings)

    def run(self, s: AfterStep) -> None:
        for w in s.warnings:
            log.warning(w.message())
        s.health_stop = self.health.should_stop(s.warnings) is not None


class ReplicaCheck:
    """Every ``train.check_replicas_every`` steps: the EMA copies of G are equal on every rank."""

    def __init__(self, every: int, ema: Any):
        self.due, self.ema = Every(every, at_end=False), ema

    def run(self, s: AfterStep) -> None:
        dist.check_replicas(self.ema.model, "G_ema")


class StopAgreement:
    """One rank's stop request (a signal) or health verdict stops all ranks after the same step.

    A collective: every step, or only at ``at`` steps in sync-free runs (no host sync inside an interval).
    """

    def __init__(self, requested: Callable[[], bool], at: Callable[[AfterStep], bool] | None):
        self.requested, self.at = requested, at

    def due(self, s: AfterStep) -> bool:
        return self.at is None or self.at(s)

    def run(self, s: AfterStep) -> None:
        s.stopping = dist.any_rank(self.requested() or s.health_stop)


class Checkpoints:
    """Every ``train.ckpt_every`` steps, at the end, and before a stop: the full state (all ranks together);
    then ``saved(step)``, when given, tells the caller the step a restart would now resume from."""

    def __init__(self, every: int, checkpointer: Any, saved: Callable[[int], None] | None = None):
        self.every, self.checkpointer, self.saved = Every(every), checkpointer, saved

    def due(self, s: AfterStep) -> bool:
        return self.every(s) or s.stopping

    def run(self, s: AfterStep) -> None:
        self.checkpointer.save(s.step)
        if self.saved is not None:
            self.saved(s.step)


class MetricsDuty:
    """The training-time metrics hook (it keeps its own schedule: ``metrics.every`` and the end), then the new
    records to the trackers."""

    def __init__(self, metrics: Any, g_eval: torch.nn.Module, ema: bool, out: Any, total_steps: int):
        self.metrics, self.g_eval, self.ema, self.out, self.total = metrics, g_eval, ema, out, total_steps

    def due(self, s: AfterStep) -> bool:
        return self.metrics.due(s.step, self.total)

    def resumed(self, step: int) -> None:
        """Before a resumed attempt trains on: the evaluation its checkpointed step was due and never got."""
        stages.enter(f"step {step} metrics (due before the resume)", bounded=False)
        self.metrics.catch_up(step, self.g_eval, ema=self.ema)
        self.out.metric_records()

    def run(self, s: AfterStep) -> None:
        stages.enter(f"step {s.step} metrics", bounded=False)  # may legitimately run long; collectives bounded
        self.metrics.after_step(s.step, self.g_eval, ema=self.ema)
        self.out.metric_records()  # the new records to W&B / MLflow (log.trackers)
