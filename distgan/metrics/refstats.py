"""Real images for the metrics, and their reference statistics cached on disk.

Reference statistics are expensive (Inception on the CPU: ~9 images/s), so they
are computed once, by all ranks together, and cached under ``metrics.cache_dir``
(default ``~/.cache/distgan/refstats``) in a file whose name is a hash of what
produced them: the shard set (``Manifest.digest()``), the feature extractor and
its weights hash, the resolution and resize policy, and the sample count. A hit
is logged; writes are atomic, so a crashed run never leaves half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from distgan import dist
from distgan.data.pipeline import all_samples, decode, shard_urls, tar_samples
from distgan.log import get_logger
from distgan.metrics.frechet import FeatureStats, load_stats, save_stats
from distgan.shards.manifest import read_manifest

log = get_logger("metrics")


def default_cache_dir(cache_dir: str = "") -> Path:
    """``metrics.cache_dir`` or ``~/.cache/distgan/refstats``."""
    return Path(os.path.expanduser(cache_dir)) if cache_dir else Path.home() / ".cache" / "distgan" / "refstats"


def iter_real(shard_dir: str | Path, resolution: int, batch_size: int = 64, limit: int = 0,
              rank: int = 0, world: int = 1) -> Iterator[dict[str, Any]]:
    """This rank's share of the first ``limit`` (0 = all) real samples, in manifest order, batched.

    Sample i belongs to rank i % world, so the union over ranks is the same set
    whatever the world size. Batches hold ``index`` (global sample numbers),
    ``image`` uint8 NCHW at ``resolution``, and ``label`` / ``attrs`` when present.
    """
    manifest = read_manifest(shard_dir)
    buf: list[dict[str, Any]] = []
    for i, raw in enumerate(all_samples(shard_dir, manifest)):
        if limit and i >= limit:
            break
        if i % world != rank:
            continue  # skip before decoding: the PNG decode is the costly part
        s = decode(raw, resolution, manifest.channels)
        s["index"] = i
        buf.append(s)
        if len(buf) == batch_size:
            yield _collate(buf)
            buf = []
    if buf:
        yield _collate(buf)


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"index": np.array([s["index"] for s in samples], np.int64),
                           "image": torch.stack([s["image"] for s in samples])}
    if "label" in samples[0]:
        out["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.long)
    if "attrs" in samples[0]:
        out["attrs"] = torch.stack([s["attrs"] for s in samples])
    return out


def read_real(shard_dir: str | Path, resolution: int, limit: int = 0) -> dict[str, Any]:
    """All (or the first ``limit``) real samples of a shard set in memory, one process."""
    batches = list(iter_real(shard_dir, resolution, batch_size=1024, limit=limit))
    if not batches:
        raise ValueError(f"shard set '{shard_dir}' yielded no samples")
    return {k: (np.concatenate([b[k] for b in batches]) if k == "index" else torch.cat([b[k] for b in batches]))
            for k in batches[0]}


def cache_key(manifest_digest: str, extractor: str, weights_sha256: str, resolution: int,
              resize: str, num: int) -> str:
    """Name stem of a cached statistics file: readable prefix + hash of every input."""
    parts = {"manifest": manifest_digest, "extractor": extractor, "weights": weights_sha256,
             "resolution": resolution, "resize": resize, "num": num}
    h = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{extractor}-{manifest_digest}-r{resolution}-n{num or 'all'}-{h}"


@torch.no_grad()
def compute_real_stats(shard_dir: str | Path, resolution: int, embed: Callable[[torch.Tensor], torch.Tensor],
                       dim: int, limit: int = 0, keep: bool = False, batch_size: int = 64) -> FeatureStats:
    """Embed this rank's share of the real images; all ranks sum their statistics."""
    rank, world = dist.rank_world()
    stats = FeatureStats(dim, keep=keep)
    for batch in iter_real(shard_dir, resolution, batch_size, limit, rank, world):
        stats.add(embed(batch["image"]), index=batch["index"])
    return stats.all_reduce()


def reference_stats(shard_dir: str | Path, resolution: int, embed: Callable[[torch.Tensor], torch.Tensor],
                    dim: int, extractor: str, weights_sha256: str, resize: str, limit: int = 0,
                    keep: bool = False, cache_dir: str = "", batch_size: int = 64) -> dict[str, Any]:
    """``{"mu", "sigma", "count", "features"?, "path", "cache_hit"}`` for a shard set, cached on disk.

    Call on every rank together. A miss on any rank makes all ranks compute
    (each embeds 1/R of the images); rank 0 writes the file atomically.
    """
    manifest = read_manifest(shard_dir)
    key = cache_key(manifest.digest(), extractor, weights_sha256, resolution, resize, limit)
    path = default_cache_dir(cache_dir) / f"{key}.npz"
    data = None
    if path.is_file():
        try:
            data = load_stats(path)
            if keep and "features" not in data:
                data = None  # cached without features (FID only); KID needs them: recompute
        except (ValueError, OSError) as e:
            log.warning(f"reference statistics cache '{path}' is unreadable ({e}); recomputing")
            data = None
    if dist.all_true(data is not None):
        log.info(f"reference statistics: cache hit {path}")
        return {"mu": data["mu"], "sigma": data["sigma"], "count": int(data["count"]),
                "features": data.get("features"), "path": str(path), "cache_hit": True}
    stats = compute_real_stats(shard_dir, resolution, embed, dim, limit, keep, batch_size)
    extra: dict[str, Any] = {"count": stats.count, "extractor": extractor, "weights_sha256": weights_sha256,
                             "manifest_digest": manifest.digest(), "resolution": resolution, "resize": resize}
    feats = stats.features() if keep else None
    if feats is not None:
        extra["features"] = feats
    if dist.rank_world()[0] == 0:
        save_stats(path, stats.mu, stats.sigma, **extra)
        log.info(f"reference statistics: computed from {stats.count} real images, cached at {path}")
    return {"mu": stats.mu, "sigma": stats.sigma, "count": stats.count, "features": feats,
            "path": str(path), "cache_hit": False}


def shard_labels(shard_dir: str | Path, limit: int = 0) -> np.ndarray | None:
    """Class labels of the first ``limit`` (0 = all) samples in manifest order, or None for unlabelled shards.

    Reads only the small ``cls`` members (no image decoding), so it is cheap
    next to a cached feature file that lacks them.
    """
    manifest = read_manifest(shard_dir)
    if not manifest.num_classes:
        return None
    urls = shard_urls(shard_dir, manifest)
    labels = []
    for i, s in enumerate(tar_samples(urls, expected={u: x.count for u, x in zip(urls, manifest.shards)})):
        if limit and i >= limit:
            break
        if "cls" not in s:
            raise ValueError(f"shard set '{shard_dir}' lists classes but sample '{s['__key__']}' has no label")
        labels.append(int(s["cls"]))
    return np.asarray(labels, np.int64)
