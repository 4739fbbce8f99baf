"""Streaming data: WebDataset-format shards to batches, split explicitly by rank and worker.

``build_loader`` returns a :class:`StreamLoader` (epochs, equal steps on every
rank, resumable position); ``normalize``/``denormalize`` map uint8 images to
model inputs and back.
"""
from distgan.data.loader import StreamLoader, build_loader
from distgan.data.pipeline import DataSpec, ShardStream
from distgan.pixels import denormalize, normalize

__all__ = ["DataSpec", "ShardStream", "StreamLoader", "build_loader", "denormalize", "normalize"]
