"""What every shard source and the writer share: the sample record, the options, the listing.

A source function ``fn(path, opts) -> SourceData`` (:data:`SourceFn`) lists its items
in a canonical (sorted) order; the writer permutes them with ``--seed``, loads and
encodes them in worker processes and groups them into shards. Items are either ready
:class:`Sample` records (array data sets) or picklable file records loaded by
``SourceData.load`` in the workers (image files). The sources themselves are looked up
by name in :mod:`distgan.shards.sources`.
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


def safe_key(*parts: str) -> str:
    """A WebDataset sample key from free text: no dots or slashes (they split key from extension)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_-]+", "-", p).strip("-") for p in parts if p)
