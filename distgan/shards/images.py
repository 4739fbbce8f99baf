"""Image files as uint8 arrays, fitted to the shard options (channels, crop, size).

    img = fit(load_image("cat.jpg"), SourceOptions(resolution=64))   # uint8 64x64x3
"""
from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from distgan.shards.records import SourceError, SourceOptions

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def load_image(path: str) -> np.ndarray:
    """Read an image file as uint8 HxWxC (C = 1 for grayscale modes, 3 otherwise)."""
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
