"""Write samples into WebDataset tar shards, atomically, and finish with a manifest.

Each sample is one tar member group sharing a key: ``KEY.png`` (the image),
``KEY.cls`` (class index as text, when labelled), ``KEY.attr`` (0/1 attribute
string, when the set has attributes) and, for paired data, ``KEY.src.png``.
Shards are written to a temp name and renamed when complete, so a crash never
leaves a half shard under a real name.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from distgan.fsutil import sha256_file
from distgan.shards.manifest import Manifest, ShardInfo, write_manifest


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a uint8 HxW or HxWxC image."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def pixel_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sums and sums of squares of an image in [0, 1] units, and its pixel count."""
    x = image.reshape(-1, image.shape[-1] if image.ndim == 3 else 1).astype(np.float64) / 255.0
    return x.sum(0), (x * x).sum(0), x.shape[0]


class ShardWriter:
    """Collects encoded samples into shards of ``shard_size`` samples under ``out_dir``."""

    def __init__(self, out_dir: str | Path, shard_size: int, prefix: str = "shard"):
        if shard_size < 1:
            raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.prefix = prefix
        self.shards: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._count = 0
        # running per-channel sums for mean/std in [0, 1] pixel units
        self._sum: np.ndarray | None = None
        self._sq: np.ndarray | None = None
        self._pixels = 0

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tmp = self.out_dir / f".{name}.tmp{os.getpid()}"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._count = 0

    def _close_shard(self) -> None:
        assert self._tar is not None and self._tmp is not None
        self._tar.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        final = self.out_dir / self._tmp.name[1:].split(".tmp")[0]
        os.replace(self._tmp, final)
        self.shards.append(ShardInfo(final.name, self._count, sha256_file(final), final.stat().st_size))
        self._tar, self._tmp = None, None

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0  # deterministic bytes for the same input
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def add_encoded(self, key: str, files: dict[str, bytes], image: np.ndarray | None = None,
                    stats: tuple[np.ndarray, np.ndarray, int] | None = None) -> None:
        """Add one sample given its encoded members (extension -> bytes).

        Pixel statistics come from ``image`` or, when encoding ran in another
        process, from its precomputed ``stats`` = (channel sums, sums of squares, pixels).
        """
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} may not contain '.' or '/' (they split key from extension)")
        if self._tar is None:
            self._open()
        for ext, data in files.items():
            self._member(f"{key}.{ext}", data)
        if image is not None:
            stats = pixel_stats(image)
        if stats is not None:
            self._add_stats(*stats)
        self._count += 1
        if self._count >= self.shard_size:
            self._close_shard()

    def flush(self) -> None:
        """End the current shard now (the next sample starts a new one)."""
        if self._tar is not None and self._count:
            self._close_shard()

    def add(self, key: str, image: np.ndarray, label: int | None = None,
            attrs: np.ndarray | None = None, src: np.ndarray | None = None) -> None:
        """Encode and add one sample (uint8 image HxWxC, optional class, attributes, paired source)."""
        files = {"png": encode_png(image)}
        if label is not None:
            files["cls"] = str(int(label)).encode()
        if attrs is not None:
            files["attr"] = "".join("1" if a else "0" for a in attrs).encode()
        if src is not None:
            files["src.png"] = encode_png(src)
        self.add_encoded(key, files, image)

    def _add_stats(self, total: np.ndarray, squares: np.ndarray, pixels: int) -> None:
        if self._sum is None:
            self._sum, self._sq = np.zeros(len(total)), np.zeros(len(total))
        self._sum += total
        self._sq += squares
        self._pixels += pixels

    def finish(self, **manifest_fields) -> Manifest:
        """Close the last shard and write ``manifest.json``; returns the manifest."""
        if self._tar is not None and self._count:
            self._close_shard()
        elif self._tar is not None:
            self._tar.close()
            self._tmp.unlink()
        mean = (self._sum / self._pixels) if self._pixels else np.zeros(0)
        std = np.sqrt(np.maximum(self._sq / self._pixels - mean**2, 0)) if self._pixels else np.zeros(0)
        m = Manifest(num_samples=sum(s.count for s in self.shards), shards=self.shards,
                     mean=[float(v) for v in mean], std=[float(v) for v in std], **manifest_fields)
        write_manifest(self.out_dir, m)
        return m
