"""Evaluate a generator: real reference statistics (cached), generated features, records.

    ev = Evaluator(cfg.metrics, shard_dir=cfg.data.shards, resolution=cfg.data.resolution,
                   cond=conditioning_for(cfg.model, cfg.data.shards, cfg.data.attributes), z_dim=cfg.model.z_dim)
    records = ev.evaluate(G, step=1000, ema=True)     # on every rank together

Every rank generates and embeds 1/R of the samples; statistics are summed over
ranks, so all ranks return the same records. Each record is one line of
``metrics.jsonl``: ``{step, name, value, lower_is_better, ema, provenance, time}``.
What each name computes, on which features, comes from :mod:`distgan.metrics.registry`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from distgan.config import MetricsConfig
from distgan.log import get_logger
from distgan.metrics.frechet import FeatureStats, load_stats
from distgan.metrics.generate import Conditioning, generate
from distgan.metrics.protocol import Comparison, Extractor, ExtractorContext, Side
from distgan.metrics.refstats import reference_stats, shard_labels
from distgan.metrics.registry import FEATURE_NETS, REGISTRY, Needs, check_names, needs
from distgan.pixels import to_minmax
from distgan.shards.manifest import read_manifest

__all__ = ["Evaluator", "Extractor", "pixel_policy"]

log = get_logger("metrics")


def pixel_policy(cfg: Any) -> dict[str, Any]:
    """Evaluator keyword arguments describing how a run's G output maps to pixels."""
    m = read_manifest(cfg.data.shards) if cfg.data.normalize == "zscore" else None
    return {"normalize": cfg.data.normalize, "mean": m.mean if m else None, "std": m.std if m else None}


class Evaluator:
    """Computes ``metrics.names`` for a generator against one real data set."""

    def __init__(self, mc: MetricsConfig, shard_dir: str | Path, resolution: int, cond: Conditioning,
                 z_dim: int, real: str = "", device: torch.device | str = "cpu", seed: int = 0,
                 normalize: str = "minmax", mean: list[float] | None = None, std: list[float] | None = None):
        self.mc, self.names = mc, check_names(list(mc.names))
        self.metrics = [REGISTRY[n] for n in self.names]
        self.pixels = (normalize, mean, std)  # how G's output maps back to pixels
        self.shard_dir, self.resolution, self.cond, self.z_dim = str(shard_dir), resolution, cond, z_dim
        self.real, self.device, self.seed = real, torch.device(device), seed
        self._extractors: dict[str, Extractor] = {}  # built on first use, kept across evaluations
        self._refs: dict[str, dict[str, Any]] = {}
        for m in self.metrics:
            if m.labels and cond.mode != "class":
                raise ValueError(f"metrics.names has {m.name}, which needs a class-conditional model (model.cond) "
                                 f"trained on shards with class labels; this run's conditioning is '{cond.mode}'")

    def extractor(self, key: str) -> Extractor:
        """The feature network ``key`` of :data:`~distgan.metrics.registry.FEATURE_NETS`, built on first use."""
        if key not in self._extractors:
            ctx = ExtractorContext(self.mc, self.device, self.shard_dir, self.resolution)
            self._extractors[key] = FEATURE_NETS[key].extractor(ctx)
        return self._extractors[key]

    # ---- real side
    def reference(self, key: str, need: Needs) -> dict[str, Any]:
        """Real statistics on feature network ``key`` (cached on disk), with features and labels when needed."""
        ex = self.extractor(key)
        uses = [m.name for m in self.metrics if m.extractor_key(self.mc) == key]
        if self.real.endswith(".npz"):
            data = load_stats(self.real)
            made_by = str(data["extractor"]) if "extractor" in data else "inception_v3_tf2015_pool3"
            if made_by != ex.name:
                raise ValueError(f"--real {self.real}: statistics come from '{made_by}', but this metric needs "
                                 f"'{ex.name}' features")
            if need.real_features and "features" not in data:
                need_them = ", ".join(m.name for m in self.metrics if m.real_features and m.name in uses)
                raise ValueError(f"--real {self.real}: the metrics {need_them} need the real images' features, but "
                                 "the file holds only mu/sigma; pass a shard directory instead")
            if need.labels and "labels" not in data:
                need_them = ", ".join(m.name for m in self.metrics if m.labels)
                raise ValueError(f"--real {self.real}: {need_them} needs real class labels; pass a shard directory")
            count = int(data["count"]) if "count" in data else -1
            return {"mu": data["mu"], "sigma": data["sigma"], "count": count, "features": data.get("features"),
                    "labels": data.get("labels"), "path": self.real, "cache_hit": True}
        shards = self.real or self.shard_dir
        ref = reference_stats(shards, self.resolution, ex.embed, ex.dim, ex.name, ex.sha256, ex.resize,
                              limit=self.mc.num_real, keep=need.real_features, cache_dir=self.mc.cache_dir)
        if need.labels:
            ref["labels"] = shard_labels(shards, self.mc.num_real)  # manifest order = the features' order
            if ref["labels"] is None:
                need_them = ", ".join(m.name for m in self.metrics if m.labels)
                raise ValueError(f"{need_them} needs class labels, but shard set '{shards}' has none")
        return ref

    def _stale(self, key: str, need: Needs) -> bool:
        ref = self._refs.get(key)
        return ref is None or (need.real_features and ref["features"] is None) or \
            (need.labels and ref.get("labels") is None)

    def _to_minmax(self, images: torch.Tensor) -> torch.Tensor:
        """G's output -> [-1, 1] (z-score runs generate per-channel standardised pixels)."""
        return to_minmax(images, *self.pixels)

    # ---- everything
    def evaluate(self, G: nn.Module, step: int = 0, ema: bool = False) -> list[dict[str, Any]]:
        """Records for every configured metric; call on all ranks together."""
        t0 = time.perf_counter()
        plan = needs(self.metrics, self.mc)
        for key, need in plan.items():  # real statistics: once per Evaluator (training evaluates repeatedly)
            if self._stale(key, need):
                self._refs[key] = self.reference(key, need)
        fakes = {key: FeatureStats(self.extractor(key).dim, keep=need.fake_features) for key, need in plan.items()}
        for index, images, _ in generate(G, self.mc.num_fake, self.z_dim, self.cond, self.mc.batch_size, self.seed):
            images = self._to_minmax(images)
            for key, st in fakes.items():
                st.add(self.extractor(key).embed(images), index=index)
        for st in fakes.values():
            st.all_reduce()
        conditions = self.cond.labels(np.arange(self.mc.num_fake))  # what generate() gave G, by sample index
        fake_labels = None if conditions is None else conditions.numpy()
        seconds = round(time.perf_counter() - t0, 2)
        out = []
        for m in self.metrics:
            key = m.extractor_key(self.mc)
            ex, ref, f = self.extractor(key), self._refs[key], fakes[key]
            feats = ref.get("features")
            real = Side(ref["mu"], ref["sigma"], len(feats) if feats is not None else int(ref["count"]), feats,
                        ref.get("labels"))
            fake = Side(f.mu, f.sigma, f.count, f.features() if f.keep else None, fake_labels)
            for r in m.compute(Comparison(real, fake, ex, self.mc, self.seed, conditioning=self.cond)):
                prov = {"metric": r.name, **ex.provenance,
                        "num_real": int(ref["count"]) if r.uses_real else 0, "num_fake": self.mc.num_fake,
                        "resolution": self.resolution, "ema": ema, "step": step,
                        "real": ref["path"] if r.uses_real else None, "seed": self.seed, "seconds": seconds,
                        **r.extra}
                out.append({"step": step, "name": r.name, "value": float(r.value),
                            "lower_is_better": m.lower_is_better(r.name), "ema": ema, "provenance": prov,
                            "time": time.time()})
        return out
