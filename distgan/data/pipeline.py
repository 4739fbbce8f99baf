"""The streaming pipeline: shards -> rank split -> worker split -> shuffle -> decode -> batch.

Every stage is a visible generator function, and the rank/world split is
explicit (never inferred from a global process group), so the same pipeline
serves one process, DDP ranks and Slurm tasks. :class:`ShardStream` runs the
stages for ONE epoch of one rank (inside each DataLoader worker);
:class:`distgan.data.loader.StreamLoader` strings epochs together, keeps the
stream position and is what :func:`build_loader` returns.

    loader = build_loader(shard_dir, DataSpec(resolution=32, batch_size=64), rank=0, world=1, seed=0)
    for batch in loader: ...   # batch["image"] uint8 NCHW, batch["label"] long, batch["key"] list

Shuffling is seeded from (seed, epoch, rank, worker); epoch plans (which
shards, how many batches) live in :mod:`distgan.data.plan`.
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

from distgan.data.plan import Layout, stream_seed
from distgan.data.tarstream import iter_members
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
    shuffle_buffer: int = 1000
    resampled: bool = True
    num_workers: int = 0
    normalize: str = "minmax"  # minmax -> [-1, 1]; zscore -> (x - mean) / std per channel
    skip_corrupt: bool = False
    epoch_samples: int = 0  # resampled: samples per epoch over all ranks (0 = the manifest's count)
    verify_checksums: bool = False  # sha256 of every shard at start-up
    shuffle_shards: bool = True  # exact mode: reshuffle the shard list every epoch
    drop_last: bool = True  # drop each worker's partial last batch (fixed batch size)


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
                canonical: Canonicalizer | None = None) -> Iterator[dict[str, Any]]:
    """Group tar members into samples ``{"__key__": key, "png": image bytes, "cls", "attr", "__url__": url}``.

    ``canonical`` (from the manifest, :meth:`Canonicalizer.for_manifest`)
    rewrites foreign WebDataset members (jpg/webp images, .json labels, class
    folders) into that layout. A shard that cannot be read, holds a sample
    without an image, or ends before the manifest's sample count is corrupt:
    ShardError naming it (or, with ``skip_corrupt``, a warning and the rest of
    the shard is skipped).
    """
    canon = canonical or _NATIVE
    native = canon.fmt.native  # distgan's own png samples pass through untouched (the hot path)
    for url in urls:
        n = 0
        try:
            for sample in _read_tar(url):
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


def _read_tar(url: str) -> Iterator[dict[str, Any]]:
    current: dict[str, Any] | None = None
    with open_url(url) as f:
        for name, data in iter_members(f):
            key, ext = split_name(name)
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            current[ext] = data
    if current is not None:
        yield current


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
    """One epoch of uint8 batches for ``rank``; DataLoader workers split the rank's shards.

    ``epoch`` selects the shuffles; ``skip``/``rotation`` (set by StreamLoader
    on resume) say how many batches each worker already delivered and which
    worker the DataLoader's round-robin must start with. Iterated directly
    (no DataLoader) it acts as a single worker.
    """

    def __init__(self, shard_dir: str | Path, spec: DataSpec, rank: int, world: int, seed: int,
                 manifest: Manifest | None = None, urls: list[str] | None = None, epoch: int = 0):
        if not 0 <= rank < world:
            raise ValueError(f"rank must lie in 0..{world - 1}, got {rank}")
        self.shard_dir = shard_dir
        self.manifest = manifest or read_manifest(shard_dir)
        self.spec, self.rank, self.world, self.seed = spec, rank, world, seed
        # urls[i] is None for a shard dropped at start-up (damaged, with data.skip_corrupt)
        self.urls = urls if urls is not None else shard_urls(shard_dir, self.manifest)
        self.expected = {u: s.count for u, s in zip(self.urls, self.manifest.shards) if u}
        self.epoch, self.skip, self.rotation = epoch, [], 0
        if not spec.resampled:
            check_enough_shards(sum(u is not None for u in self.urls), world, spec.num_workers, str(shard_dir),
                                self.manifest.num_samples)

    def layout(self, workers: int) -> Layout:
        counts = tuple(s.count if u else 0 for u, s in zip(self.urls, self.manifest.shards))
        return Layout(counts, self.world, workers, self.spec.batch_size, self.seed, self.spec.resampled,
                      self.spec.epoch_samples, self.spec.shuffle_shards, self.spec.drop_last)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers = info.num_workers if info else 1
        worker = (info.id + self.rotation) % workers if info else 0
        layout = self.layout(workers)
        todo = layout.worker_batches(self.epoch, self.rank)[worker]
        skip = self.skip[worker] if worker < len(self.skip) else 0
        spec = self.spec
        # one reproducible stream per (seed, epoch, rank, worker)
        rng = random.Random(stream_seed(self.seed, self.epoch, self.rank, worker, "samples"))
        live = [u for u in self.urls if u]
        if spec.resampled:
            shard_seed = stream_seed(self.seed, self.epoch, self.rank, worker, "shards")
            urls: Iterable[str] = resampled_shards(live, shard_seed)
        else:
            urls = [self.urls[i] for i in layout.worker_shards(self.epoch, self.rank, worker) if self.urls[i]]
        samples: Iterator[dict[str, Any]] = tar_samples(urls, spec.skip_corrupt, self.expected,
                                                        Canonicalizer.for_manifest(self.manifest))
        samples = shuffle(samples, spec.shuffle_buffer, rng)
        # resume: drop what was already delivered BEFORE decoding (raw bytes are cheap to skip)
        samples = itertools.islice(samples, skip * spec.batch_size, None)
        images = decoded(samples, spec.resolution, self.manifest.channels, spec.skip_corrupt)
        yield from itertools.islice(batched(images, spec.batch_size, spec.drop_last), max(0, todo - skip))


def check_enough_shards(num_shards: int, world: int, num_workers: int, where: str, num_samples: int) -> None:
    """Exact mode needs a shard for every consumer: refuse at start-up instead of idling a worker."""
    consumers = world * max(1, num_workers)
    if num_shards < consumers:
        per = max(1, num_samples // consumers)
        raise ShardError(f"{where} has {num_shards} shards, but {world} ranks x {max(1, num_workers)} workers "
                         f"= {consumers} consumers need at least {consumers} shards (a multiple of {consumers} "
                         f"for exactly-once epochs). Rewrite with --shard-size {per} or less, use fewer "
                         "data.num_workers, or set data.resampled=true")
