"""Shard pipeline vs torchvision ImageFolder + PIL, same images, same output, same workers, one run.

    python -m bench --quick --only data_pipeline

Cases (value = distgan, reference = measured in the same run):

* ``jpeg 178x218 -> 64``: the user's alternative decodes and resizes the
  original JPEGs every epoch (Resize(64) + CenterCrop(64) + PILToTensor);
  distgan streams shards written once by the imagefolder converter at 64x64.
* ``same 64x64 png``: ImageFolder over PNG files identical to the shard
  contents: equal decode work, so this isolates the per-file overhead.
* ``vs dcgan step``: shard pipeline images/s vs the images/s of one 64x64
  DCGAN D+G training step on this machine (ratio > 1: data is not the bottleneck).
* ``converter``: shard writing images/s with 2 encoding processes vs 1.

Both loaders yield uint8 NCHW batches of 64, shuffled, full epochs, worker
start-up included. Figures depend on the machine; read them as ratios.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BATCH = 64
REPEATS = 3  # best of 3 per case: the figures come from a shared, noisy machine


def make_images(root: Path, n: int, classes: int = 4) -> None:
    """n photo-like JPEGs of CelebA's aligned size (178x218) in class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:218, 0:178]
    for i in range(n):
        c = i % classes
        base = (np.sin(xx / (7 + i % 11)) + np.cos(yy / (5 + c))) * 60 + 120
        img = np.clip(base[:, :, None] + rng.normal(0, 20, (218, 178, 3)), 0, 255).astype(np.uint8)
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"img{i:05d}.jpg", quality=90)


def rate_imagefolder(root: Path, workers: int, transform) -> float:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(root), transform=transform)
    dl = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)
    t, n = time.perf_counter(), 0
    for x, _ in dl:
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def rate_shards(shards: Path, workers: int) -> float:
    from distgan.data import DataSpec, build_loader

    spec = DataSpec(resolution=64, batch_size=BATCH, shuffle_buffer=1000, resampled=False, num_workers=workers)
    t, n = time.perf_counter(), 0
    for b in build_loader(shards, spec, epochs=1):
        n += b["image"].shape[0]
    return n / (time.perf_counter() - t)


def rate_dcgan_step(steps: int) -> float:
    """images/s of plain D+G steps of a 64x64 DCGAN (width 64) on this machine."""
    from distgan.config import ModelConfig
    from distgan.models import DataInfo, build_models

    G, D = build_models(ModelConfig(cond="none", width=64, z_dim=100), DataInfo(channels=3, resolution=64))
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    real = torch.rand(BATCH, 3, 64, 64) * 2 - 1
    ones, zeros = torch.ones(BATCH), torch.zeros(BATCH)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocations; not timed
        t = time.perf_counter()
        fake = G(torch.randn(BATCH, 100), None)
        loss_d = bce(D(real, None).logits, ones) + bce(D(fake.detach(), None).logits, zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = bce(D(fake, None).logits, ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        times.append(time.perf_counter() - t)
    return BATCH / float(np.median(times[1:]))


def run(quick: bool) -> list[dict]:
    from torchvision import transforms as T

    from distgan.shards import write_shards
    from distgan.shards.sources import SourceOptions
    from distgan.shards.writer import encode_png

    n = 1024 if quick else 4096
    rows = []
    with tempfile.TemporaryDirectory(prefix="distgan-bench-") as tmp:
        tmp = Path(tmp)
        make_images(tmp / "jpeg", n)
        opts = SourceOptions(resolution=64)
        conv1, conv2 = 0.0, 0.0
        for _ in range(2):
            t = time.perf_counter()
            m = write_shards("imagefolder", str(tmp / "jpeg"), tmp / "shards", n // 8, opts, progress=False,
                             workers=1)
            conv1 = max(conv1, n / (time.perf_counter() - t))
            t = time.perf_counter()
            write_shards("imagefolder", str(tmp / "jpeg"), tmp / "shards2", n // 8, opts, progress=False, workers=2)
            conv2 = max(conv2, n / (time.perf_counter() - t))
        rows.append({"case": f"converter imagefolder jpeg->64 png ({n} img), 2 vs 1 process",
                     "value": conv2, "reference": conv1, "unit": "img/s"})
        # the same 64x64 pixels as PNG files, for the equal-decode comparison
        from distgan.data.pipeline import in_order
        for b in in_order(tmp / "shards", 64, BATCH):
            for key, img, label in zip(b["key"], b["image"], b["label"]):
                d = tmp / "png" / m.classes[int(label)]
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{key}.png").write_bytes(encode_png(img.permute(1, 2, 0).numpy()))
        resize = T.Compose([T.Resize(64), T.CenterCrop(64), T.PILToTensor()])
        for workers in (0, 2):
            # best of REPEATS, alternating the two loaders, so a burst of load on a shared
            # machine does not land on one side only
            shard = jpeg = png = 0.0
            for _ in range(REPEATS):
                shard = max(shard, rate_shards(tmp / "shards", workers))
                jpeg = max(jpeg, rate_imagefolder(tmp / "jpeg", workers, resize))
                png = max(png, rate_imagefolder(tmp / "png", workers, T.PILToTensor()))
            rows.append({"case": f"shards vs ImageFolder, jpeg 178x218 -> 64, {workers} workers",
                         "value": shard, "reference": jpeg, "unit": "img/s"})
            rows.append({"case": f"shards vs ImageFolder, same 64x64 png, {workers} workers",
                         "value": shard, "reference": png, "unit": "img/s"})
            shard_rate = shard
        rows.append({"case": "shards (2 workers) vs 64x64 DCGAN D+G step (width 64)",
                     "value": shard_rate, "reference": rate_dcgan_step(2 if quick else 5), "unit": "img/s"})
    return rows
