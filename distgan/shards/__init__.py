"""Write WebDataset shards from data sources and check them (``python -m distgan.shards``)."""
from distgan.shards.manifest import Manifest, ShardError, read_manifest, verify
from distgan.shards.write import write_shards

__all__ = ["Manifest", "ShardError", "read_manifest", "verify", "write_shards"]
