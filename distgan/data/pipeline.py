"""The streaming pipeline: shards -> rank split -> worker split -> shuffle -> decode -> batch.

Every stage is a visible generator function, and the rank/world split is
explicit (never inferred from a global process group), so the same pipeline
serves one process, DDP ranks and Slurm tasks. :class:`ShardStream` runs the
stages for ONE epoch of one rank (inside each DataLoader worker);
:class:`distgan.data.loader.StreamLoader` strings epochs together, keeps the
stream position and is what :func:`build_loader` returns.

    loader = build_loader(shard_dir, DataSpec(resolution=32, batch_size=64), rank=0, world=1, seed=0)
    for batch in loader: ...   # batch["image"] uint8 NCHW, batch["label"] long, batch["key"] list

Shuffling is seeded from (seed, epoch, lane), never from the rank or the worker;
epoch plans (which lanes, which pieces of which shards, how many batches) live in
:mod:`distgan.data.plan`.
"""
from __future__ import annotations

import io
import itertools
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from distgan.data.plan import Layout, auto_lanes, stream_seed
from distgan.data.tarstream import iter_headers, iter_members
from distgan.log import get_logger
from distgan.shards.location import member_url, open_url
from distgan.shards.manifest import Manifest, ShardError, read_manifest
from distgan.shards.members import Canonicalizer, MemberError, SampleFormat, split_name

log = get_logger("data")

# distgan's own member layout; also reads foreign jpg/webp + .cls shards indexed without a label mapping
_NATIVE = Canonicalizer(SampleFormat(), [], [])


@dataclass
class DataSpec:
    resolution: int = 32
    batch_size: int = 64
    shuffle_buffer: int = 1000  # samples held for shuffling, over all lanes of the run
    resampled: bool = True
    num_workers: int = 0
    normalize: str = "minmax"  # minmax -> [-1, 1]; zscore -> (x - mean) / std per channel
    skip_corrupt: bool = False
    epoch_samples: int = 0  # resampled: samples per epoch over all ranks (0 = the manifest's count)
    verify_checksums: bool = False  # sha256 of every shard at start-up
    shuffle_shards: bool = True  # exact mode: reshuffle the shard list every epoch
    lanes: int = 0  # independent sample streams of the run (0 = distgan.data.plan.auto_lanes)


# ----------------------------------------------------------------------------- stages

def shard_urls(shard_dir: str | Path, manifest: Manifest) -> list[str]:
    """Each shard's URL: a local path, or the ``pipe:`` command with {name} filled in."""
    return [member_url(shard_dir, s.name) for s in manifest.shards]


def resampled_shards(urls: list[str], seed: int) -> Iterator[str]:
    """Endless stream of shard urls drawn with replacement from a seeded RNG."""
    rng = random.Random(seed)
    while True:
        yield rng.choice(urls)


def tar_samples(urls: Iterable[str], skip_corrupt: bool = False, expected: dict[str, int] | None = None,
                canonical: Canonicalizer | None = None, start: int = 0) -> Iterator[dict[str, Any]]:
    """Group tar members into samples ``{"__key__": key, "png": image bytes, "cls", "attr", "__url__": url}``.

    ``canonical`` (from the manifest, :meth:`Canonicalizer.for_manifest`)
    rewrites foreign WebDataset members (jpg/webp images, .json labels, class
    folders) into that layout. A shard that cannot be read, holds a sample
    without an image, or ends before the manifest's sample count is corrupt:
    ShardError naming it (or, with ``skip_corrupt``, a warning and the rest of
    the shard is skipped). ``start`` skips each shard's first samples without
    yielding them (for a lane that starts inside a shard).
    """
    canon = canonical or _NATIVE
    native = canon.fmt.native  # distgan's own png samples pass through untouched (the hot path)
    for url in urls:
        n = start  # samples of this shard before ``start`` are skipped, not yielded (one-shard segments)
        try:
            for sample in _read_tar(url, start):
                if not (native and "png" in sample):
                    try:
                        sample = canon(sample)
                    except MemberError as e:
                        raise ShardError(f"sample '{sample['__key__']}' {e}") from None
                n += 1
                yield sample
            if expected and url in expected and n != expected[url]:
                raise ShardError(f"ended after {n} of {expected[url]} samples (truncated?)")
        except (tarfile.TarError, OSError, EOFError, ShardError) as e:
            if not skip_corrupt:
                raise ShardError(f"corrupt or unreadable shard '{url}': {e}") from e
            log.warning(f"skipping the rest of corrupt shard '{url}' after {n} samples: {e}")


def _read_tar(url: str, start: int = 0) -> Iterator[dict[str, Any]]:
    """The samples of one shard from sample ``start`` on: skipped by seeking over their data in a
    local file (a lane that starts inside a shard reads headers only up to its start), by reading
    them through a pipe."""
    current: dict[str, Any] | None = None
    with open_url(url) as f:
        left = _seek_past(f, start) if start and _seekable(f) else start  # samples still to drop
        for name, data in iter_members(f):
            key, ext = split_name(name)
            if current is not None and current["__key__"] != key:
                if left:
                    left -= 1
                else:
                    yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            current[ext] = data
    if current is not None and not left:
        yield current


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _seek_past(f: Any, n: int) -> int:
    """Position ``f`` at the first member of sample ``n`` (0-based), reading headers only; 0 when
    done, else the samples still to drop (the file ended first: the count check reports it)."""
    last, seen = None, 0
    for name, at in iter_headers(f):
        key = split_name(name)[0]
        if key != last:
            if seen == n:
                f.seek(at)
                return 0
            seen, last = seen + 1, key
    return max(0, n - seen)


def shuffle(items: Iterable[Any], bufsize: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle with a buffer of ``bufsize`` items (0 = pass through)."""
    if bufsize <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        buf.append(item)
        if len(buf) >= bufsize:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def decode(sample: dict[str, Any], resolution: int, channels: int) -> dict[str, Any]:
    """PNG bytes -> uint8 CHW tensor at ``resolution``; labels/attributes parsed."""
    out: dict[str, Any] = {"key": sample["__key__"]}
    out["image"] = _decode_image(sample["png"], resolution, channels, sample["__url__"], sample["__key__"])
    if "src.png" in sample:
        out["src"] = _decode_image(sample["src.png"], resolution, channels, sample["__url__"], sample["__key__"])
    if "cls" in sample:
        out["label"] = int(sample["cls"])
    if "attr" in sample:
        out["attrs"] = torch.tensor([c == ord("1") for c in sample["attr"]], dtype=torch.float32)
    return out


def decoded(samples: Iterable[dict[str, Any]], resolution: int, channels: int,
            skip_corrupt: bool = False) -> Iterator[dict[str, Any]]:
    """The decode stage; with ``skip_corrupt`` an undecodable sample is logged and dropped."""
    for s in samples:
        try:
            yield decode(s, resolution, channels)
        except (ShardError, ValueError) as e:
            if not skip_corrupt:
                raise ShardError(f"shard '{s['__url__']}': sample '{s['__key__']}': {e}") from e
            log.warning(f"skipping sample '{s['__key__']}' of shard '{s['__url__']}': {e}")


def _decode_image(data: bytes, resolution: int, channels: int, url: str, key: str) -> torch.Tensor:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:
        raise ShardError(f"shard '{url}': sample '{key}' holds an unreadable image: {e}") from e
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.BILINEAR)
    arr = np.array(img, dtype=np.uint8)  # one writable copy
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1)


def all_samples(shard_dir: str | Path, manifest: Manifest | None = None) -> Iterator[dict[str, Any]]:
    """Every raw sample of a shard set once, in manifest order, each shard checked against its
    manifest count: for reading a set whole (device caches, reference statistics, fixed inputs),
    not for training."""
    manifest = manifest or read_manifest(shard_dir)
    urls = shard_urls(shard_dir, manifest)
    return tar_samples(urls, expected={u: s.count for u, s in zip(urls, manifest.shards)},
                       canonical=Canonicalizer.for_manifest(manifest))


def in_order(shard_dir: str | Path, resolution: int, batch_size: int,
             manifest: Manifest | None = None) -> Iterator[dict[str, Any]]:
    """Every sample once, in manifest order, decoded, in batches (the last one partial)."""
    manifest = manifest or read_manifest(shard_dir)
    yield from batched(decoded(all_samples(shard_dir, manifest), resolution, manifest.channels), batch_size,
                       drop_last=False)


def batched(samples: Iterable[dict[str, Any]], batch_size: int, drop_last: bool = True) -> Iterator[dict[str, Any]]:
    """Collate batches; the partial last batch is dropped unless ``drop_last=False``."""
    buf: list[dict[str, Any]] = []
    for s in samples:
        buf.append(s)
        if len(buf) == batch_size:
            yield collate(buf)
            buf = []
    if buf and not drop_last:
        yield collate(buf)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": [s["key"] for s in samples],
                           "image": torch.stack([s["image"] for s in samples])}
    if "src" in samples[0]:
        out["src"] = torch.stack([s["src"] for s in samples])
    if "label" in samples[0]:
        out["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.long)
    if "attrs" in samples[0]:
        out["attrs"] = torch.stack([s["attrs"] for s in samples])
    return out


# ----------------------------------------------------------------------------- one epoch of one rank

class ShardStream(IterableDataset):
    """One epoch of one rank's batches; DataLoader workers split the rank's lanes.

    ``layout`` (:class:`~distgan.data.plan.Layout`) fixes the lanes and the global
    batch; ``epoch`` selects the shuffles; ``skip`` (set by StreamLoader on
    resume) is how many global batches of the epoch were already consumed.
    Each worker yields one item per global batch: its lanes' chunks, lane by
    lane, tagged ``_batch`` (the global batch index) and ``_worker``; the
    loader concatenates the workers' items in worker order. Iterated directly
    (no DataLoader) it acts as a single worker that reads all the rank's lanes.
    """

    def __init__(self, shard_dir: str | Path, spec: DataSpec, rank: int, world: int, seed: int,
                 manifest: Manifest | None = None, urls: list[str | None] | None = None, epoch: int = 0,
                 lanes: int = 0):
        if not 0 <= rank < world:
            raise ValueError(f"rank must lie in 0..{world - 1}, got {rank}")
        self.shard_dir = shard_dir
        self.manifest = manifest or read_manifest(shard_dir)
        self.spec, self.rank, self.world, self.seed = spec, rank, world, seed
        # urls[i] is None for a shard dropped at start-up (damaged, with data.skip_corrupt)
        self.urls = urls if urls is not None else list(shard_urls(shard_dir, self.manifest))
        self.expected = {u: s.count for u, s in zip(self.urls, self.manifest.shards) if u}
        self.epoch, self.skip = epoch, 0
        live = sum(u is not None for u in self.urls)
        self.layout = self.make_layout(lanes or spec.lanes or auto_lanes(spec.batch_size * world, world, live))

    def make_layout(self, lanes: int) -> Layout:
        counts = tuple(s.count if u else 0 for u, s in zip(self.urls, self.manifest.shards))
        layout = Layout(counts, self.spec.batch_size * self.world, lanes, self.seed, self.spec.resampled,
                        self.spec.epoch_samples, self.spec.shuffle_shards)
        layout.check_world(self.world)
        return layout

    @property
    def workers(self) -> int:
        """Worker processes this rank's DataLoader runs (0 = none)."""
        return self.layout.workers(self.world, self.spec.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        layout = self.layout
        lanes = layout.worker_lanes(self.rank, self.world, worker, workers) if info else \
            layout.rank_lanes(self.rank, self.world)
        streams = [self._lane(lane) for lane in lanes]
        for b in range(self.skip, layout.steps(self.epoch)):
            chunk: list[dict[str, Any]] = []
            for lane, stream in zip(lanes, streams):
                got = list(itertools.islice(stream, layout.chunk))
                if len(got) < layout.chunk:
                    log.warning(f"rank {self.rank}: lane {lane} ran out in epoch {self.epoch} at global batch {b} "
                                "(skipped corrupt data?)")
                    return
                chunk += got
            item = collate(chunk)
            item["_batch"], item["_worker"] = b, worker
            yield item

    def _lane(self, lane: int) -> Iterator[dict[str, Any]]:
        """The decoded samples of ``lane`` in this epoch, from its resume position on."""
        spec, layout = self.spec, self.layout
        canon = Canonicalizer.for_manifest(self.manifest)
        if spec.resampled:
            live = [u for u in self.urls if u]
            samples = tar_samples(resampled_shards(live, stream_seed(self.seed, self.epoch, lane, "shards")),
                                  spec.skip_corrupt, self.expected, canon)
        else:
            samples = itertools.chain.from_iterable(
                self._segment(seg.shard, seg.start, seg.stop, canon) for seg in layout.segments(self.epoch, lane))
        # the shuffle budget is the run's, spread over its lanes (each lane holds one buffer)
        buf = -(-spec.shuffle_buffer // layout.lanes) if spec.shuffle_buffer else 0
        samples = shuffle(samples, buf, random.Random(stream_seed(self.seed, self.epoch, lane, "samples")))
        # resume: drop what was already delivered BEFORE decoding (raw bytes are cheap to skip)
        samples = itertools.islice(samples, self.skip * layout.chunk, None)
        return decoded(samples, spec.resolution, self.manifest.channels, spec.skip_corrupt)

    def _segment(self, shard: int, start: int, stop: int, canon: Canonicalizer) -> Iterator[dict[str, Any]]:
        url = self.urls[shard]
        # a segment that ends the shard reads it to its end, so the manifest's count is checked there
        expected = self.expected if stop == self.manifest.shards[shard].count else None
        yield from itertools.islice(tar_samples([url], self.spec.skip_corrupt, expected, canon, start), stop - start)
