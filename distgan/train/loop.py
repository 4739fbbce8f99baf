"""The training loop: one function, its stages marked by block comments.

    from distgan.config import load_config
    from distgan.train import train
    train(load_config("configs/debug.yaml"), "runs/debug")   # re-running resumes

Per rank: build data, models, optimizers -> resume from the latest checkpoint
-> loop of phases (D then G) -> stats, samples, checkpoints -> run directory.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import torch

from distgan import dist
from distgan.config import Config, config_hash, save_config
from distgan.data import DataSpec, build_loader
from distgan.data.device_cache import DeviceCache
from distgan.models import build_models, data_info
from distgan.rundir import config_path
from distgan.shards import read_manifest
from distgan.train import stages, stats
from distgan.train.ema import EMA
from distgan.train.engine import load_zero_shard, make_accelerator, wrap_models, zero_shard
from distgan.train.fastpath import compiled, format_input, make_adam, setup_backends, to_memory_format
from distgan.train.health import HealthMonitor
from distgan.train.logger import RunLogger
from distgan.train.objectives import (
    BatchPrep,
    d_loss_fn,
    fixed_sources,
    g_loss_fn,
    gan_models,
    loss_settings,
    phase_batch,
)
from distgan.train.phases import DeferredNonFinite, Phase, run_phase
from distgan.train.precision import Precision
from distgan.train.samples import fixed_inputs
from distgan.train.schedule import make_scheduler
from distgan.train.state import (
    load_latest,
    load_shard,
    rng_state,
    save_checkpoint,
    save_shard,
    seed_all,
    set_rng_state,
    shard_dir,
)


class _StopFlag:
    """Set by SIGTERM/SIGUSR1 (Slurm preemption): checkpoint at the next step boundary, then exit."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self.previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. inside some launchers)
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        """Put the handlers that were there before back (train() may be called again in-process)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir``; returns a summary dict on every rank."""
    run_dir = Path(run_dir)
    tc = cfg.train

    # ---- processes and devices: one Accelerator per rank; assert the world size we expect
    accelerator = make_accelerator(cfg)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if device.type == "cpu":  # Accelerate's MULTI_CPU says "cpu:0": checkpoints would be tagged with it
        device = torch.device("cpu")
    prec = Precision(tc.precision, device)  # fails fast on an impossible combination (fp16 on CPU)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, config_path(run_dir))
    accelerator.wait_for_everyone()
    log = RunLogger(run_dir, cfg, enabled=rank == 0, rank=rank)
    stages.enter("setup (data, models, resume)", bounded=False)  # its collectives are bounded by the group
    stop = _StopFlag()

    # ---- data: this rank's share of the shard stream
    manifest = read_manifest(cfg.data.shards)
    log.pixels = (cfg.data.normalize, manifest.mean, manifest.std)  # grids show pixels, also for zscore runs
    info = data_info(cfg, manifest)  # resolves data.attributes (the chosen subset)
    # record classes/attributes/geometry/normalisation in
    # RUN_DIR/data_info.json so a run dir alone can rebuild and sample G (no shards).
    if rank == 0:
        from distgan.api import write_data_info
        write_data_info(run_dir, info, cfg.data.normalize, manifest.mean, manifest.std)
    # endless stream (epochs chained) with a resumable position, equal steps on all ranks
    spec = DataSpec(resolution=cfg.data.resolution, batch_size=tc.batch_size,
                    shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled,
                    num_workers=cfg.data.num_workers, normalize=cfg.data.normalize,
                    skip_corrupt=cfg.data.skip_corrupt, epoch_samples=cfg.data.epoch_samples,
                    verify_checksums=cfg.data.verify_checksums)
    if cfg.data.device_cache:  # [speed switch] small data sets: decoded once into a device tensor
        loader = DeviceCache(cfg.data.shards, cfg.data.resolution, tc.batch_size, device, rank, world,
                             seed=tc.seed, manifest=manifest)
    else:
        loader = build_loader(cfg.data.shards, spec, rank, world, seed=tc.seed, epochs=None,
                              pin_memory=cfg.data.pin_memory and device.type == "cuda")

    # ---- models and optimizers: identical init on every rank (same seed), then per-rank RNG
    seed_all(tc.seed)
    setup_backends(tc.tf32)
    G, D = build_models(cfg.model, info)
    G = to_memory_format(G.to(device), cfg.model.channels_last)
    D = to_memory_format(D.to(device), cfg.model.channels_last)
    opt_g = make_adam(G.parameters(), tc.lr_g, (tc.beta1, tc.beta2), tc.fused_adam, device)
    opt_d = make_adam(D.parameters(), tc.lr_d, (tc.beta1, tc.beta2), tc.fused_adam, device)
    total_d = tc.steps * tc.n_critic
    sched_g = make_scheduler(opt_g, tc.steps, tc.schedule, tc.lr_g, tc.lr_min_g, tc.warmup_steps)
    sched_d = make_scheduler(opt_d, total_d, tc.schedule, tc.lr_d, tc.lr_min_d, tc.warmup_steps)
    w = wrap_models(accelerator, cfg, G, D, opt_g, opt_d)  # DDP (Accelerate) or DeepSpeed ZeRO engines
    G_p, D_p, G_raw, D_raw = w.G, w.D, w.G_raw, w.D_raw
    if tc.compile and not w.is_deepspeed:  # compile the wrapped modules (DDP hooks stay outside the graph)
        G_p, D_p = compiled(G_p), compiled(D_p)
    ema = EMA(G_raw, tc.ema_decay, tc.ema_start) if tc.ema else None
    # label space, loss settings and batch preparation come from objectives.py
    models = gan_models(G_p, D_p, G_raw, D_raw, cfg.model, info)
    settings = loss_settings(cfg)
    prep = BatchPrep.for_run(cfg, manifest, info)
    deferred = DeferredNonFinite() if tc.sync_free else None
    if tc.sync_free and (not tc.fused_adam or w.is_deepspeed):
        raise ValueError("train.sync_free=true needs train.fused_adam=true and train.engine=accelerate "
                         "(the fused Adam kernel is what skips a non-finite update without a host sync)")
    if tc.reuse_fakes and (tc.n_critic != 1 or tc.grad_accum != 1 or w.is_deepspeed or models.paired):
        raise ValueError("train.reuse_fakes=true needs train.n_critic=1, train.grad_accum=1, "
                         "train.engine=accelerate and an unpaired model (one G forward, one backward per step); "
                         f"got n_critic={tc.n_critic}, grad_accum={tc.grad_accum}, engine={tc.engine}, "
                         f"arch={cfg.model.arch}")
    # with reuse_fakes G is not frozen in the D phase: its forward there builds the graph the G phase uses
    phases = [Phase("D", D_p, opt_d, sched_d, prec.make_scaler(), d_loss_fn, tc.n_critic,
                    [] if tc.reuse_fakes else [G_p], True, w.engine),
              Phase("G", G_p, opt_g, sched_g, prec.make_scaler(), g_loss_fn, 1, [D_p], False, w.engine)]

    # ---- resume: the newest readable checkpoint, if any
    step = 0
    # (an unusable checkpoint set stops the run unless train.restart_if_unreadable says start over)
    state = load_latest(run_dir, map_location="cpu", restart_if_unreadable=tc.restart_if_unreadable)
    if state is not None:
        if state["config_hash"] != config_hash(cfg):
            log.info("note: config differs from the checkpoint's; continuing with the new config")
        if state.get("engine", "accelerate") != tc.engine:
            raise ValueError(f"the checkpoint in {run_dir} was written with train.engine={state.get('engine')} "
                             f"(optimizer states in its format); resume with that engine, not {tc.engine}")
        G_raw.load_state_dict(state["G"])
        D_raw.load_state_dict(state["D"])
        for ph, key in zip(phases, ("d", "g")):
            if w.is_deepspeed:
                load_zero_shard(ph.model, load_shard(run_dir, int(state["step"]), rank, key, state, world))
            else:
                ph.opt.load_state_dict(state[f"opt_{key}"])
            ph.sched.load_state_dict(state[f"sched_{key}"])
            ph.sched.base_lrs = [tc.lr_d if key == "d" else tc.lr_g] * len(ph.sched.base_lrs)  # config wins
            ph.scaler.load_state_dict(state[f"scaler_{key}"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        step = int(state["step"])
        if "data" in state:  # continue the same sample order mid-epoch
            loader.load_state_dict(state["data"])
        if int(state.get("world_size", 0)) == world:
            set_rng_state(state["rng"][rank])
        else:  # a different world size cannot continue every rank's stream: fresh, distinct noise
            log.info(f"note: checkpoint has world size {state.get('world_size')}, now {world}: new RNG streams")
            seed_all((tc.seed * 7919 + rank) * 1_000_003 + step)
        log.info(f"resumed from step {step} of {tc.steps}")
        del state
    else:
        seed_all(tc.seed * 7919 + rank)  # different noise per rank, reproducible per run
    fixed_z, fixed_y, per_row = fixed_inputs(cfg.log.num_samples, cfg.model.z_dim, models.num_classes, tc.seed)
    if models.paired:  # pix2pix grids translate fixed source images
        fixed_z = fixed_sources(cfg.data.shards, spec, cfg.log.num_samples, prep)
        fixed_y, per_row = None, max(1, int(len(fixed_z) ** 0.5))

    def save(at: int) -> None:
        """Full state by rank 0 (every rank's RNG gathered); ZeRO optimizer shards by their ranks."""
        stages.enter(f"checkpoint at step {at}")
        rngs = dist.gather_objects(rng_state())
        if w.is_deepspeed:  # each rank writes its partition before rank 0 publishes the step
            save_shard(run_dir, at, rank, {"d": zero_shard(D_p), "g": zero_shard(G_p)})
            accelerator.wait_for_everyone()
        if rank == 0:
            st = {"step": at, "G": G_raw.state_dict(), "D": D_raw.state_dict(),
                  "config_hash": config_hash(cfg), "rng": rngs, "world_size": world, "engine": tc.engine}
            for ph, key in zip(phases, ("d", "g")):
                st[f"opt_{key}"] = {"zero_shards": shard_dir(run_dir, at).name} if w.is_deepspeed \
                    else ph.opt.state_dict()
                st[f"sched_{key}"] = ph.sched.state_dict()
                st[f"scaler_{key}"] = ph.scaler.state_dict()
            if ema is not None:
                st["ema"] = ema.state_dict()
            st["data"] = loader.state_dict()  # ranks run in lockstep: rank 0's position
            save_checkpoint(run_dir, at, st, keep=tc.keep_ckpts)
        accelerator.wait_for_everyone()

    # ---- the loop: D phase(s), G phase, EMA, then logging / samples / checkpoints
    batches = iter(loader)
    log.start(step, tc.steps)
    log.hparams(cfg, world)
    t_last, n_last = time.perf_counter(), 0
    micro: list[dict] = []
    # health monitors (distgan.train.health): warnings logged, train.stop_on ones stop the run cleanly
    health, warnings = HealthMonitor(cfg.health, tc.stop_on), []
    health_gen = torch.Generator().manual_seed(tc.seed + 4242)  # keeps the training RNG streams untouched
    first_step = step  # this attempt's first step may compile/autotune for long: not bounded by the watch
    while step < tc.steps:
        t_step = time.perf_counter()
        t_data = 0.0
        for phase in phases:
            t_phase = time.perf_counter()
            stages.enter(f"step {step + 1} phase {phase.name}", bounded=step > first_step)
            for _ in range(phase.repeats):
                if phase.new_batch:  # the G phase reuses D's last real batches (feature matching)
                    t0 = time.perf_counter()
                    # real, label, attrs, src
                    micro = [phase_batch(next(batches), device, prep) for _ in range(tc.grad_accum)]
                    if cfg.model.channels_last:
                        micro = [{k: format_input(v, True) for k, v in mb.items()} for mb in micro]
                    t_data += time.perf_counter() - t0
                run_phase(phase, models, micro, settings, prec, step, tc.skip_nonfinite, deferred)
            took = time.perf_counter() - t_phase
            stats.report(f"time_{phase.name.lower()}", took - (t_data if phase.new_batch else 0.0))
        stats.report("time_data", t_data)
        if tc.check_replicas_every and (step + 1) % tc.check_replicas_every == 0:
            # before the buffer broadcast below, which would hide a desync of buffers that must match
            dist.check_replicas(G_raw, "G")
            dist.check_replicas(D_raw, "D")
        if world > 1:  # plain BN keeps local running stats; make replicas equal at step boundaries
            dist.broadcast_buffers(G_raw)
            dist.broadcast_buffers(D_raw)
        if ema is not None:
            ema.update(G_raw, step)
        step += 1
        n_last += tc.batch_size * tc.grad_accum * world
        stats.report("time_step", time.perf_counter() - t_step)
        stages.enter(f"step {step} logging and stop agreement")

        if deferred is not None and (step % cfg.log.every == 0 or step % tc.ckpt_every == 0 or step == tc.steps):
            deferred.check(step, tc.skip_nonfinite)  # before anything is logged or saved from these steps
        if step % cfg.log.every == 0 or step == tc.steps:
            now = time.perf_counter()
            stats.report("images_per_s", n_last / max(now - t_last, 1e-9) / world)  # summed over ranks below
            stats.report("lr_d", phases[0].sched.get_last_lr()[0])
            stats.report("lr_g", phases[1].sched.get_last_lr()[0])
            values = stats.collect()
            values["images_per_s"] *= world  # collect() averages over ranks; throughput adds up
            warnings += health.observe(step, values)  # same averaged values on every rank
            values.update({f"health/{k}": v for k, v in health.values.items()})
            log.scalars(step, values)
            t_last, n_last = now, 0
        if step % cfg.log.sample_every == 0 or step == tc.steps:
            g_eval = ema.model if ema is not None else G_raw
            if rank == 0:  # a failed grid write (disk full) is logged; training goes on
                log.sample_grid(step, g_eval, fixed_z, fixed_y, per_row)
            if not models.paired:  # mode collapse: diversity of G(z, y) vs the last real batch (eval mode)
                real, y = micro[-1]["real"], micro[-1].get("label") if models.num_classes else None
                z = torch.randn(len(real), cfg.model.z_dim, generator=health_gen).to(device)
                warnings += health.check_diversity(step, g_eval, real, y, z)
        for wn in warnings:
            log.info(wn.message())
        health_stop = health.should_stop(warnings) is not None
        warnings = []
        if tc.check_replicas_every and step % tc.check_replicas_every == 0 and ema is not None:
            dist.check_replicas(ema.model, "G_ema")
        # one rank's signal or verdict stops all; sync-free runs agree only at log/checkpoint steps
        boundary = step % cfg.log.every == 0 or step % tc.ckpt_every == 0 or step == tc.steps
        stopping = dist.any_rank(stop.requested or health_stop) if boundary or not tc.sync_free else False
        if step % tc.ckpt_every == 0 or step == tc.steps or stopping:
            save(step)
        # ---- at metrics.every steps and at the end, on all ranks together:
        # metrics.jsonl + TensorBoard; checkpoints/best by metrics.main (saving this step first if needed)
        if cfg.metrics.names:
            stages.enter(f"step {step} metrics", bounded=False)  # may legitimately run long; collectives bounded
            from distgan.metrics.training import loop_step
            loop_step(cfg, run_dir, step, ema.model if ema is not None else G_raw, ema is not None, log.tb,
                      device, save)
            log.metric_records()  # the new records to W&B / MLflow (log.trackers)
        if stopping:
            why = "health signal in train.stop_on" if health_stop else "stop requested"
            log.info(f"{why}: checkpointed at step {step}, exiting")
            break

    # ---- finish
    stages.unwatch()
    stages.enter("done", bounded=False)
    log.close()
    stop.restore()
    summary = {"step": step, "completed": step >= tc.steps, "run_dir": str(run_dir), "world_size": world}
    # drop the DDP wrappers before the process group goes away (rebinding, not del: the
    # save() closure shares these variables)
    G_p = D_p = phases = w = None  # noqa: F841
    del models
    accelerator.free_memory()
    return summary
