"""The bare reference: a hand-written PyTorch DCGAN loop with the same switches as a trainer case.

Same models (``distgan.models.build_models``), Adam settings, BCE losses,
precision and data on the device as uint8; nothing else: no stats, checks,
hooks or logging. D on real and fake (fakes from G without grad), one backward,
step; G through D, backward, step (with ``reuse`` the G step backpropagates the
D step's fakes, as pytorch/examples' DCGAN does). fp16 has one GradScaler per
optimizer, like distgan.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.gpu import sync

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Switches:
    """One throughput case: precision plus the fast paths, as trainer overrides and bare-loop flags."""
    precision: str = "fp32"
    channels_last: bool = False
    fused: bool = False
    sync_free: bool = False
    reuse: bool = False
    compile: bool = False

    def overrides(self) -> list[str]:
        out = [f"train.precision={self.precision}"]
        out += ["model.channels_last=true"] * self.channels_last + ["train.fused_adam=true"] * self.fused
        out += ["train.sync_free=true"] * self.sync_free + ["train.reuse_fakes=true"] * self.reuse
        return out + ["train.compile=true"] * self.compile

    @property
    def name(self) -> str:
        parts = [self.precision] + [n for n, on in (("channels_last", self.channels_last), ("fused Adam", self.fused),
                                                    ("sync_free", self.sync_free), ("reuse_fakes", self.reuse),
                                                    ("compile", self.compile)) if on]
        return " + ".join(parts)


class BareLoop:
    """Built once per case; ``step()`` runs one D+G iteration on a random batch."""

    def __init__(self, images: torch.Tensor, batch: int, width: int, z_dim: int, sw: Switches, device: str):
        from distgan.config import ModelConfig
        from distgan.models import DataInfo, build_models

        torch.manual_seed(0)
        res = images.shape[-1]
        G, D = build_models(ModelConfig(cond="none", width=width, z_dim=z_dim),
                            DataInfo(channels=images.shape[1], resolution=res))
        fmt = torch.channels_last if sw.channels_last else torch.contiguous_format
        self.G, self.D = G.to(device, memory_format=fmt), D.to(device, memory_format=fmt)
        kw = {"fused": True} if sw.fused else {}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        self.g = torch.compile(self.G) if sw.compile else self.G
        self.d = torch.compile(self.D) if sw.compile else self.D
        self.scale_d = torch.amp.GradScaler(device, enabled=sw.precision == "fp16")
        self.scale_g = torch.amp.GradScaler(device, enabled=sw.precision == "fp16")
        self.amp = sw.precision != "fp32"
        self.dtype = DTYPES.get(sw.precision, torch.float32)
        self.images, self.batch, self.z_dim, self.sw, self.device, self.fmt = images, batch, z_dim, sw, device, fmt
        self.ones = torch.ones(batch, device=device)
        self.zeros = torch.zeros(batch, device=device)

    def _autocast(self):
        return torch.autocast(self.device, dtype=self.dtype, enabled=self.amp)

    def step(self) -> None:
        idx = torch.randint(0, len(self.images), (self.batch,), device=self.device)
        real = (self.images.index_select(0, idx).float() / 127.5 - 1).contiguous(memory_format=self.fmt)
        z = torch.randn(self.batch, self.z_dim, device=self.device)
        with self._autocast():
            if self.sw.reuse:
                fake = self.g(z, None)
                fake_d = fake.detach()
            else:
                with torch.no_grad():
                    fake_d = self.g(z, None)
            loss_d = F.binary_cross_entropy_with_logits(self.d(real, None).logits.float(), self.ones) + \
                F.binary_cross_entropy_with_logits(self.d(fake_d, None).logits.float(), self.zeros)
        self.opt_d.zero_grad(set_to_none=True)
        self.scale_d.scale(loss_d).backward()
        self.scale_d.step(self.opt_d)
        self.scale_d.update()
        self.D.requires_grad_(False)
        with self._autocast():
            if not self.sw.reuse:
                fake = self.g(torch.randn(self.batch, self.z_dim, device=self.device), None)
            loss_g = F.binary_cross_entropy_with_logits(self.d(fake, None).logits.float(), self.ones)
        self.opt_g.zero_grad(set_to_none=True)
        self.scale_g.scale(loss_g).backward()
        self.scale_g.step(self.opt_g)
        self.scale_g.update()
        self.D.requires_grad_(True)

    def images_per_s(self, warmup: int, timed: int) -> float:
        for _ in range(warmup):
            self.step()
        sync(self.device)
        t = time.perf_counter()
        for _ in range(timed):
            self.step()
        sync(self.device)
        return self.batch * timed / (time.perf_counter() - t)


def largest_batch(images: torch.Tensor, start: int, limit: int, width: int, z_dim: int, sw: Switches,
                  device: str) -> int:
    """The largest power-of-two multiple of ``start`` (<= ``limit``) whose training step fits in memory."""
    best, b = start, start
    while b <= limit:
        try:
            loop = BareLoop(images, b, width, z_dim, sw, device)
            loop.step()
            sync(device)
            best = b
            del loop
        except torch.OutOfMemoryError:
            break
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        b *= 2
    return best
