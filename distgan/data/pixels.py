"""The data pipeline's view of pixel normalisation: :func:`normalize` / :func:`denormalize` from
:mod:`distgan.pixels`, which owns every uint8 <-> model-range mapping (and stays importable
without the pipeline)."""
from __future__ import annotations

from distgan.pixels import MODES, denormalize, normalize

__all__ = ["MODES", "denormalize", "normalize"]
