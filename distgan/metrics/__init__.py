"""Metrics by name (:mod:`distgan.metrics.registry`): FID, a fast classifier metric, KID, precision/recall,
intra-class FID, FD-DINOv2.

    from distgan.metrics import frechet_distance, fid_from_features
    fid_from_features(feats_real, feats_fake)            # float64, robust, never complex

    python -m distgan.metrics stats --shards shards/mnist --out mnist.npz
    python -m distgan.metrics fid --run runs/debug --checkpoint best --num 10000
    python -m distgan.metrics classifier --run runs/debug

During training, ``metrics.every`` / ``metrics.names`` evaluate on all ranks
together, append to ``RUN_DIR/metrics.jsonl`` (one record per metric, with its
provenance) and keep the best checkpoint as ``checkpoints/best``.
"""
from distgan.metrics.frechet import FeatureStats, fid_from_features, frechet_distance, load_stats, save_stats
from distgan.metrics.kid import kid, polynomial_mmd2
from distgan.metrics.registry import REGISTRY, main_record

__all__ = ["FeatureStats", "REGISTRY", "fid_from_features", "frechet_distance", "kid", "load_stats",
           "main_record", "polynomial_mmd2", "save_stats"]
