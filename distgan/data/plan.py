"""Epoch plans: which shards each (rank, worker) reads and how many batches it yields.

Everything here is a pure function of the manifest's shard counts and
(seed, epoch, rank, worker), so every rank computes every other rank's plan
without communication. Two modes:

exact (``resampled=False``)
    Epoch e shuffles the shard list with (seed, e), identically on all ranks,
    then deals it to ranks and, within a rank, to workers (round-robin for
    equal shards, balanced by sample count for uneven ones; see
    :func:`balanced_split`): every sample of the epoch goes to exactly one consumer.
    Each rank then stops after ``min over ranks`` batches, so all ranks run
    the same number of steps even when shard sizes differ (the few samples a
    longer rank had in excess are dropped for that epoch).
resampled (``resampled=True``, the training default)
    Each worker draws shards with replacement from its own (seed, epoch, rank,
    worker) stream. An epoch is ``epoch_samples`` samples over all ranks
    (default: the manifest's count), i.e. ``epoch_samples // (world * batch)``
    batches on every rank.

A DataLoader merges its workers' batches round-robin (skipping exhausted
workers). :func:`consumed_per_worker` replays that merge, so a stream position
"k batches into epoch e" maps to how many batches each worker already gave,
and which worker is next: resuming continues the identical batch sequence.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


def stream_seed(*parts: object) -> int:
    """A 64-bit seed from any tuple of ints/strings; stable across runs and Python versions."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Layout:
    """The fixed shape of a stream: shard sizes, consumers and batch size."""
    counts: tuple[int, ...]  # samples per shard, manifest order
    world: int
    workers: int  # worker processes per rank (1 when loading in the main process)
    batch_size: int
    seed: int
    resampled: bool
    epoch_samples: int = 0  # resampled: samples per epoch over all ranks (0 = sum of counts)
    shuffle_shards: bool = True
    drop_last: bool = True

    def shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.counts)))
        if self.shuffle_shards:
            random.Random(stream_seed(self.seed, epoch, "shards")).shuffle(order)
        return order

    def worker_shards(self, epoch: int, rank: int, worker: int) -> list[int]:
        """Exact mode: the shard indices (manifest order) read by (rank, worker) in ``epoch``."""
        mine = balanced_split(self.shard_order(epoch), self.counts, self.world)[rank]
        return balanced_split(mine, self.counts, self.workers)[worker]

    def worker_batches(self, epoch: int, rank: int) -> list[int]:
        """Batches each worker of ``rank`` yields in ``epoch`` (before the equal-steps cut)."""
        if self.resampled:
            steps = self.steps(epoch)
            return [steps // self.workers + (1 if w < steps % self.workers else 0) for w in range(self.workers)]
        out = []
        for w in range(self.workers):
            n = sum(self.counts[i] for i in self.worker_shards(epoch, rank, w))
            out.append(n // self.batch_size if self.drop_last else -(-n // self.batch_size))
        return out

    def steps(self, epoch: int) -> int:
        """Batches every rank yields in ``epoch`` (the same number on all ranks)."""
        if self.resampled:
            total = self.epoch_samples or sum(self.counts)
            return total // self.world // self.batch_size
        return min(sum(self.worker_batches(epoch, r)) for r in range(self.world))


def balanced_split(order: list[int], counts: tuple[int, ...], parts: int) -> list[list[int]]:
    """Deal shards to ``parts`` consumers, largest first, each to the least-loaded one (ties: lowest index).

    Equal-size shards are dealt round-robin in ``order`` (shard i to part i % parts);
    uneven ones are balanced by sample count, so cutting every rank to the
    shortest one (equal steps) drops as little data as possible.
    """
    loads, out = [0] * parts, [[] for _ in range(parts)]
    for i in sorted(order, key=lambda i: -counts[i]):  # stable: ties keep the shuffled order
        p = min(range(parts), key=lambda j: (loads[j], j))
        out[p].append(i)
        loads[p] += counts[i]
    return out


def consumed_per_worker(batches: list[int], k: int) -> tuple[list[int], int]:
    """After ``k`` batches of a round-robin merge of workers yielding ``batches``: (taken per worker, next worker).

    Mirrors torch's DataLoader for iterable data sets: worker 0, 1, ..., W-1,
    0, ... skipping workers that ran out.
    """
    n = len(batches)
    taken, ptr = [0] * n, 0
    if k > sum(batches):
        raise ValueError(f"position {k} is past the end of an epoch of {sum(batches)} batches")
    for _ in range(k):
        while taken[ptr] >= batches[ptr]:
            ptr = (ptr + 1) % n
        taken[ptr] += 1
        ptr = (ptr + 1) % n
    return taken, ptr
