"""Sample sources for shard writing, looked up by name (``--source KIND``).

    data = get_source("imagefolder")("data/dogs", SourceOptions(resolution=64))

The table below names every built-in converter: :mod:`distgan.shards.folders`
(imagefolder, paired), :mod:`distgan.shards.celeba` and :mod:`distgan.shards.arrays`
(mnist-idx, fashion-mnist-idx, cifar10, mnist-embedded). A converter is a function
``fn(path, opts) -> SourceData`` over the records of :mod:`distgan.shards.records`;
code outside distgan adds its own with ``@register("name")``.

The records and image helpers are re-exported here, so ``from distgan.shards.sources
import SourceOptions, fit`` keeps working for callers that know this one module.
"""
from __future__ import annotations

from typing import Callable

from distgan.shards import arrays, celeba, folders
from distgan.shards.images import IMAGE_EXTENSIONS, fit, load_image, resize_square, set_channels
from distgan.shards.records import Sample, SourceData, SourceError, SourceFn, SourceOptions, safe_key

__all__ = ["IMAGE_EXTENSIONS", "SOURCES", "Sample", "SourceData", "SourceError", "SourceFn", "SourceOptions",
           "fit", "get_source", "load_image", "register", "resize_square", "safe_key", "set_channels"]

SOURCES: dict[str, SourceFn] = {
    "imagefolder": folders.imagefolder,
    "paired": folders.paired,
    "celeba": celeba.celeba,
    "mnist-idx": arrays.mnist_idx,
    "fashion-mnist-idx": arrays.fashion_mnist_idx,
    "cifar10": arrays.cifar10,
    "mnist-embedded": arrays.mnist_embedded,
}


def register(name: str) -> Callable[[SourceFn], SourceFn]:
    """Decorator adding a converter under ``name`` (for sources defined outside distgan)."""
    def deco(fn: SourceFn) -> SourceFn:
        SOURCES[name] = fn
        return fn
    return deco


def get_source(name: str) -> SourceFn:
    if name not in SOURCES:
        raise ValueError(f"unknown shard source '{name}'; available: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]
