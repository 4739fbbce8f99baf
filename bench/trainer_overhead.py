"""distgan's training loop vs a minimal hand-written PyTorch DCGAN loop, same run.

    python -m bench --quick --only trainer_overhead

Both train the same unconditional DCGAN (built by ``distgan.models.build_models``,
same init), with Adam, BCE losses, the same precision and the data already in
memory (distgan: ``data.device_cache=true``; the reference indexes the same uint8
tensor). The reference is the seed-001 Algorithm 1 loop written by hand: D on
real and fake, one backward, step; G through D, backward, step. Nothing else.

Timing is this process's CPU time (``time.process_time``) with one intra-op
thread: on a shared machine other processes' bursts slow wall-clock segments
several-fold, while CPU time counts only the work the loop itself does.
distgan's per-step cost is the difference between two runs of different
length, divided by the extra steps: start-up, data decoding, the final
checkpoint and sample grid cancel, while every per-step cost (stats, non-finite
checks, hooks, logging every ``log.every``) is included. The reference is
timed over the same number of steps after a warm-up. Rounds alternate
(A B A B ...) and the median of each side is reported.

Case ``step time ratio``: value = distgan ms/step, reference = hand-written
ms/step (ratio <= 1.05 is the target).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RES, WIDTH, Z, BATCH = 32, 32, 64, 64


def _config(shards: Path, steps: int, precision: str):
    from distgan.config import load_config

    return load_config(None, [f"data.shards={shards}", f"data.resolution={RES}", "data.device_cache=true",
                              "model.cond=none", f"model.width={WIDTH}", f"model.z_dim={Z}",
                              f"train.batch_size={BATCH}", f"train.steps={steps}", f"train.precision={precision}",
                              f"train.ckpt_every={steps}", "log.every=10",
                              f"log.sample_every={steps}", "log.num_samples=16", "log.progress=false",
                              "log.tensorboard=false"])


def _train_cpu_s(shards: Path, steps: int, precision: str) -> float:
    from distgan.train import train

    with tempfile.TemporaryDirectory() as run:
        t0 = time.process_time()
        train(_config(shards, steps, precision), run)
        return time.process_time() - t0


def distgan_step_ms(shards: Path, steps: int, precision: str) -> float:
    short = max(10, steps // 4)
    return 1000 * (_train_cpu_s(shards, steps, precision) - _train_cpu_s(shards, short, precision)) / (steps - short)


def reference_step_ms(shards: Path, steps: int, precision: str) -> float:
    """The hand-written loop: same models, optimizers, losses, precision, in-memory data."""
    from distgan.data.device_cache import decode_all
    from distgan.models import DataInfo, build_models
    from distgan.shards import read_manifest

    cfg = _config(shards, steps, precision)
    manifest = read_manifest(shards)
    images = decode_all(shards, RES, manifest)["image"]
    torch.manual_seed(cfg.train.seed)
    G, D = build_models(cfg.model, DataInfo(channels=manifest.channels, resolution=RES))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    ones, zeros = torch.ones(BATCH), torch.zeros(BATCH)
    perm = torch.randperm(len(images))
    warm = max(10, steps // 4)
    for i in range(steps + warm):
        if i == warm:
            t0 = time.process_time()
        idx = perm[(i * BATCH) % (len(images) - BATCH):][:BATCH]
        real = images[idx].float() / 127.5 - 1
        z = torch.randn(BATCH, Z)
        with amp:
            with torch.no_grad():
                fake = G(z)
            loss_d = F.binary_cross_entropy_with_logits(D(real).logits.float(), ones) + \
                F.binary_cross_entropy_with_logits(D(fake).logits.float(), zeros)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        with amp:
            loss_g = F.binary_cross_entropy_with_logits(D(G(torch.randn(BATCH, Z))).logits.float(), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
    return 1000 * (time.process_time() - t0) / steps


def run(quick: bool) -> list[dict]:
    from distgan.shards import write_shards

    steps, rounds = (40, 3) if quick else (120, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "mnist"
        write_shards("mnist-embedded", None, shards, shard_size=1000, progress=False)
        for precision in ("fp32",) if quick else ("fp32", "bf16"):
            ours, ref = [], []
            for _ in range(rounds):
                ours.append(distgan_step_ms(shards, steps, precision))
                ref.append(reference_step_ms(shards, steps, precision))
            rows.append({"case": f"step time ratio {precision} {RES}x{RES} w{WIDTH} b{BATCH}",
                         "value": statistics.median(ours), "reference": statistics.median(ref),
                         "unit": "CPU ms/step"})
    torch.set_num_threads(threads)
    return rows
