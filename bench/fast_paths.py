"""Each speed switch of the trainer vs plain PyTorch, same run.

    python -m bench --quick --only fast_paths

Every case trains the same unconditional DCGAN through ``distgan.train.train``
with one switch on (``model.channels_last``, ``train.fused_adam`` (+ ``train.sync_free``),
``train.precision=bf16``, ``data.device_cache`` vs the streamed shard
pipeline, ``train.compile`` in the full run) and reports distgan's per-step
cost against the hand-written reference loop of ``bench/trainer_overhead.py``
(same models, same precision, data in memory), measured in the same process;
``train.reuse_fakes`` is reported against distgan's default path instead (its
gain: one G forward per step instead of two).
Per-step cost = (CPU time of a long run - CPU time of a short run) / extra
steps, so start-up and compile time cancel out. On a GPU machine the same
cases run on CUDA (the trainer picks the device); shapes grow to Viel's
dogs shapes (64x64, n=128, d=100) when not ``--quick``.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench import trainer_overhead as ref


def _distgan_ms(shards: Path, steps: int, extra: list[str], res: int, width: int, z: int, batch: int) -> float:
    from distgan.config import load_config
    from distgan.train import train

    def cpu_s(n: int) -> float:
        cfg = load_config(None, [f"data.shards={shards}", f"data.resolution={res}", "model.cond=none",
                                 f"model.width={width}", f"model.z_dim={z}", f"train.batch_size={batch}",
                                 f"train.steps={n}", f"train.ckpt_every={n}", "log.every=10",
                                 f"log.sample_every={n}", "log.num_samples=16", "log.progress=false",
                                 "log.tensorboard=false", *extra])
        with tempfile.TemporaryDirectory() as run:
            t0 = time.process_time() if not torch.cuda.is_available() else time.perf_counter()
            train(cfg, run)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                return time.perf_counter() - t0
            return time.process_time() - t0

    short = max(10, steps // 4)
    return 1000 * (cpu_s(steps) - cpu_s(short)) / (steps - short)


PLAIN, REUSE = "plain fp32 (device_cache)", "reuse_fakes (one G forward) vs distgan default"
CASES = {
    PLAIN: ["data.device_cache=true"],
    "streamed shards (no device_cache)": ["data.device_cache=false", "data.shuffle_buffer=256"],
    "channels_last": ["data.device_cache=true", "model.channels_last=true"],
    "fused Adam": ["data.device_cache=true", "train.fused_adam=true"],
    "fused Adam + sync_free": ["data.device_cache=true", "train.fused_adam=true", "train.sync_free=true"],
    "bf16 autocast": ["data.device_cache=true", "train.precision=bf16"],
    "torch.compile": ["data.device_cache=true", "train.compile=true"],
    # measured against distgan's default path (two G forwards per step), not the hand-written loop
    REUSE: ["data.device_cache=true", "train.reuse_fakes=true"],
}


def run(quick: bool) -> list[dict]:
    from distgan.shards import write_shards

    steps, rounds = (40, 1) if quick else (120, 3)
    cases = {k: v for k, v in CASES.items() if not (quick and k == "torch.compile")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shards = Path(tmp) / "mnist"
            write_shards("mnist-embedded", None, shards, shard_size=500, progress=False)
            shape = dict(res=ref.RES, width=ref.WIDTH, z=ref.Z, batch=ref.BATCH)
            base = statistics.median(ref.reference_step_ms(shards, steps, "fp32") for _ in range(rounds))
            base_bf16, plain_ms = None, None
            for name, extra in cases.items():
                ms = statistics.median(_distgan_ms(shards, steps, extra, **shape) for _ in range(rounds))
                reference = base
                if name == REUSE:
                    reference = plain_ms
                if name == PLAIN:
                    plain_ms = ms
                if "bf16" in name:
                    base_bf16 = base_bf16 or statistics.median(
                        ref.reference_step_ms(shards, steps, "bf16") for _ in range(rounds))
                    reference = base_bf16
                rows.append({"case": f"{name} {shape['res']}px w{shape['width']} b{shape['batch']}",
                             "value": ms, "reference": reference, "unit": "CPU ms/step vs plain PyTorch"})
    finally:
        torch.set_num_threads(threads)
    return rows
