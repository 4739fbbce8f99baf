"""Epoch plans: the global sample order, cut into lanes, and which lanes each rank and worker reads.

Everything here is a pure function of the manifest's shard counts and
(seed, epoch, lane), so every rank computes every plan without communication,
and none of it depends on the world size or the worker count. That is what
lets a run resume on another allocation and see exactly the samples an
uninterrupted run would have seen, in the same global order.

Lanes
    A run's data is ``lanes`` independent streams of samples. Global batch b
    is the b-th chunk of ``global_batch / lanes`` samples of every lane, lane 0
    first. Rank r of W reads the contiguous block of ``lanes / W`` lanes
    starting at ``r * lanes / W``, so its share of a global batch is the slice
    ``[r * S, (r + 1) * S)`` with ``S = global_batch / W``; a rank's DataLoader
    workers split its lanes the same way. The world size must divide the
    lane count; the lane count is fixed when a run starts (``data.lanes``, or
    :func:`auto_lanes`) and kept in its checkpoints.

exact (``resampled=False``)
    Epoch e concatenates the shards in a (seed, e)-shuffled order and deals the
    sequence to lanes in equal contiguous segments of ``N // lanes`` samples (a
    lane may start or end inside a shard). Each lane shuffles its segment with
    a buffer seeded from (seed, e, lane). Every sample is read at most once per
    epoch; fewer than ``global_batch`` samples per epoch are left out (the
    remainders that do not fill a lane or a chunk).
resampled (``resampled=True``, the training default)
    Lane l draws shards with replacement from its own (seed, e, lane) stream.
    An epoch is ``epoch_samples // global_batch`` global batches (default: the
    manifest's sample count).

The stream position is (epoch, global batches consumed): the same number on
every rank, whatever the world size.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

MAX_AUTO_LANES = 64  # each lane holds an open shard and a shuffle buffer: bound the count auto picks


def stream_seed(*parts: object) -> int:
    """A 64-bit seed from any tuple of ints/strings; stable across runs and Python versions."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def auto_lanes(global_batch: int, world: int, shards: int) -> int:
    """The lane count a run starts with: the largest divisor of ``global_batch`` that ``world``
    divides, at most one lane per shard (and :data:`MAX_AUTO_LANES`), so that a resume can use as
    many other world sizes as possible (every divisor of the count). More lanes than shards would
    start lanes inside shards, which costs a header scan per lane and epoch for no gain in mixing."""
    cap = min(MAX_AUTO_LANES, max(shards, world))
    fits = [d for d in divisors(global_batch) if d <= cap and d % world == 0]
    return max(fits) if fits else world


@dataclass(frozen=True)
class Segment:
    """Samples ``[start, stop)`` of shard ``shard`` (manifest index), in shard order."""
    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class Layout:
    """The fixed shape of a stream: shard sizes, global batch, lanes; and who reads which lanes."""
    counts: tuple[int, ...]  # samples per shard, manifest order (0 = dropped at start-up)
    global_batch: int
    lanes: int
    seed: int
    resampled: bool
    epoch_samples: int = 0  # resampled: samples per epoch (0 = sum of counts)
    shuffle_shards: bool = True

    def __post_init__(self) -> None:
        if self.lanes < 1 or self.global_batch % self.lanes:
            raise ValueError(f"{self.lanes} lanes do not divide the global batch of {self.global_batch}")

    @property
    def chunk(self) -> int:
        """Samples each lane gives to one global batch."""
        return self.global_batch // self.lanes

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    def shard_order(self, epoch: int) -> list[int]:
        order = [i for i, c in enumerate(self.counts) if c]
        if self.shuffle_shards:
            random.Random(stream_seed(self.seed, epoch, "shards")).shuffle(order)
        return order

    def steps(self, epoch: int = 0) -> int:
        """Global batches in ``epoch`` (the same on every rank, for every world size)."""
        if self.resampled:
            return (self.epoch_samples or self.num_samples) // self.global_batch
        return (self.num_samples // self.lanes) // self.chunk

    def segments(self, epoch: int, lane: int) -> list[Segment]:
        """Exact mode: the pieces of shards ``lane`` reads in ``epoch``, in order."""
        per = self.num_samples // self.lanes
        lo, hi = lane * per, (lane + 1) * per
        out, pos = [], 0
        for i in self.shard_order(epoch):
            a, b = max(lo, pos), min(hi, pos + self.counts[i])
            if a < b:
                out.append(Segment(i, a - pos, b - pos))
            pos += self.counts[i]
        return out

    # ---------------------------------------------------------------- who reads what
    def check_world(self, world: int) -> None:
        if self.lanes % world:
            raise ValueError(f"the stream has {self.lanes} lanes, which {world} ranks cannot share equally; world "
                             f"sizes that can: {', '.join(map(str, divisors(self.lanes)))}")

    def rank_lanes(self, rank: int, world: int) -> range:
        per = self.lanes // world
        return range(rank * per, (rank + 1) * per)

    def workers(self, world: int, num_workers: int) -> int:
        """Worker processes a rank uses: at most one per lane (0 = read in the rank's own process)."""
        return min(num_workers, self.lanes // world)

    def worker_lanes(self, rank: int, world: int, worker: int, workers: int) -> range:
        """The contiguous block of the rank's lanes that ``worker`` of ``workers`` reads."""
        mine = self.rank_lanes(rank, world)
        n = max(1, workers)
        per, extra = divmod(len(mine), n)
        start = mine.start + worker * per + min(worker, extra)
        return range(start, start + per + (1 if worker < extra else 0))
