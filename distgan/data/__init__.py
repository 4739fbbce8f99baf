"""Streaming data: WebDataset-format shards to batches, split explicitly by rank and worker."""
from distgan.data.pipeline import DataSpec, ShardStream, build_loader, normalize

__all__ = ["DataSpec", "ShardStream", "build_loader", "normalize"]
