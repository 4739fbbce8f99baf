"""The loader a training rank iterates: epochs of :class:`ShardStream`, with a resumable position.

    loader = build_loader("shards/celeba64", spec, rank, world, seed=0)
    batch = next(loader)                 # endless when spec.resampled (training)
    state = loader.state_dict()          # {"epoch": 3, "batches": 17, "samples": 1088, ...}
    loader = build_loader(..., position=state)   # continues with global batch 18 of epoch 3

Guarantees (tested with real processes, see tests/test_data_streaming.py):

* every rank yields the same number of batches per epoch, whatever the shard
  sizes (``Layout.steps``), so DDP never waits on a rank that ran out;
* exact mode (``resampled=False``): each sample at most once per epoch over all
  ranks and workers, and all but fewer than one global batch of them;
* the global sequence of samples depends only on the seed, the global batch and
  the lane count, never on the world size or the worker count: a saved position
  (epoch, global batches consumed) continues it exactly on any world size that
  divides the lanes, with any number of workers (another global batch, seed or
  data set restarts the saved epoch from its beginning, with a warning);
* start-up checks: manifest counts, shard presence and size (local), sha256
  with ``verify_checksums``; damaged shards fail naming them, or are dropped
  with a warning under ``skip_corrupt``.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from distgan.data.pipeline import DataSpec, ShardStream, shard_urls
from distgan.data.plan import Layout
from distgan.log import get_logger
from distgan.shards.location import is_pipe
from distgan.shards.manifest import Manifest, ShardError, damaged_shards, read_manifest

log = get_logger("data")
_ENDLESS_IF_RESAMPLED = object()


class StreamLoader:
    """Iterator of uint8 batches over epochs for one rank, with ``state_dict``/``load_state_dict``.

    Each batch is this rank's slice of one global batch of ``spec.batch_size x world``
    samples (:mod:`distgan.data.plan`).
    """

    def __init__(self, shard_dir: str | Path, spec: DataSpec, rank: int = 0, world: int = 1, seed: int = 0,
                 pin_memory: bool = False, epochs: int | None = None, manifest: Manifest | None = None):
        self.shard_dir, self.spec, self.rank, self.world, self.seed = shard_dir, spec, rank, world, seed
        self.manifest = manifest or read_manifest(shard_dir)
        self.pin_memory, self.epochs = pin_memory, epochs
        urls = startup_check(shard_dir, self.manifest, spec.verify_checksums, spec.skip_corrupt)
        try:
            self.dataset = ShardStream(shard_dir, spec, rank, world, seed, self.manifest, urls)
        except ValueError as e:
            raise ShardError(f"{shard_dir}: data.lanes: {e}") from None
        self.epoch, self.batches, self._start_epoch = 0, 0, 0
        self._it: Iterator[dict[str, Any]] | None = None
        if self.steps_per_epoch(0) == 0:
            raise ShardError(f"{shard_dir}: an epoch would have 0 global batches of {self.layout.global_batch} "
                             f"({self.manifest.num_samples} samples over {self.layout.lanes} lanes); lower "
                             "train.batch_size or data.lanes, or raise data.epoch_samples")

    @property
    def layout(self) -> Layout:
        return self.dataset.layout

    # -------------------------------------------------------------- position
    def steps_per_epoch(self, epoch: int | None = None) -> int:
        """Global batches in ``epoch`` (default: the current one); every rank yields this many."""
        return self.layout.steps(self.epoch if epoch is None else epoch)

    def state_dict(self) -> dict[str, Any]:
        """The global stream position (plain ints/strings: fits a weights_only checkpoint)."""
        lay = self.layout
        return {"epoch": self.epoch, "batches": self.batches, "samples": self.batches * lay.global_batch,
                "global_batch": lay.global_batch, "lanes": lay.lanes, "world": self.world,
                "num_workers": self.spec.num_workers, "resampled": self.spec.resampled, "seed": self.seed,
                "data": self.manifest.digest()}

    def load_state_dict(self, state: dict[str, Any], ctx: Any = None) -> None:
        """Continue from a saved position, on any world size and worker count that divide its lanes.

        The saved lane count is kept (a world size that cannot share it is a
        :class:`ShardError` naming the sizes that can). A changed global batch,
        seed, sampling mode or data set, or a position saved before lanes
        existed, restarts the saved epoch from its beginning, with a warning.
        (``ctx``, the checkpoint's resume context, adds nothing: the position records its own layout.)
        """
        self._close()
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        lanes = int(state.get("lanes", 0))
        if lanes and lanes != self.layout.lanes and self.layout.global_batch % lanes == 0:
            try:
                self.dataset.layout = self.dataset.make_layout(lanes)
            except ValueError as e:
                raise ShardError(f"{self.shard_dir}: resuming a stream saved with {state.get('world')} rank(s) "
                                 f"on {self.world}: {e}") from None
        mine = self.state_dict()
        changed = [k for k in ("global_batch", "lanes", "resampled", "seed", "data") if state.get(k) != mine[k]]
        if changed:
            what = ", ".join(f"{k}: {state.get(k, 'none')} -> {mine[k]}" for k in changed)
            log.warning(f"data stream changed since the checkpoint ({what}); "
                        f"restarting epoch {self.epoch} from its beginning")
            self.batches = 0
        self._start_epoch = self.epoch

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> "StreamLoader":
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self.epochs is not None and self.epoch >= self._start_epoch + self.epochs:
                raise StopIteration
            steps = self.steps_per_epoch()
            if self.batches < steps:
                if self._it is None:
                    self._it = self._open_epoch()
                batch = self._next_batch()
                if batch is not None:
                    self.batches += 1
                    if self.batches == steps:  # the epoch's last batch: its workers can go now
                        self._close()
                    return batch
                log.warning(f"rank {self.rank}: epoch {self.epoch} ended after {self.batches} of {steps} "
                            "batches (skipped corrupt data?)")
            self._close()
            self.epoch, self.batches = self.epoch + 1, 0

    def _next_batch(self) -> dict[str, Any] | None:
        """Global batch ``self.batches``: one item from each worker, in worker order, joined."""
        assert self._it is not None
        parts = []
        for w in range(max(1, self.dataset.workers)):
            item = next(self._it, None)
            if item is None or item.pop("_batch") != self.batches or item.pop("_worker") != w:
                return None  # a worker's lane ran short (skip_corrupt): the rest of the epoch is unaligned
            parts.append(item)
        return parts[0] if len(parts) == 1 else join(parts)

    def _open_epoch(self) -> Iterator[dict[str, Any]]:
        ds, workers = self.dataset, self.dataset.workers
        ds.epoch, ds.skip = self.epoch, self.batches
        if workers == 0:
            return iter(ds)
        # a fresh DataLoader per epoch: workers are forked with this epoch's plan. It draws its
        # workers' base seed from the generator it is given, and without one from torch's global
        # RNG; the stream never uses that seed (every shuffle is seeded from the lane), but a draw
        # from the global RNG would shift whatever else the rank draws from it.
        seed = (self.seed * 1_000_003 + self.epoch * 1_009 + self.rank) % (1 << 63)
        dl = DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=self.pin_memory,
                        worker_init_fn=_worker_init, generator=torch.Generator().manual_seed(seed))
        return iter(dl)

    def _close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def close(self) -> None:
        """Stop the worker processes now (they also stop when the loader is garbage-collected)."""
        self._close()


def join(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate collated batches (keys, images, labels, ...) in order."""
    out: dict[str, Any] = {}
    for k, v in parts[0].items():
        out[k] = [x for p in parts for x in p[k]] if isinstance(v, list) else torch.cat([p[k] for p in parts])
    return out


def _worker_init(worker_id: int) -> None:
    # Slurm preemption sends SIGTERM to the whole process group: the main process checkpoints
    # at the next step boundary and shuts the workers down itself. A worker dying on the signal
    # first would make torch raise "DataLoader worker killed" in the middle of that checkpoint.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def startup_check(shard_dir: str | Path, manifest: Manifest, checksums: bool, skip_corrupt: bool) -> list[str | None]:
    """Shard URLs after the start-up checks; a damaged shard is an error or (skip_corrupt) None."""
    urls: list[str | None] = list(shard_urls(shard_dir, manifest))
    if is_pipe(shard_dir) and not checksums:
        return urls  # nothing cheap to check through a pipe
    problems = damaged_shards(shard_dir, manifest, checksums=checksums)
    if not problems:
        return urls
    if not skip_corrupt:
        raise ShardError(f"{len(problems)} of {len(manifest.shards)} shards in {shard_dir} are damaged or missing "
                         f"(data.skip_corrupt=true skips them):\n  " + "\n  ".join(problems.values()))
    for line in problems.values():
        log.warning(f"skipping shard: {line}")
    urls = [None if s.name in problems else u for u, s in zip(urls, manifest.shards)]
    if not any(urls):
        raise ShardError(f"every shard in {shard_dir} is damaged or missing")
    return urls


def build_loader(shard_dir: str | Path, spec: DataSpec, rank: int = 0, world: int = 1, seed: int = 0,
                 pin_memory: bool = False, epochs: Any = _ENDLESS_IF_RESAMPLED,
                 position: dict[str, Any] | None = None) -> StreamLoader:
    """The batches of ``rank`` of ``world``: endless when ``spec.resampled``, one epoch otherwise.

    Pass ``epochs`` (None = endless) to choose, and ``position`` (a
    ``state_dict()``) to continue a saved stream.
    """
    if epochs is _ENDLESS_IF_RESAMPLED:
        epochs = None if spec.resampled else 1
    loader = StreamLoader(shard_dir, spec, rank, world, seed, pin_memory, epochs)
    if position:
        loader.load_state_dict(position)
    return loader
