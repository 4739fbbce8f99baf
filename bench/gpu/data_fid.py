"""Sections 5 and 7: the data pipeline and FID at GPU rates.

Data: 64x64 JPEG photos-like images go through the imagefolder converter once
(decoded there, stored as PNG shards, distgan's shard format); the streaming
pipeline then decodes batches with 1, 2, 4 loader workers. images/s per worker
against the trainer's best bf16 images/s (section 4) gives the workers a
GPU needs.

FID: Inception (TF 2015 pool-3 weights, 299x299) images/s on the device, then
a FID of the fp32 debug run from section 1 with ``fid_num`` generated images
against all real digits (the dry run: as many as it generates).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from bench.data_pipeline import rate_shards
from bench.gpu import Plan, Report, sync

BATCH = 64


def write_jpeg_folder(root: Path, n: int, res: int = 64) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:res, 0:res]
    for i in range(n):
        base = (np.sin(xx / (3 + i % 7)) + np.cos(yy / (2 + i % 5))) * 60 + 120
        img = np.clip(base[:, :, None] + rng.normal(0, 20, (res, res, 3)), 0, 255).astype(np.uint8)
        d = root / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"img{i:05d}.jpg", quality=90)


def run_data(plan: Plan, rep: Report, work: Path, step_rate: float) -> None:
    from distgan.shards import write_shards
    from distgan.shards.sources import SourceOptions

    write_jpeg_folder(work / "jpeg", plan.data_images)
    shard_size = max(BATCH, plan.data_images // 16)
    write_shards("imagefolder", str(work / "jpeg"), work / "jpeg_shards", shard_size, SourceOptions(resolution=64),
                 progress=False)
    per_worker = []
    for w in plan.workers:
        rate = rate_shards(work / "jpeg_shards", w)
        rep.check(f"shard pipeline 64x64, {w} worker(s): batches arrive", rate > 0, rate, "img/s")
        per_worker.append(rate / w)
    best = max(per_worker)
    rep.figure("shard pipeline images/s per worker (best)", best, "img/s/worker")
    if math.isfinite(step_rate) and step_rate > 0:
        rep.figure("loader workers one GPU needs (bf16 fast path)", math.ceil(step_rate / best), "workers",
                   note=f"GPU step consumes {step_rate:.0f} img/s")


def run_fid(plan: Plan, rep: Report, run: Path, shards: Path, cache: Path) -> None:
    from distgan.metrics.inception import InceptionFeatures
    from distgan.metrics.run import evaluate_run

    net = InceptionFeatures().to(plan.device).eval()
    x = torch.randint(0, 256, (plan.inception_batch, 3, 64, 64), dtype=torch.uint8, device=plan.device)
    net(x)  # warm-up (cuDNN autotuning, lazy init)
    sync(plan.device)
    reps = 1 if plan.dry else 10
    t = time.perf_counter()
    for _ in range(reps):
        feats = net(x)
    sync(plan.device)
    rate = reps * plan.inception_batch / (time.perf_counter() - t)
    rep.check("Inception features finite", bool(torch.isfinite(feats).all()), note=f"{tuple(feats.shape)}")
    rep.figure(f"Inception images/s (64x64 -> 299, batch {plan.inception_batch})", rate, "img/s")
    t = time.perf_counter()
    rec = evaluate_run(run, ["fid"], num=plan.fid_num, real=str(shards), device=plan.device,
                       overrides={"num_real": plan.fid_num if plan.dry else 0, "cache_dir": str(cache),
                                  "batch_size": plan.inception_batch})
    took = time.perf_counter() - t
    fid = float(rec[0]["value"])
    rep.check(f"FID of the fp32 debug run, {plan.fid_num} generated images", math.isfinite(fid) and fid >= 0, fid,
              "FID", note=f"{took:.1f} s including the real statistics")
