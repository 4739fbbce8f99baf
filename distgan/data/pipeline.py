"""The streaming pipeline: shards -> node split -> worker split -> shuffle -> decode -> batch.

Every stage is a visible generator function, and the rank/world split is
explicit (never inferred from a global process group), so the same pipeline
serves one process, DDP ranks and Slurm tasks.

    loader = build_loader(shard_dir, DataSpec(resolution=32, batch_size=64), rank=0, world=1, seed=0)
    for images, labels in loader: ...   # images float [-1, 1] NCHW, labels long (or float attrs)

With ``resampled=True`` (the training default) each rank draws shards with
replacement from its own seeded stream, so every rank runs exactly the same
number of steps whatever the shard sizes (DDP never waits on a rank that ran out).
"""
from __future__ import annotations

import io
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distgan.shards.manifest import Manifest, ShardError, read_manifest


@dataclass
class DataSpec:
    resolution: int = 32
    batch_size: int = 64
    shuffle_buffer: int = 1000
    resampled: bool = True
    num_workers: int = 0
    normalize: str = "minmax"  # minmax -> [-1, 1]; zscore -> (x - mean) / std per channel
    skip_corrupt: bool = False


# ----------------------------------------------------------------------------- stages

def shard_urls(shard_dir: str | Path, manifest: Manifest) -> list[str]:
    return [str(Path(shard_dir) / s.name) for s in manifest.shards]


def resampled_shards(urls: list[str], seed: int) -> Iterator[str]:
    """Endless stream of shard urls drawn with replacement from a seeded RNG."""
    rng = random.Random(seed)
    while True:
        yield rng.choice(urls)


def split_by_rank(items: Iterable[Any], rank: int, world: int) -> Iterator[Any]:
    """Keep every ``world``-th item starting at ``rank`` (node/rank split)."""
    for i, item in enumerate(items):
        if i % world == rank:
            yield item


def split_by_worker(items: Iterable[Any]) -> Iterator[Any]:
    """Within a DataLoader worker, keep this worker's share of the items."""
    info = get_worker_info()
    if info is None:
        yield from items
    else:
        yield from split_by_rank(items, info.id, info.num_workers)


def tar_samples(urls: Iterable[str], skip_corrupt: bool = False,
                expected: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Group tar members into samples ``{"__key__": key, ext: bytes, "__url__": url}``.

    A shard that cannot be read, holds a sample without an image, or ends before
    the manifest's sample count is corrupt: ShardError naming it (or, with
    ``skip_corrupt``, a warning and the rest of the shard is skipped).
    """
    for url in urls:
        n = 0
        try:
            for sample in _read_tar(url):
                if "png" not in sample:
                    raise ShardError(f"sample '{sample['__key__']}' has no image")
                n += 1
                yield sample
            if expected and url in expected and n != expected[url]:
                raise ShardError(f"ended after {n} of {expected[url]} samples (truncated?)")
        except (tarfile.TarError, OSError, EOFError, ShardError) as e:
            if not skip_corrupt:
                raise ShardError(f"corrupt or unreadable shard '{url}': {e}") from e
            print(f"warning: skipping corrupt shard '{url}': {e}", flush=True)


def _read_tar(url: str) -> Iterator[dict[str, Any]]:
    if url.startswith("pipe:"):
        import subprocess

        proc = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE)
        stream = tarfile.open(fileobj=proc.stdout, mode="r|")
    else:
        stream = tarfile.open(url, mode="r|")
    current: dict[str, Any] | None = None
    with stream:
        for member in stream:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            data = stream.extractfile(member).read()
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


def _decode_image(data: bytes, resolution: int, channels: int, url: str, key: str) -> torch.Tensor:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:
        raise ShardError(f"shard '{url}': sample '{key}' holds an unreadable image: {e}") from e
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def batched(samples: Iterable[dict[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
    """Collate full batches (a partial last batch is dropped so every step is the same size)."""
    buf: list[dict[str, Any]] = []
    for s in samples:
        buf.append(s)
        if len(buf) == batch_size:
            yield collate(buf)
            buf = []


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


def normalize(images: torch.Tensor, mode: str, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 NCHW -> float; minmax maps to [-1, 1], zscore uses the manifest's channel stats."""
    x = images.float() / 255.0
    if mode == "zscore":
        m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, device=x.device).view(1, -1, 1, 1).clamp_min(1e-6)
        return (x - m) / s
    return x * 2.0 - 1.0


# ----------------------------------------------------------------------------- dataset

class ShardStream(IterableDataset):
    """Iterable of uint8 batches for one rank; workers split the rank's shard stream."""

    def __init__(self, shard_dir: str | Path, spec: DataSpec, rank: int, world: int, seed: int,
                 manifest: Manifest | None = None):
        self.shard_dir = Path(shard_dir)
        self.manifest = manifest or read_manifest(shard_dir)
        self.spec, self.rank, self.world, self.seed = spec, rank, world, seed
        self.urls = shard_urls(shard_dir, self.manifest)
        self.expected = {u: s.count for u, s in zip(self.urls, self.manifest.shards)}
        consumers = world * max(1, spec.num_workers)
        if not spec.resampled and len(self.urls) < consumers:
            raise ShardError(f"{shard_dir} has {len(self.urls)} shards but {world} ranks x "
                             f"{max(1, spec.num_workers)} workers = {consumers} consumers need at least "
                             f"{consumers}; rewrite with a smaller --shard-size (<= "
                             f"{max(1, self.manifest.num_samples // consumers)})")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid = info.id if info else 0
        # each (rank, worker) gets its own reproducible streams
        stream_seed = ((self.seed * 1000003) + self.rank * 1009 + wid) & 0xFFFFFFFF
        rng = random.Random(stream_seed)
        if self.spec.resampled:
            urls: Iterable[str] = resampled_shards(self.urls, stream_seed)
        else:
            urls = split_by_worker(split_by_rank(self.urls, self.rank, self.world))
        samples = tar_samples(urls, self.spec.skip_corrupt, self.expected)
        samples = shuffle(samples, self.spec.shuffle_buffer, rng)
        decoded = (decode(s, self.spec.resolution, self.manifest.channels) for s in samples)
        yield from batched(decoded, self.spec.batch_size)


def build_loader(shard_dir: str | Path, spec: DataSpec, rank: int = 0, world: int = 1,
                 seed: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader of uint8 batches for ``rank`` of ``world`` (infinite when resampled)."""
    ds = ShardStream(shard_dir, spec, rank, world, seed)
    return DataLoader(ds, batch_size=None, num_workers=spec.num_workers, pin_memory=pin_memory,
                      persistent_workers=spec.num_workers > 0)
