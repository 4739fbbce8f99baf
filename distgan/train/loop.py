"""The training loop: ``train(cfg, run_dir)``, on every rank.

    from distgan.config import load_config
    from distgan.train import train
    train(load_config("configs/debug.yaml"), "runs/debug")   # re-running resumes

Per rank, in order (each stage delegates to the module that owns it):

1. processes and devices    engine.make_accelerator: one Accelerator per rank, world size asserted
2. data                     data.build_loader / DeviceCache: this rank's share, resumable position
3. models and optimizers    engine.wrap_models -> GanModules (DDP or DeepSpeed, maybe compiled), the phases
4. resume                   state.Checkpointer.resume over parts.run_parts: every part restored
                            from the newest readable checkpoint (models, optimizers, EMA, data, RNG)
5. the loop                 _Steps.run (D phase(s), G phase, replica checks, EMA), then each duty
                            that is due (distgan.train.duties: stats and health, sample grids, the
                            stop agreement, checkpoints, metrics), each keeping its own schedule
6. finish                   close the run's records; the summary dict

Step numbers count completed steps: ``step`` is k once k steps have run.
"""
from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from distgan import dist, runlock
from distgan.config import Config, save_config
from distgan.data import DataSpec, build_loader
from distgan.data.device_cache import DeviceCache
from distgan.log import get_logger
from distgan.metrics.training import FinalMetrics, TrainMetrics
from distgan.models import build_models, data_info
from distgan.ranks import launch_ranks
from distgan.rundir import config_path, write_data_info
from distgan.shards import read_manifest
from distgan.train import stages, stats
from distgan.train.duties import (
    AfterStep,
    Checkpoints,
    HealthVerdict,
    MetricsDuty,
    NonFiniteCheck,
    ReplicaCheck,
    SampleGrids,
    StatsAndHealth,
    StopAgreement,
    boundary,
)
from distgan.train.ema import EMA
from distgan.train.engine import make_accelerator, wrap_models
from distgan.train.fastpath import format_input, make_adam, setup_backends, to_memory_format
from distgan.train.health import HealthMonitor
from distgan.train.logger import RunLogger
from distgan.train.modules import GanModules
from distgan.train.noise import GlobalNoise
from distgan.train.objectives import (
    BatchPrep,
    LossSettings,
    d_loss_fn,
    fixed_sources,
    g_loss_fn,
    loss_settings,
    phase_batch,
    r1_loss_fn,
)
from distgan.train.parts import header, run_parts
from distgan.train.phases import DeferredNonFinite, Phase, run_phase
from distgan.train.precision import Precision
from distgan.train.samples import fixed_inputs
from distgan.train.schedule import make_scheduler
from distgan.train.seeds import diversity_seed, seed_all
from distgan.train.state import Checkpointer

log = get_logger("train")


def train(cfg: Config, run_dir: str | Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir``; returns a summary dict on every rank.

    ``progress(step)`` is called on rank 0 after each regular checkpoint: the step a
    restart would now resume from (the worker records it, with the time spent, in status.json).

    Rank 0 owns the run directory meanwhile (:mod:`distgan.runlock`): a second
    training of the same directory stops with :class:`~distgan.runlock.RunDirBusy`.
    A config built in Python rather than loaded is validated here, as loading does.
    """
    cfg.validate()
    # the launchers' rank variable: the process group that dist.rank_world reads forms later
    owner = launch_ranks().rank == 0
    with runlock.hold(run_dir) if owner else nullcontext():
        return _train(cfg, Path(run_dir), progress)


def _train(cfg: Config, run_dir: Path, progress: Callable[[int], None] | None) -> dict[str, Any]:
    # the run's config as written (train.global_batch, if set, holds on any world size), then the
    # config this attempt trains with: the micro-batch and accumulation resolved for its world size
    written, cfg = cfg, resolve_batch(cfg, launch_ranks().world)
    tc = cfg.train

    # ---- processes and devices: one Accelerator per rank; assert the world size we expect
    accelerator = make_accelerator(cfg)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if device.type == "cpu":  # Accelerate's MULTI_CPU says "cpu:0": checkpoints would be tagged with it
        device = torch.device("cpu")
    prec = Precision(tc.precision, device)  # fails fast on an impossible combination (fp16 on CPU)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(written, config_path(run_dir))
    accelerator.wait_for_everyone()
    out = RunLogger(run_dir, cfg, enabled=rank == 0, rank=rank)
    if tc.global_batch:  # in the run's log: what this attempt's world size made of the global batch
        log.info(f"global batch {tc.global_batch} = {world} rank(s) x {tc.grad_accum} micro-batch(es) x "
                 f"{tc.batch_size}")
    stages.enter("setup (data, models, resume)", bounded=False)  # its collectives are bounded by the group
    stop = _StopFlag(cfg.dist.stop_signals)

    # ---- data, models, optimizers, phases; then resume from the newest readable checkpoint
    manifest = read_manifest(cfg.data.shards)
    out.pixels = (cfg.data.normalize, manifest.mean, manifest.std)  # grids show pixels, also for zscore runs
    info = data_info(cfg, manifest)  # resolves data.attributes (the chosen subset)
    if rank == 0:  # RUN_DIR/data_info.json: a run dir alone can rebuild and sample G (no shards)
        write_data_info(run_dir, info, cfg.data.normalize, manifest.mean, manifest.std)
    spec, loader = _data(cfg, manifest, rank, world, device)
    models, ema, phases = _models(cfg, accelerator, info, device, prec)
    settings, prep = loss_settings(cfg), BatchPrep.for_run(cfg, manifest, info)
    deferred = DeferredNonFinite() if tc.sync_free else None
    health = HealthMonitor(cfg.health, tc.stop_on, tc.loss)  # warnings logged, train.stop_on ones stop the run cleanly
    ckpt = Checkpointer(run_dir, run_parts(cfg, models, phases, ema, loader, rank, health), header(written), rank=rank,
                        world=world, barrier=accelerator.wait_for_everyone, keep=tc.keep_ckpts,
                        restart_if_unreadable=tc.restart_if_unreadable, total_steps=tc.steps)
    step = ckpt.resume()
    grid = _grid_inputs(cfg, models, spec, prep)
    metrics: list[TrainMetrics | FinalMetrics] = []  # the periodic signal, then the protocol score at the end
    if cfg.metrics.names:
        metrics.append(TrainMetrics(cfg, run_dir, out.tb, device, start_step=step + 1, checkpointer=ckpt))
    if cfg.metrics.final:
        metrics.append(FinalMetrics(cfg, run_dir, out.tb, device))

    # ---- the loop: D phase(s), G phase, EMA; then every duty that is due after the step
    interval = _Throughput(world)
    steps = _Steps(cfg, models, phases, ema, iter(loader), settings, prep, prec, deferred, device, rank, world,
                   interval)
    out.start(step, tc.steps)
    out.hparams(cfg, world)
    duties = _duties(cfg, rank, world, models, phases, ema, steps, interval, out, grid, deferred, stop, ckpt,
                     metrics, health, device, progress)
    if step > 0:  # what the checkpointed step was due and the previous attempt may have died doing
        for duty in duties:
            if hasattr(duty, "resumed"):
                duty.resumed(step)
    first_step = step  # this attempt's first step may compile/autotune for long: not bounded by the watch
    end = tc.end_step  # a budget below the horizon pauses the run there
    while step < end:
        steps.run(step, bounded=step > first_step)
        step += 1
        done = AfterStep(step, final=step == end)
        stages.enter(f"step {step} logging and stop agreement")
        for duty in duties:
            if duty.due(done):
                duty.run(done)
        if done.stopping:
            why = "health signal in train.stop_on" if done.health_stop else \
                f"stop requested (SIG{stop.signal_name})" if stop.signal_name else "stop requested"
            log.info(f"{why}: checkpointed at step {step}, exiting")
            break
    else:
        why = ""

    # ---- finish: drop the DDP wrappers (held by the phases, checkpointer and metrics) before
    # the process group goes away
    stages.unwatch()
    stages.enter("done", bounded=False)
    out.close()
    stop.restore()
    del steps, metrics, ckpt, phases, models
    accelerator.free_memory()
    completed = step >= tc.steps
    return {"step": step, "completed": completed, "paused": not completed and step >= end, "run_dir": str(run_dir),
            "world_size": world, "stop_reason": why, "stop_signal": stop.signal_name}


def _duties(cfg: Config, rank: int, world: int, models: GanModules, phases: list[Phase], ema: EMA | None,
            steps: _Steps, interval: _Throughput, out: RunLogger, grid: tuple, deferred: DeferredNonFinite | None,
            stop: _StopFlag, ckpt: Checkpointer, metrics: list[TrainMetrics | FinalMetrics], health: HealthMonitor,
            device: torch.device, progress: Callable[[int], None] | None = None) -> list[Any]:
    """What happens after a step, in order; each part knows when it is due (distgan.train.duties)."""
    tc = cfg.train
    g_eval = ema.model if ema is not None else models.G_raw
    at_boundary = boundary(cfg.log.every, tc.ckpt_every)

    def last_real() -> tuple[torch.Tensor, Any]:  # the diversity check compares G(z, y) with the last real batch
        mb = steps.micro[-1]
        return mb["real"], mb.get("label") if models.num_classes else None

    duties: list[Any] = [NonFiniteCheck(deferred, tc.skip_nonfinite, at_boundary)] if deferred is not None else []
    duties += [
        StatsAndHealth(cfg.log.every, lambda: _interval_stats(interval, phases, world), health, out),
        SampleGrids(cfg.log.sample_every, rank, out, g_eval, grid, health, None if models.paired else last_real,
                    cfg.model.z_dim, torch.Generator().manual_seed(diversity_seed(tc.seed)), device),
        HealthVerdict(health),
    ]
    if ema is not None:
        duties.append(ReplicaCheck(tc.check_replicas_every, ema))
    duties += [StopAgreement(lambda: stop.requested, at_boundary if tc.sync_free else None),
               Checkpoints(tc.ckpt_every, ckpt, saved=progress if rank == 0 else None)]
    for m in metrics:  # metrics.jsonl, TensorBoard, checkpoints/best (saving this step first if needed)
        duties.append(MetricsDuty(m, g_eval, ema is not None, out, tc.end_step))
    return duties


class _StopFlag:
    """Set by any of ``dist.stop_signals`` (a scheduler's preemption or time-limit notice): checkpoint at the
    next step boundary, then exit. ``signal_name`` says which one came first."""

    def __init__(self, names: list[str]) -> None:
        self.requested, self.signal_name = False, ""
        self.previous: dict[int, Any] = {}
        for name in names:
            sig = getattr(signal, f"SIG{name}")
            try:
                self.previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. inside some launchers)
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.signal_name = signal.Signals(signum).name.removeprefix("SIG")
        self.requested = True

    def restore(self) -> None:
        """Put the handlers that were there before back (train() may be called again in-process)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def resolve_batch(cfg: Config, world: int) -> Config:
    """``cfg`` with ``train.batch_size``/``grad_accum`` set to this world size's micro-batch and
    accumulation (:meth:`~distgan.config.TrainConfig.batch_split`); unchanged without ``train.global_batch``."""
    tc = cfg.train
    if not tc.global_batch:
        return cfg
    micro, accum = tc.batch_split(world)
    return replace(cfg, train=replace(tc, batch_size=micro, grad_accum=accum))


def _data(cfg: Config, manifest: Any, rank: int, world: int, device: torch.device) -> tuple[DataSpec, Any]:
    """This rank's share of the shard stream: endless (epochs chained), resumable, equal steps on all ranks.

    Each batch is the rank's share of one global batch (all its micro-batches of one
    optimizer step), so the data position counts global batches whatever the world size.
    """
    tc = cfg.train
    share = tc.batch_size * tc.grad_accum
    spec = DataSpec(resolution=cfg.data.resolution, batch_size=share, lanes=cfg.data.lanes,
                    shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled,
                    num_workers=cfg.data.num_workers, normalize=cfg.data.normalize,
                    skip_corrupt=cfg.data.skip_corrupt, epoch_samples=cfg.data.epoch_samples,
                    verify_checksums=cfg.data.verify_checksums)
    if cfg.data.device_cache:  # [speed switch] small data sets: decoded once into a device tensor
        return spec, DeviceCache(cfg.data.shards, cfg.data.resolution, share, device, rank, world,
                                 seed=tc.seed, manifest=manifest)
    return spec, build_loader(cfg.data.shards, spec, rank, world, seed=tc.seed, epochs=None,
                              pin_memory=cfg.data.pin_memory and device.type == "cuda")


def _models(cfg: Config, accelerator: Any, info: Any, device: torch.device,
            prec: Precision) -> tuple[GanModules, EMA | None, list[Phase]]:
    """G and D (identical init on every rank: same seed), their optimizers and schedules, wrapped; the phases."""
    tc = cfg.train
    seed_all(tc.seed)
    setup_backends(tc.tf32)
    G, D = build_models(cfg.model, info)
    G = to_memory_format(G.to(device), cfg.model.channels_last)
    D = to_memory_format(D.to(device), cfg.model.channels_last)
    opt_g = make_adam(G.parameters(), tc.lr_g, (tc.beta1, tc.beta2), tc.fused_adam, device)
    opt_d = make_adam(D.parameters(), tc.lr_d, (tc.beta1, tc.beta2), tc.fused_adam, device)
    sched_g = make_scheduler(opt_g, tc.steps, tc.schedule, tc.lr_g, tc.lr_min_g, tc.warmup_steps)
    sched_d = make_scheduler(opt_d, tc.steps * tc.n_critic, tc.schedule, tc.lr_d, tc.lr_min_d, tc.warmup_steps)
    models = wrap_models(accelerator, cfg, G, D, opt_g, opt_d, info)  # DDP (Accelerate) or DeepSpeed ZeRO
    ema = EMA(models.G_raw, tc.ema_decay, tc.ema_start) if tc.ema else None
    # with reuse_fakes G is not frozen in the D phase: its forward there builds the graph the G phase uses
    d_phase = Phase(name="D", model=models.D, opt=opt_d, sched=sched_d, scaler=prec.make_scaler(),
                    loss_fn=d_loss_fn, repeats=tc.n_critic, others=[] if tc.reuse_fakes else [models.G],
                    new_batch=True, engine=models.engine)
    g_phase = Phase(name="G", model=models.G, opt=opt_g, sched=sched_g, scaler=prec.make_scaler(),
                    loss_fn=g_loss_fn, repeats=1, others=[models.D],
                    new_batch=False,  # the G phase reuses D's last real batches (feature matching)
                    engine=models.engine)
    phases = [d_phase, g_phase]
    if tc.r1_gamma > 0 and tc.r1_every > 1:  # lazy R1: D's optimizer steps on the penalty alone every K steps
        phases.append(Phase(name="D_r1", model=models.D, opt=opt_d, sched=sched_d, scaler=d_phase.scaler,
                            loss_fn=r1_loss_fn, others=[models.G], new_batch=False, engine=models.engine,
                            every=tc.r1_every, shares="D"))
    return models, ema, phases


def _grid_inputs(cfg: Config, models: GanModules, spec: DataSpec,
                 prep: BatchPrep) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The sample grids' fixed inputs (z, labels, images per row), from a private generator."""
    fixed_z, fixed_y, per_row = fixed_inputs(cfg.log.num_samples, cfg.model.z_dim, models.num_classes,
                                             cfg.train.seed)
    if models.paired:  # pix2pix grids translate fixed source images
        fixed_z = fixed_sources(cfg.data.shards, spec, cfg.log.num_samples, prep)
        fixed_y, per_row = None, max(1, int(len(fixed_z) ** 0.5))
    return fixed_z, fixed_y, per_row


class _Steps:
    """One training step: the phases over fresh micro-batches, replica checks, EMA; timings reported."""

    def __init__(self, cfg: Config, models: GanModules, phases: list[Phase], ema: EMA | None, batches: Any,
                 settings: LossSettings, prep: BatchPrep, prec: Precision, deferred: DeferredNonFinite | None,
                 device: torch.device, rank: int, world: int, throughput: _Throughput):
        self.cfg, self.models, self.phases, self.ema, self.batches = cfg, models, phases, ema, batches
        self.settings, self.prep, self.prec, self.deferred = settings, prep, prec, deferred
        self.device, self.world, self.throughput = device, world, throughput
        self.micro: list[dict] = []  # the last real micro-batches (the G phase and the diversity check use them)
        classes = models.num_classes if models.space.kind == "classes" else 0
        self.noise = None if models.paired else \
            GlobalNoise(cfg.train.seed, models.z_dim, classes, rank, world, device)

    def run(self, step: int, bounded: bool) -> None:
        """Step ``step + 1``: D phase(s), G phase, replicas made equal, EMA updated."""
        tc = self.cfg.train
        t_step, t_data, draw = time.perf_counter(), 0.0, 0
        for phase in self.phases:
            if not phase.due(step):
                continue
            t_phase = time.perf_counter()
            stages.enter(f"step {step + 1} phase {phase.name}", bounded=bounded)
            for _ in range(phase.repeats):
                if phase.new_batch:
                    t0 = time.perf_counter()
                    self.micro = split_micro(self._batch(), tc.grad_accum)
                    t_data += time.perf_counter() - t0
                if self.noise is not None:
                    self.noise.attach(self.micro, step, draw)
                draw += 1
                run_phase(phase, self.models, self.micro, self.settings, self.prec, step, tc.skip_nonfinite,
                          self.deferred)
            took = time.perf_counter() - t_phase
            stats.report(f"time_{phase.name.lower()}", took - (t_data if phase.new_batch else 0.0))
        stats.report("time_data", t_data)
        G_raw, D_raw = self.models.G_raw, self.models.D_raw
        if tc.check_replicas_every and (step + 1) % tc.check_replicas_every == 0:
            # before the buffer broadcast below, which would hide a desync of buffers that must match
            dist.check_replicas(G_raw, "G")
            dist.check_replicas(D_raw, "D")
        if self.world > 1:  # plain BN keeps local running stats; make replicas equal at step boundaries
            dist.broadcast_buffers(G_raw)
            dist.broadcast_buffers(D_raw)
        if self.ema is not None:
            self.ema.update(G_raw, step)
        self.throughput.add(tc.batch_size * tc.grad_accum * self.world)
        stats.report("time_step", time.perf_counter() - t_step)

    def _batch(self) -> dict:
        """This rank's share of the next global batch on the device: ``real`` and ``label`` / ``attrs`` / ``src``."""
        mb = phase_batch(next(self.batches), self.device, self.prep)
        if self.cfg.model.channels_last:
            mb = {k: format_input(v, True) for k, v in mb.items()}
        return mb


def split_micro(batch: dict, k: int) -> list[dict]:
    """``batch`` (device tensors) as ``k`` equal micro-batches, in order."""
    if k == 1:
        return [batch]
    n = len(batch["real"]) // k
    return [{key: v[i * n:(i + 1) * n] for key, v in batch.items()} for i in range(k)]


class _Throughput:
    """Images trained since the last log line, over the wall time since then."""

    def __init__(self, world: int):
        self.world, self.t_last, self.images = world, time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def per_rank(self) -> float:
        """Images per second per rank over the interval; starts the next interval."""
        now = time.perf_counter()
        rate = self.images / max(now - self.t_last, 1e-9) / self.world
        self.t_last, self.images = now, 0
        return rate


def _interval_stats(interval: _Throughput, phases: list[Phase], world: int) -> dict[str, float]:
    """Everything reported since the last log line, averaged over ranks, with throughput and learning rates."""
    stats.report("images_per_s", interval.per_rank())  # summed over ranks below
    for ph in phases:
        if ph.shares is None:
            stats.report(f"lr_{ph.name.lower()}", ph.sched.get_last_lr()[0])
    values = stats.collect()
    values["images_per_s"] *= world  # collect() averages over ranks; throughput adds up
    return values
