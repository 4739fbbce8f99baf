"""The latent noise of a training step, as a function of (seed, step, draw) alone.

A step's noise is drawn for the whole global batch from a generator seeded by
(``train.seed``, step, draw), where a draw is one phase repetition of the step
(D phase(s), then G phase); every rank draws the same global noise and keeps its
own rows, ``[rank * share, (rank + 1) * share)``, split over its micro-batches
in order. So the noise an image of the global batch is paired with does not
depend on the world size, on gradient accumulation or on where a run was
resumed: together with the data order of :mod:`distgan.data.plan`, a run resumed
on another allocation computes what an uninterrupted run would have.

Fake class labels (``y ~ U{0..c-1}``) come from the same generator. A
multi-label model's fake attributes are the real batch's own, shuffled within
the micro-batch (:func:`distgan.train.objectives.sample_latent`), which stays
per rank. The generator lives on the training device (CUDA draws differ from
CPU draws; each is deterministic).
"""
from __future__ import annotations

import torch

from distgan.data.plan import stream_seed

NOISE_KEY = "_noise"  # a micro-batch's (z, y) for the current phase


class GlobalNoise:
    """Attaches each micro-batch's rows of the step's global noise (``NOISE_KEY``)."""

    def __init__(self, seed: int, z_dim: int, num_classes: int, rank: int, world: int, device: torch.device):
        self.seed, self.z_dim, self.num_classes = seed, z_dim, num_classes
        self.rank, self.world, self.device = rank, world, device
        self.gen = torch.Generator(device=device)

    def attach(self, micro: list[dict], step: int, draw: int) -> None:
        """Give ``micro`` (this rank's share of the global batch, in order) the noise of ``draw`` in ``step``."""
        share = sum(len(mb["real"]) for mb in micro)
        total = share * self.world
        self.gen.manual_seed(stream_seed(self.seed, step, draw, "noise") % (1 << 63))
        z = torch.randn(total, self.z_dim, generator=self.gen, device=self.device)
        y = torch.randint(0, self.num_classes, (total,), generator=self.gen, device=self.device) \
            if self.num_classes else None
        lo = self.rank * share
        for mb in micro:
            n = len(mb["real"])
            mb[NOISE_KEY] = (z[lo:lo + n], None if y is None else y[lo:lo + n])
            lo += n
