"""Section 4: images/s of distgan's trainer against the bare loop, at Viel's DCGAN shapes.

DCGAN 64x64 with n=128 feature maps and d=100 latents (the best shapes of the
Stanford Dogs study of Viel's report), unconditional, data resident on the device
(``data.device_cache``: the step, not the loader, is measured; section 5 says
how many loader workers keep up). Per case distgan's ``train()`` runs
``warmup + timed`` steps and its throughput is read from its own log rows after
the warm-up (each log step reads statistics back, so intervals end on finished
work); the bare loop (:mod:`bench.gpu.bare`) with the same switches runs in the
same process right after. Batch 64 for every case; the largest batch that fits
(found with the bare loop, halved for the trainer until it fits) for fp32 and
the bf16 fast path. Peak memory per case; the top costs and sync calls of one
profiled step of distgan's phases.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.gpu import Plan, Report, peak_memory_mib, sync
from bench.gpu.bare import BareLoop, Switches, largest_batch

TARGET_B64, TARGET_MAX, TARGET_RATIO = 3000.0, 10000.0, 1.05
FAST = Switches("bf16", channels_last=True, fused=True)
CASES = [Switches("fp32"), Switches("bf16"), Switches("bf16", channels_last=True), FAST,
         Switches("bf16", True, True, sync_free=True), Switches("bf16", True, True, reuse=True),
         Switches("bf16", True, True, compile=True), Switches("fp16", True, True)]


def write_images(out: Path, n: int, res: int) -> Path:
    """``n`` random RGB images (res x res) as shards: content does not matter for step time."""
    from distgan.shards.writer import ShardWriter

    rng = np.random.default_rng(0)
    w = ShardWriter(out, shard_size=max(1, n // 8))
    for i in range(n):
        w.add(f"img{i:06d}", rng.integers(0, 256, (res, res, 3), dtype=np.uint8), label=0)
    w.finish(source="synthetic", height=res, width=res, channels=3, classes=["0"])
    return out


def trainer_rate(plan: Plan, shards: Path, batch: int, sw: Switches, timed: int,
                 warmup: int | None = None) -> tuple[float, float]:
    """(images/s after the warm-up, peak MiB) of distgan's trainer."""
    from distgan.config import load_config
    from distgan.train import train

    every = 1 if plan.dry else 5
    warmup = plan.warmup if warmup is None else warmup
    warmup = -(-warmup // every) * every  # log steps fall on the warm-up's end ...
    timed = max(2, -(-timed // every)) * every  # ... and at least two full intervals follow it
    steps = warmup + timed
    cfg = load_config(None, [f"data.shards={shards}", f"data.resolution={plan.res}", "data.device_cache=true",
                             "model.cond=none", f"model.width={plan.width}", f"model.z_dim={plan.z_dim}",
                             f"train.batch_size={batch}", f"train.steps={steps}", f"train.ckpt_every={steps}",
                             f"log.every={every}", f"log.sample_every={steps}", "log.num_samples=16",
                             "log.progress=false", "log.tensorboard=false", *sw.overrides()])
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="distgan-gpu-") as run:
        train(cfg, run)
        rows = [json.loads(line) for line in (Path(run) / "stats.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if r["step"] - every >= warmup]
    return float(np.median(rates)), peak_memory_mib(plan.device)


def bare_rate(plan: Plan, images: torch.Tensor, batch: int, sw: Switches, timed: int,
              warmup: int | None = None) -> tuple[float, float]:
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    loop = BareLoop(images, batch, plan.width, plan.z_dim, sw, plan.device)
    rate = loop.images_per_s(plan.warmup if warmup is None else warmup, timed)
    del loop
    return rate, peak_memory_mib(plan.device)


def profile_step(plan: Plan, rep: Report, sw: Switches) -> None:
    """One profiled D+G step through distgan's phases: top device costs and sync API calls."""
    from torch.profiler import ProfilerActivity, profile

    from distgan.config import ModelConfig
    from distgan.models import DataInfo, build_models
    from distgan.train.engine import gan_models
    from distgan.train.fastpath import make_adam, to_memory_format
    from distgan.train.objectives import LossSettings, d_loss_fn, g_loss_fn
    from distgan.train.phases import Phase, run_phase
    from distgan.train.precision import Precision
    from distgan.train.schedule import make_scheduler

    dev = torch.device(plan.device)
    mc = ModelConfig(cond="none", width=plan.width, z_dim=plan.z_dim, channels_last=sw.channels_last)
    info = DataInfo(channels=3, resolution=plan.res)
    G, D = (to_memory_format(m.to(dev), sw.channels_last) for m in build_models(mc, info))
    prec = Precision(sw.precision, dev)
    phases = []
    for name, model, other, fn in (("D", D, G, d_loss_fn), ("G", G, D, g_loss_fn)):
        opt = make_adam(model.parameters(), 2e-4, (0.5, 0.999), sw.fused, dev)
        phases.append(Phase(name=name, model=model, opt=opt, sched=make_scheduler(opt, 100, "constant", 2e-4, 0.0),
                            scaler=prec.make_scaler(), loss_fn=fn, others=[other], new_batch=name == "D"))
    m = gan_models(G, D, G, D, mc, info)
    real = (torch.rand(plan.batch, 3, plan.res, plan.res, device=dev) * 2 - 1)
    batch = [{"real": real.contiguous(memory_format=torch.channels_last) if sw.channels_last else real}]

    def step(i: int) -> None:
        for ph in phases:
            run_phase(ph, m, batch, LossSettings(), prec, i)

    for i in range(plan.warmup):
        step(i)
    sync(plan.device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if plan.device == "cuda" else [])
    with profile(activities=acts) as prof:
        step(plan.warmup)
        sync(plan.device)
    events = prof.key_averages()
    key = "self_device_time_total" if plan.device == "cuda" else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:6]
    total = sum(getattr(e, key, 0.0) for e in events) or 1.0
    for e in top:
        rep.figure(f"profile {sw.name}: {e.key[:40]}", getattr(e, key, 0.0) / 1000, "ms (self)",
                   note=f"{100 * getattr(e, key, 0.0) / total:.1f}% of the step")
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                      "cudaEventSynchronize"))
    rep.figure(f"profile {sw.name}: sync API calls in the step", float(syncs), "calls",
               note="the per-phase non-finite check; 0 with train.sync_free")


def run(plan: Plan, rep: Report, work: Path) -> float:
    """Every case; returns the bf16 fast path's best images/s (what the data section must feed)."""
    from distgan.data.device_cache import decode_all

    shards = write_images(work / "tp_shards", max(4 * plan.batch, 256 if plan.dry else 1024), plan.res)
    images = decode_all(shards, plan.res)["image"].to(plan.device)
    fast_rate = 0.0
    for sw in CASES:
        if sw.precision == "fp16" and plan.device != "cuda":
            rep.skip(f"b{plan.batch} {sw.name}", "fp16 autocast needs CUDA")
            continue
        if sw.compile and plan.dry:
            rep.skip(f"b{plan.batch} {sw.name}", "compile is exercised by the correctness section on CPU")
            continue
        ours, mem = trainer_rate(plan, shards, plan.batch, sw, plan.timed)
        ref, ref_mem = bare_rate(plan, images, plan.batch, sw, plan.timed)
        rep.figure(f"b{plan.batch} {sw.name}: trainer vs bare", ours, "img/s", ref,
                   f"peak {mem:.0f} / {ref_mem:.0f} MiB")
        _targets(plan, rep, f"b{plan.batch} {sw.name}", ours, ref, TARGET_B64 if sw == FAST else None)
        if sw == FAST:
            fast_rate = ours
    if plan.device == "cuda":
        profile_step(plan, rep, FAST)
    for sw in (Switches("fp32"), FAST):
        b = largest_batch(images, plan.batch, plan.max_batch, plan.width, plan.z_dim, sw, plan.device)
        # two batches per epoch at least: the cache's per-epoch shuffle stays out of most steps
        big = write_images(work / f"tp_big_{b}", 2 * b, plan.res) if 2 * b > len(images) else shards
        imgs = decode_all(big, plan.res)["image"].to(plan.device) if big != shards else images
        timed = max(2, plan.timed * plan.batch // b)
        warm = max(1, min(plan.warmup, 5))  # big steps: cuDNN autotuning needs only a few
        while True:
            try:
                ours, mem = trainer_rate(plan, big, b, sw, timed, warm)
                break
            except torch.OutOfMemoryError:
                if plan.device == "cuda":
                    torch.cuda.empty_cache()
                b //= 2  # the trainer holds a little more than the bare loop
        ref, ref_mem = bare_rate(plan, imgs, b, sw, timed, warm)
        rep.figure(f"largest batch {b} {sw.name}: trainer vs bare", ours, "img/s", ref,
                   f"peak {mem:.0f} / {ref_mem:.0f} MiB")
        _targets(plan, rep, f"largest batch {sw.name}", ours, ref, TARGET_MAX if sw == FAST else None)
        if sw == FAST:
            fast_rate = max(fast_rate, ours)
    return fast_rate


def _targets(plan: Plan, rep: Report, case: str, ours: float, ref: float, goal: float | None) -> None:
    """Speed targets are reported, not failed: a miss is a finding, not a wrong result."""
    if plan.dry:
        return
    ratio = ref / ours if ours > 0 else math.inf
    rep.figure(f"{case}: time trainer/bare", ratio, "", note=f"target <= {TARGET_RATIO}: "
               + ("met" if ratio <= TARGET_RATIO else "MISSED"))
    if goal is not None:
        rep.figure(f"{case}: images/s", ours, "img/s", note=f"target >= {goal:.0f}: "
                   + ("met" if ours >= goal else "MISSED"))
