"""Turn a source into a shard set: ``write_shards(kind, path, out_dir, ...)``.

Stages: list the source's items (canonical order) -> permute with ``seed``
-> load + crop/resize + PNG-encode in ``workers`` processes (order kept, so
the output is byte-identical for any worker count) -> check every sample
against the first (channels, size) -> tar shards of ``shard_size`` samples ->
``manifest.json``. Shards left over from an earlier, larger write into the
same directory are removed, so the directory always matches its manifest.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from distgan.shards.images import fit
from distgan.shards.manifest import Manifest
from distgan.shards.records import Sample, SourceError, SourceOptions
from distgan.shards.sources import get_source
from distgan.shards.writer import ShardWriter, encode_png, pixel_stats


@dataclass
class Encoded:
    """One sample ready for the tar: encoded members plus what the parent must check."""
    key: str
    files: dict[str, bytes]
    shape: tuple[int, int, int]
    src_shape: tuple[int, int, int] | None
    stats: tuple[np.ndarray, np.ndarray, int]
    origin: str


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def encode_sample(s: Sample, opts: SourceOptions) -> Encoded:
    """Crop/resize/convert one sample per ``opts`` and encode its members."""
    img = fit(s.image, opts)
    files = {"png": encode_png(img)}
    if s.label is not None:
        files["cls"] = str(int(s.label)).encode()
    if s.attrs is not None:
        files["attr"] = "".join("1" if a else "0" for a in s.attrs).encode()
    src_shape = None
    if s.src is not None:
        src = fit(s.src, opts)
        files["src.png"] = encode_png(src)
        src_shape = src.shape
    return Encoded(s.key, files, img.shape, src_shape, pixel_stats(img), s.origin or s.key)


# the loader and options live in each worker process (set once by the pool initializer)
_WORKER: dict[str, Any] = {}


def _init_worker(load: Callable[[Any, SourceOptions], Sample] | None, opts: SourceOptions,
                 in_pool: bool = False) -> None:
    if in_pool:
        # forked workers inherit the parent's Python signal handlers (e.g. a trainer's SIGTERM
        # "checkpoint and stop" flag); Pool.terminate() relies on SIGTERM really ending them
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, in the parent
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["load"], _WORKER["opts"] = load, opts


def _prepare(item: Any) -> Encoded:
    load, opts = _WORKER["load"], _WORKER["opts"]
    return encode_sample(load(item, opts) if load else item, opts)


def write_shards(kind: str, path: str | None, out_dir: str | Path, shard_size: int = 1000,
                 opts: SourceOptions | None = None, progress: bool = True, workers: int = 1) -> Manifest:
    """Read source ``kind`` (at ``path``) and write shards of ``shard_size`` samples to ``out_dir``.

    ``workers`` > 1 loads and encodes in that many processes; the shards are
    identical whatever the count.
    """
    opts = opts or SourceOptions()
    if opts.channels not in (0, 1, 3):
        raise SourceError(f"--channels must be 0 (as stored), 1 or 3, got {opts.channels}")
    data = get_source(kind)(path, opts)
    items = list(data.samples)
    order = np.random.default_rng(opts.seed).permutation(len(items))  # seeded, reproducible order
    if opts.limit > 0:
        order = order[: opts.limit]
    items = [items[i] for i in order]
    writer = ShardWriter(out_dir, shard_size)

    pool = None
    if workers > 1 and len(items) > 1:
        # forkserver, not fork: forking a process whose torch/OpenMP threads hold locks can
        # deadlock the child (seen under load in the test suite)
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(data.load, opts, True))
        chunk = max(1, min(64, len(items) // (workers * 8)))
        encoded = pool.imap(_prepare, items, chunksize=chunk)
    else:
        _init_worker(data.load, opts)
        encoded = map(_prepare, items)
    first: Encoded | None = None
    try:
        for e in tqdm(encoded, total=len(items), desc=f"writing {kind} shards", disable=not progress,
                      unit="img", smoothing=0.1):
            if first is None:
                first = e
            _check_like_first(e, first)
            writer.add_encoded(e.key, e.files, stats=e.stats)
        if pool is not None:
            pool.close()  # all results are in: let the workers exit on their own
    finally:
        if pool is not None:
            pool.terminate()  # no-op after close(); on an error, stop the pending work
            pool.join()
    if first is None:
        raise SourceError(f"source '{kind}' at '{path}' produced no samples")
    h, w, c = first.shape
    extra = {**data.extra, "resolution": opts.resolution, "crop": opts.crop, "crop_size": opts.crop_size}
    if data.paired:
        extra["direction"] = opts.direction
    manifest = writer.finish(source=kind, height=h, width=w, channels=c, classes=data.classes,
                             attributes=data.attributes, split=data.split or opts.split, seed=opts.seed,
                             paired=data.paired, extra=extra)
    keep = {s.name for s in manifest.shards}
    for stale in Path(out_dir).glob(f"{writer.prefix}-*.tar"):
        if stale.name not in keep:
            stale.unlink()
    return manifest


def _check_like_first(e: Encoded, first: Encoded) -> None:
    if e.shape[2] != first.shape[2]:
        raise SourceError(f"{e.origin}: {e.shape[2]} channels, but {first.origin} has {first.shape[2]} "
                          "(mixed channel counts; pass --channels 1 or --channels 3 to convert all)")
    if e.shape != first.shape:
        raise SourceError(f"{e.origin}: size {e.shape[1]}x{e.shape[0]}, but {first.origin} is "
                          f"{first.shape[1]}x{first.shape[0]}; pass --resolution to resize all")
    if e.src_shape is not None and e.src_shape != e.shape:
        raise SourceError(f"{e.origin}: input (src) image is {e.src_shape}, target is {e.shape}; "
                          "pass --resolution to resize both")
