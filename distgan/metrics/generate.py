"""Generated samples for evaluation, split over ranks, identical whatever the rank count.

Sample i's noise comes from a generator seeded by (seed, i's batch), and its
condition is a fixed function of i (class i mod C, or real attribute row k(i)),
so R ranks together produce exactly the samples one process would. Global
batch b belongs to rank b mod R; every rank runs the same number of forward
passes (the spare ones are discarded) so collectives inside G cannot desync.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from distgan import dist
from distgan.config import ModelConfig
from distgan.data.pipeline import shard_urls, tar_samples
from distgan.models import DataInfo, label_space
from distgan.shards.manifest import read_manifest
from distgan.shards.members import Canonicalizer


@dataclass
class Conditioning:
    """What G is conditioned on during evaluation."""
    mode: str = "none"  # none | class | attrs
    num_classes: int = 0
    attr_rows: torch.Tensor | None = None  # (N, A) real attribute vectors to draw from
    attr_columns: list[int] | None = None  # manifest columns of those A attributes (None = all)

    def labels(self, index: np.ndarray) -> torch.Tensor | None:
        if self.mode == "class":
            return torch.from_numpy(index % self.num_classes).long()
        if self.mode == "attrs":
            rows = self.attr_rows
            return rows[torch.from_numpy((index * 7919) % len(rows))].float()  # spread over the real rows
        return None


def real_attribute_rows(shard_dir: str | Path) -> torch.Tensor:
    """Every sample's 0/1 attribute vector (reads only the small ``attr`` members, no image decode)."""
    manifest = read_manifest(shard_dir)
    samples = tar_samples(shard_urls(shard_dir, manifest), canonical=Canonicalizer.for_manifest(manifest))
    rows = [[c == ord("1") for c in s["attr"]] for s in samples if "attr" in s]
    if not rows:
        raise ValueError(f"shard set '{shard_dir}' lists attributes but its samples carry no 'attr' member")
    return torch.tensor(rows, dtype=torch.float32)


def conditioning_for(model: ModelConfig | str, shard_dir: str | Path,
                     attributes: list[str] | None = None) -> Conditioning:
    """The evaluation conditioning of a model (its ``model`` config, or just ``model.cond``) on a shard set.

    What ``y`` is comes from :func:`distgan.models.label_space`, the function training
    builds the models with: class labels, attribute vectors or nothing. For multi-label
    runs G sees only the run's chosen attributes (``data.attributes``, in config order;
    all of the manifest's when none are chosen), so the real rows are cut to those columns.
    """
    mc = model if isinstance(model, ModelConfig) else ModelConfig(cond=model)
    manifest = read_manifest(shard_dir)
    columns = None
    if attributes:
        missing = [a for a in attributes if a not in manifest.attributes]
        if missing:
            raise ValueError(f"data.attributes {missing} are not in {shard_dir}'s manifest; "
                             f"available: {', '.join(manifest.attributes)}")
        columns = [manifest.attributes.index(a) for a in attributes]
    info = DataInfo(channels=manifest.channels, resolution=1, num_classes=manifest.num_classes,
                    attributes=list(attributes or manifest.attributes))
    kind = label_space(mc, info).kind
    if kind == "attrs":
        rows = real_attribute_rows(shard_dir)
        return Conditioning("attrs", attr_rows=rows if columns is None else rows[:, columns], attr_columns=columns)
    if kind == "classes":
        return Conditioning("class", num_classes=manifest.num_classes)
    return Conditioning()


@torch.no_grad()
def generate(G: nn.Module, num: int, z_dim: int, cond: Conditioning, batch_size: int = 64,
             seed: int = 0) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """Yield this rank's (global indices, images in [-1, 1] on CPU, condition or None) batches."""
    rank, world = dist.rank_world()
    device = next(G.parameters()).device
    num_batches = (num + batch_size - 1) // batch_size
    rounds = (num_batches + world - 1) // world
    was_training = G.training
    G.eval()
    try:
        for k in range(rounds):
            b = k * world + rank
            spare = b >= num_batches
            lo = (b if not spare else 0) * batch_size
            index = np.arange(lo, min(lo + batch_size, num))
            gen = torch.Generator().manual_seed(seed * 1_000_003 + (b if not spare else 0))
            z = torch.randn(len(index), z_dim, generator=gen)
            y = cond.labels(index)
            images = G(z.to(device), None if y is None else y.to(device)).float().cpu()
            if not spare:
                yield index, images, y
    finally:
        G.train(was_training)
