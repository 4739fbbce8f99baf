"""Image sets for the two-set metrics CLI: what a path names, and its images in batches.

A set is given by one path, recognised in this order:

- a run directory (``config.yaml``) or a generator exported as ``.safetensors``
  (``python -m distgan.export --format safetensors``): ``num`` samples from its
  generator (:func:`distgan.api.generate`); a class-conditional one gets
  class-balanced labels (``num / classes`` per class, in class order);
- a shard directory (``manifest.json``): every sample at the shards' native size, with labels;
- any other directory: the images under it, recursively (png, jpg, jpeg, webp),
  in sorted path order; all must have one size;
- an ``.npz`` with ``images`` (N x H x W [x C] uint8) and optional ``labels`` (N,);
- an ``.npz`` with ``mu`` and ``sigma`` (pytorch-fid statistics): FID only.

Images come out as uint8 NCHW with 1 or 3 channels; grey and colour images
in one folder are all read as RGB (grey repeated), which is what the Inception
pipeline does with grey images anyway.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from distgan import api
from distgan.fsutil import sha256_file
from distgan.metrics.frechet import load_stats
from distgan.metrics.refstats import iter_real
from distgan.rundir import is_run_dir
from distgan.shards.manifest import read_manifest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class ImageSet:
    """One side of a two-set comparison; ``stats`` sets carry only ``mu``/``sigma``."""

    spec: str
    kind: str  # run | shards | folder | npz | stats
    count: int
    identity: dict[str, Any]  # what determines its features (the cache key)
    info: dict[str, Any] = field(default_factory=dict)  # provenance
    labels: np.ndarray | None = None  # known up front (npz, run); shards fill it while reading
    classes: list[str] = field(default_factory=list)
    stats: dict[str, np.ndarray] | None = None
    _batches: Any = None  # callable(batch_size) -> iterator of (uint8 NCHW, labels or None)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, np.ndarray | None]]:
        if self._batches is None:
            raise ValueError(f"'{self.spec}' holds statistics (mu/sigma), not images: it has no features")
        return self._batches(batch_size)

    def cache_key(self) -> str:
        blob = json.dumps(self.identity, sort_keys=True, default=str).encode()
        return f"{self.kind}-{hashlib.sha256(blob).hexdigest()[:20]}"


def open_set(spec: str, num: int = 0, seed: int = 0, checkpoint: str | int = "latest",
             ema: bool | None = None, device: str = "cpu") -> ImageSet:
    """Recognise ``spec`` (see the module docstring); clear ``ValueError``/``FileNotFoundError`` otherwise."""
    p = Path(spec).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"'{spec}' does not exist (expected an image folder, .npz, shard "
                                "directory or run directory)")
    if p.is_dir():
        if is_run_dir(p):
            return _run_set(spec, p, num, seed, checkpoint, ema, device)
        if (p / "manifest.json").is_file():
            return _shard_set(spec, p)
        return _folder_set(spec, p)
    if p.suffix.lower() == ".npz":
        return _npz_set(spec, p)
    if p.suffix.lower() == ".safetensors":
        return _run_set(spec, p, num, seed, checkpoint, ema, device)
    raise ValueError(f"'{spec}' is a file but not an .npz or .safetensors generator; expected an image folder, "
                     ".npz (images or mu/sigma), shard directory, run directory or exported generator")


# ----------------------------------------------------------------------------- folders

def _read_image(path: Path, rgb: bool) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if rgb else "L")
            arr = np.array(img, dtype=np.uint8)
    except Exception as e:
        raise ValueError(f"image '{path}' is unreadable: {e}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _folder_set(spec: str, root: Path) -> ImageSet:
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise ValueError(f"folder '{spec}' holds no images ({', '.join(IMAGE_SUFFIXES)}, searched recursively)")
    size, first, rgb, ident = None, None, False, hashlib.sha256()
    for f in files:
        try:
            with Image.open(f) as img:  # reads the header only
                s, mode = img.size, img.mode
        except Exception as e:
            raise ValueError(f"image '{f}' is unreadable: {e}") from None
        if size is None:
            size, first = s, f
        elif s != size:
            raise ValueError(f"folder '{spec}' mixes image sizes: '{first}' is {size[0]}x{size[1]}, "
                             f"'{f}' is {s[0]}x{s[1]}; resize them to one size first")
        rgb = rgb or mode not in GREY_MODES
        st = f.stat()
        ident.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())

    def batches(batch_size: int):
        for lo in range(0, len(files), batch_size):
            arr = np.stack([_read_image(f, rgb) for f in files[lo:lo + batch_size]])
            yield torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), None

    return ImageSet(spec, "folder", len(files), {"files": ident.hexdigest(), "rgb": rgb},
                    {"path": str(root), "size": f"{size[0]}x{size[1]}", "channels": 3 if rgb else 1},
                    _batches=batches)


# ----------------------------------------------------------------------------- npz

def _npz_set(spec: str, p: Path) -> ImageSet:
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            if "images" not in keys:
                if {"mu", "sigma"} <= keys:
                    return _stats_set(spec, p)
                raise ValueError(f"'{spec}' has no 'images' array (found {sorted(keys)}); expected 'images' "
                                 "(N x H x W x C uint8, optional 'labels') or pytorch-fid 'mu'/'sigma'")
            images = z["images"]
            labels = z["labels"] if "labels" in keys else None
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"'{spec}' is not a readable .npz: {e}") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"'{spec}': 'images' must be a non-empty N x H x W x C uint8 array with C = 1 or 3, "
                         f"got {images.dtype} {images.shape}")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images) or labels.dtype.kind not in "iu":
            raise ValueError(f"'{spec}': 'labels' must be {len(images)} integers, got {labels.dtype} {labels.shape}")

    def batches(batch_size: int):
        for lo in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[lo:lo + batch_size]))
            yield chunk.permute(0, 3, 1, 2).contiguous(), None if labels is None else labels[lo:lo + batch_size]

    h, w, c = images.shape[1:]
    return ImageSet(spec, "npz", len(images), {"sha256": sha256_file(p)},
                    {"path": str(p), "size": f"{w}x{h}", "channels": int(c)}, labels=labels, _batches=batches)


def _stats_set(spec: str, p: Path) -> ImageSet:
    data = load_stats(p)
    count = int(data["count"]) if "count" in data else -1
    return ImageSet(spec, "stats", count, {"path": str(p)}, {"path": str(p)}, stats=data)


# ----------------------------------------------------------------------------- shards and runs

def _shard_set(spec: str, p: Path) -> ImageSet:
    m = read_manifest(p)
    st = ImageSet(spec, "shards", m.num_samples,
                  {"manifest": m.digest()}, {"path": str(p), "size": f"{m.width}x{m.height}",
                                             "channels": m.channels, "manifest_digest": m.digest()},
                  classes=list(m.classes))
    st.info["resolution"] = m.height

    def batches(batch_size: int):
        for b in iter_real(p, m.height, batch_size):
            yield b["image"], (b["label"].numpy() if "label" in b else None)

    st._batches = batches
    return st


def _run_set(spec: str, p: Path, num: int, seed: int, checkpoint: str | int, ema: bool | None,
             device: str) -> ImageSet:
    if num < 1:
        what = "an exported generator" if p.is_file() else "a run directory"
        raise ValueError(f"'{spec}' is {what}: pass --num N, the number of samples to generate from it")
    G, info = api.load_generator(p, checkpoint, device=device, ema=ema)
    labels = None
    if info.condition == "classes":
        labels = api.blocks(num, info.num_classes).astype(np.int64)  # num / classes per class, in class order
    elif info.condition == "attributes":
        pass  # attribute runs: api.generate's default (all attributes 0); no class labels for intra_fid
    ckpt = p if p.is_file() else Path(info.checkpoint)  # an exported file is its own weights
    ident = {"checkpoint_sha256": sha256_file(ckpt), "num": num, "seed": seed, "ema": info.ema}
    prov = {"path": str(p), "checkpoint": str(ckpt), "step": info.step, "ema": info.ema, "seed": seed,
            "size": f"{info.resolution}x{info.resolution}", "channels": info.channels}

    def batches(batch_size: int):
        images = api.generate(G, info, num, seed=seed)  # one call: the labels follow api.blocks
        for lo in range(0, num, batch_size):
            chunk = torch.from_numpy(images[lo:lo + batch_size]).permute(0, 3, 1, 2).contiguous()
            yield chunk, None if labels is None else labels[lo:lo + batch_size]

    return ImageSet(spec, "run", num, ident, prov, labels=labels, classes=list(info.classes), _batches=batches)
