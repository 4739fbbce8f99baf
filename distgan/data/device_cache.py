"""A GPU-resident data set for data that fits in device memory (``data.device_cache``).

The shards are decoded ONCE into a uint8 tensor on the device (5,000 MNIST
digits at 32x32 are 5 MB; 20,580 dogs at 64x64 are 253 MB). Every epoch all
ranks draw the same permutation from (seed, epoch); global batch b is its
positions [b*G, (b+1)*G) and rank r takes the r-th slice of that, so the split
across ranks is exact, every rank runs the same number of steps, and the global
order does not depend on the world size. Batches are sliced on the
device: no decode, no host->device copy, no worker processes in the step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from distgan.data.pipeline import all_samples, decode
from distgan.log import get_logger
from distgan.shards.manifest import Manifest, read_manifest

log = get_logger("data")


def decode_all(shard_dir: str | Path, resolution: int, manifest: Manifest | None = None) -> dict[str, torch.Tensor]:
    """Every sample of the shard set, in manifest order: ``image`` uint8 NCHW, ``label``/``attrs``."""
    manifest = manifest or read_manifest(shard_dir)
    images, labels, attrs = [], [], []
    for raw in all_samples(shard_dir, manifest):
        s = decode(raw, resolution, manifest.channels)
        images.append(s["image"])
        if "label" in s:
            labels.append(s["label"])
        if "attrs" in s:
            attrs.append(s["attrs"])
    out = {"image": torch.stack(images)}
    if labels:
        out["label"] = torch.tensor(labels, dtype=torch.long)
    if attrs:
        out["attrs"] = torch.stack(attrs)
    return out


class DeviceCache:
    """Iterator of batches sliced from a device-resident copy of the data set.

    Each batch is this rank's slice of one global batch of ``batch_size x world``
    samples; the global order depends only on (seed, epoch), so a saved position
    (epoch, global batches consumed) continues exactly on any world size that
    keeps the global batch.
    """

    def __init__(self, shard_dir: str | Path, resolution: int, batch_size: int, device: torch.device,
                 rank: int = 0, world: int = 1, seed: int = 0, manifest: Manifest | None = None):
        data = decode_all(shard_dir, resolution, manifest)
        self.tensors = {k: v.to(device) for k, v in data.items()}
        self.n = len(self.tensors["image"])
        self.global_batch = batch_size * world
        if self.n < self.global_batch:
            raise ValueError(f"data.device_cache: {self.n} samples are fewer than one global batch of "
                             f"{self.global_batch} ({world} ranks x {batch_size})")
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.device = device
        self.epoch, self.batch_index = 0, 0
        self._order: torch.Tensor | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Global batches per epoch (the samples that do not fill one are left out of that epoch)."""
        return self.n // self.global_batch

    def _epoch_order(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=gen).to(self.device)  # identical on every rank

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._order is None:
            self._order = self._epoch_order()
        if self.batch_index >= self.batches_per_epoch:
            self.epoch, self.batch_index = self.epoch + 1, 0
            self._order = self._epoch_order()
        start = self.batch_index * self.global_batch + self.rank * self.batch_size
        idx = self._order[start:start + self.batch_size]
        self.batch_index += 1
        batch = {k: v.index_select(0, idx) for k, v in self.tensors.items()}
        batch["index"] = idx
        return batch

    def state_dict(self) -> dict[str, int]:
        """The global stream position, for checkpoints: resuming continues the same order."""
        return {"epoch": self.epoch, "batch_index": self.batch_index, "global_batch": self.global_batch,
                "world": self.world}

    def load_state_dict(self, state: dict[str, int], ctx: Any = None) -> None:
        """Continue from a saved position, on any world size. A position saved with another global
        batch (or before positions were global) restarts the saved epoch, with a warning."""
        self.epoch, self.batch_index = int(state["epoch"]), int(state["batch_index"])
        saved = state.get("global_batch")
        if saved != self.global_batch and self.batch_index:
            log.warning(f"data position saved with global batch {saved or 'per rank'}, now {self.global_batch}: "
                        f"restarting epoch {self.epoch} from its beginning")
            self.batch_index = 0
        self._order = None if self.batch_index == 0 else self._epoch_order()
