"""What a metric entry works with: feature extractors, the two sides of a comparison, results.

A metric in :mod:`distgan.metrics.registry` names a feature extractor (built once
per evaluation from an :class:`ExtractorContext`, shared by every metric on the
same features) and a ``compute`` function from a :class:`Comparison` to a list of
:class:`Result`. The training evaluator and the two-set command both build the
comparison, call ``compute`` and turn each result into one ``metrics.jsonl``
record; so a metric never formats records or reads images itself.

    def compute(c: Comparison) -> list[Result]:
        return [Result("fd_dinov2", frechet_distance(c.real.mu, c.real.sigma, c.fake.mu, c.fake.sigma))]
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn as nn

from distgan.fsutil import sha256_file

if TYPE_CHECKING:  # annotations only: the config and the conditioning are handed in by the callers
    from distgan.config import MetricsConfig
    from distgan.metrics.generate import Conditioning


@dataclass
class ExtractorContext:
    """What an extractor factory may use to build its network."""

    mc: MetricsConfig
    device: torch.device | str = "cpu"
    shard_dir: str = ""  # training evaluator: the run's shard set (the classifier metric trains on it)
    resolution: int = 0  # training evaluator: the run's image side
    settings: Any = None  # the network's own settings (FeatureNet.settings), filled in by FeatureNet.extractor


class Extractor:
    """A feature network with its identity: ``embed`` maps uint8 or [-1, 1] NCHW images to CPU features.

    ``name``, ``sha256`` and ``resize`` key the cached reference statistics, so
    they must change whenever the features would; ``extra`` goes into every record
    computed on these features; ``model`` is whatever a metric needs beyond the
    features (the classifier metric scores its logits).
    """

    def __init__(self, name: str, dim: int, embed: Callable[[torch.Tensor], torch.Tensor], sha256: str,
                 resize: str, extra: dict[str, Any], model: Any = None):
        self.name, self.dim, self.embed, self.sha256, self.resize, self.extra = name, dim, embed, sha256, resize, extra
        self.model = model

    @property
    def provenance(self) -> dict[str, Any]:
        """The record fields that say which network made the features."""
        return {"weights_sha256": self.sha256, "feature_extractor": self.name, "resize": self.resize, **self.extra}


@dataclass
class Side:
    """One set of a comparison: mean and covariance always; features and labels when a metric asked for them.

    ``labels``: class labels (N,), or on the generated side of an attribute-
    conditioned run the (N, A) attribute rows it was conditioned on.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    features: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass
class Comparison:
    """The set under evaluation (``fake``: generated samples, or A) against the reference (``real``, or B)."""

    real: Side
    fake: Side
    extractor: Extractor
    mc: MetricsConfig
    seed: int = 0
    conditioning: Conditioning | None = None  # training evaluator: how G was conditioned
    class_names: list[str] | None = None  # two-set command: names for per-class values
    roles: tuple[str, str] | None = None  # two-set command: ("A", "B"), named in the provenance


@dataclass
class Result:
    """One record's name, value and extra provenance; ``uses_real=False`` for a score of the fakes alone."""

    name: str
    value: float
    extra: dict[str, Any] = field(default_factory=dict)
    uses_real: bool = True


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (for networks that exist only in memory, like the classifier)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
