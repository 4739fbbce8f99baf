"""Weak scaling on CPU: 1 vs 2 ranks at the same per-rank batch.

    python -m bench --quick --only weak_scaling

Each world size trains the same DCGAN through the real launcher
(``distgan.launch.local.launch_local``: separate processes, gloo DDP, one
intra-op thread per rank) with data in memory, and reads images/s back from the
run's ``stats.jsonl`` (the first log interval, which holds start-up, is
dropped). Reported: images/s per rank with 2 ranks against 1 rank (ratio =
scaling efficiency; 1.0 is perfect), and the total throughput. On this 2-core
machine each rank has one core, so the gap from 1.0 is the all-reduce of G's
and D's gradients plus the per-step stop/non-finite agreement.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _images_per_s(shards: Path, world: int, steps: int, tmp: Path) -> float:
    from distgan.config import load_config, save_config
    from distgan.launch.local import launch_local

    run = tmp / f"w{world}"
    cfg = load_config(None, [f"data.shards={shards}", "data.resolution=32", "data.device_cache=true",
                             "model.cond=none", "model.width=32", "model.z_dim=64", "train.batch_size=64",
                             f"train.steps={steps}", f"train.ckpt_every={steps}", "log.every=10",
                             f"log.sample_every={steps}", "log.num_samples=16", "log.progress=false",
                             "log.tensorboard=false", f"dist.expect_world_size={world}"])
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    rc = launch_local(run, procs=world, stream=False)
    if rc != 0:
        raise RuntimeError(f"{world}-rank run failed (exit {rc}); logs in {run / 'logs'}")
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows[1:]]
    return sum(rates) / len(rates)


def run(quick: bool) -> list[dict]:
    from distgan.shards import write_shards

    os.environ["OMP_NUM_THREADS"] = "1"
    steps = 60 if quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = tmp / "mnist"
        write_shards("mnist-embedded", None, shards, shard_size=500, progress=False)
        one = _images_per_s(shards, 1, steps, tmp)
        two = _images_per_s(shards, 2, steps, tmp)
    return [{"case": "weak scaling: images/s per rank, 2 ranks vs 1 (32px w32 b64/rank)",
             "value": two / 2, "reference": one, "unit": "img/s per rank"},
            {"case": "weak scaling: total images/s, 2 ranks vs 1", "value": two, "reference": one,
             "unit": "img/s"}]
