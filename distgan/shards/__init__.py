"""Write WebDataset shards from data sources, index shards written elsewhere, check them
(``python -m distgan.shards``)."""
from distgan.shards.index import index_shards
from distgan.shards.manifest import Manifest, ShardError, read_manifest, verify
from distgan.shards.write import write_shards

__all__ = ["Manifest", "ShardError", "index_shards", "read_manifest", "verify", "write_shards"]
