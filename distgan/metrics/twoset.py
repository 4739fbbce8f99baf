"""Metrics between any two image sets, each embedded once per feature network (``python -m distgan.metrics NAMES A B``).

    records = compare(["fid", "precision_recall"], "runs/X", "shards/fashion28_test", num=10000)
    records = compare("fd_dinov2", "samples/", "real/",
                      MetricsConfig(features={"dinov2": {"weights": "dinov2_vitl14.safetensors"}}))

A is the set under evaluation (e.g. generated samples), B the reference (e.g.
the real test images): precision is the fraction of A inside B's manifold,
recall the fraction of B inside A's, intra_fid compares A's class c with B's.
Frechet distances and KID are symmetric. The names are the two-set entries of
:mod:`distgan.metrics.registry`; all names on one feature network are computed
from ONE extraction per set. ``mc`` (a :class:`~distgan.config.MetricsConfig`)
carries the networks' settings (weights files, backend), batch size, cache
directory and KID subsets.

Caching: a shard directory's features go to the reference-statistics cache
(``mc.cache_dir``, default ``~/.cache/distgan/refstats``), shared with training
and keyed by the shard content, so the 10,000 test images are embedded once.
Other sets are cached only with ``features_cache=DIR`` (keyed by file contents,
or by checkpoint, ``num`` and seed for a run).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distgan.config import MetricsConfig
from distgan.log import get_logger
from distgan.metrics.frechet import load_stats, mean_cov, save_stats
from distgan.metrics.protocol import Comparison, Extractor, ExtractorContext, Side
from distgan.metrics.refstats import reference_stats, shard_labels
from distgan.metrics.registry import FEATURE_NETS, REGISTRY, Metric, needs, two_set_names
from distgan.metrics.sources import ImageSet, open_set

log = get_logger("metrics")


@dataclass
class SetFeatures:
    mu: np.ndarray
    sigma: np.ndarray
    count: int
    features: np.ndarray | None = None
    labels: np.ndarray | None = None
    cache: str | None = None
    cache_hit: bool = False


def parse_names(names: str | list[str]) -> list[str]:
    """``"fid,intra_fid"`` -> ["fid", "intra_fid"]; unknown or duplicate-free, with a clear error."""
    items = names.split(",") if isinstance(names, str) else list(names)
    known = two_set_names()
    out = []
    for n in (x.strip() for x in items):
        if n not in known:
            raise ValueError(f"unknown metric '{n}' for two image sets; available: {', '.join(known)} "
                             "(comma-join several: fid,intra_fid,precision_recall)")
        if n not in out:
            out.append(n)
    return out


def check_sets(metrics: list[Metric], sets: dict[str, ImageSet]) -> None:
    """Refuse, before any extraction, combinations that cannot work."""
    for side, s in sets.items():
        if s.kind == "stats":
            bad = [m.name for m in metrics if (m.fake_features if side == "A" else m.real_features)]
            if bad:
                raise ValueError(f"{side} '{s.spec}' holds only FID statistics (mu/sigma); {', '.join(bad)} "
                                 "need features: pass the images (folder, .npz, shards or run) instead")
        for m in metrics:
            labelled = s.labels is not None or (s.kind == "shards" and s.classes)
            if m.labels and not labelled:
                raise ValueError(f"{m.name} needs class labels, but {side} '{s.spec}' ({s.kind}) has none: use "
                                 "labelled shards, an .npz with 'labels', or a class-conditional run")
    a, b = sets["A"], sets["B"]
    for m in metrics:
        if m.labels and a.classes and b.classes and a.classes != b.classes:
            raise ValueError(f"{m.name} compares class c with class c, but A '{a.spec}' has classes {a.classes} "
                             f"and B '{b.spec}' has {b.classes}")


def _feature_cache_path(s: ImageSet, ex: Extractor, cache_dir: Path) -> Path:
    blob = json.dumps({"set": s.cache_key(), "extractor": ex.name, "weights": ex.sha256, "resize": ex.resize},
                      sort_keys=True).encode()
    return cache_dir / f"features-{s.kind}-{hashlib.sha256(blob).hexdigest()[:20]}.npz"


def _embed_all(side: str, s: ImageSet, ex: Extractor, batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    feats, labels, done, t0 = [], [], 0, time.perf_counter()
    for i, (images, y) in enumerate(s.batches(batch_size)):
        feats.append(ex.embed(images).numpy().astype(np.float32))
        if y is not None:
            labels.append(np.asarray(y, np.int64))
        done += len(images)
        if i % 10 == 9:
            rate = done / (time.perf_counter() - t0)
            log.info(f"{side}: {done}/{s.count} images embedded ({rate:.1f} img/s)")
    f = np.concatenate(feats) if feats else np.zeros((0, ex.dim), np.float32)
    return f, (np.concatenate(labels) if labels else None)


def features_of(side: str, s: ImageSet, ex: Extractor, need_features: bool, batch_size: int = 64,
                cache_dir: str = "", features_cache: str = "", need_labels: bool = False) -> SetFeatures:
    """mu/sigma (and features, labels when needed) of one set, from a cache when possible."""
    if s.kind == "stats":
        made_by = str(s.stats["extractor"]) if "extractor" in s.stats else ex.name
        if made_by != ex.name:
            raise ValueError(f"{side} '{s.spec}': statistics come from '{made_by}', not '{ex.name}'")
        if np.shape(s.stats["mu"]) != (ex.dim,):
            raise ValueError(f"{side} '{s.spec}': statistics of {np.shape(s.stats['mu'])[0]}-d features, but "
                             f"'{ex.name}' gives {ex.dim}-d ones")
        return SetFeatures(s.stats["mu"], s.stats["sigma"], s.count, cache=s.spec, cache_hit=True)
    if s.kind == "shards":
        res = int(s.info["resolution"])
        ref = reference_stats(s.info["path"], res, ex.embed, ex.dim, ex.name, ex.sha256, ex.resize,
                              keep=need_features, cache_dir=cache_dir, batch_size=batch_size)
        labels = shard_labels(s.info["path"]) if need_labels else None
        return SetFeatures(ref["mu"], ref["sigma"], int(ref["count"]), ref["features"], labels,
                           ref["path"], ref["cache_hit"])
    path = _feature_cache_path(s, ex, Path(features_cache).expanduser()) if features_cache else None
    if path is not None and path.is_file():
        data = load_stats(path)
        log.info(f"{side}: features from cache {path}")
        return SetFeatures(data["mu"], data["sigma"], int(data["count"]), data["features"],
                           data.get("labels", s.labels), str(path), True)
    feats, labels = _embed_all(side, s, ex, batch_size)
    labels = labels if labels is not None else s.labels
    if len(feats) < 2:
        raise ValueError(f"{side} '{s.spec}' has {len(feats)} image(s); the metrics need at least 2")
    mu, sigma = mean_cov(feats.astype(np.float64))
    if path is not None:
        extra: dict[str, Any] = {"features": feats, "count": len(feats), "extractor": ex.name,
                                 "weights_sha256": ex.sha256, "resize": ex.resize, "source": s.spec}
        if labels is not None:
            extra["labels"] = labels
        save_stats(path, mu, sigma, **extra)
        log.info(f"{side}: features cached at {path}")
    return SetFeatures(mu, sigma, len(feats), feats, labels, str(path) if path else None, False)


def _side(f: SetFeatures) -> Side:
    return Side(f.mu, f.sigma, f.count, f.features, f.labels)


def compare(names: str | list[str], a: str, b: str, mc: MetricsConfig | None = None, num: int = 0, seed: int = 0,
            checkpoint: str | int = "latest", ema: bool | None = None, device: str = "cpu",
            features_cache: str = "") -> list[dict[str, Any]]:
    """One record per metric record (``precision_recall`` gives ``precision`` and ``recall``); see the module
    docstring. ``mc``: network settings, batch size, cache directory, KID subsets (default: ``MetricsConfig()``)."""
    mc = mc or MetricsConfig()
    metrics = [REGISTRY[n] for n in parse_names(names)]
    t0 = time.perf_counter()
    sets = {"A": open_set(a, num, seed, checkpoint, ema, device), "B": open_set(b, num, seed, checkpoint, ema, device)}
    check_sets(metrics, sets)
    plan = needs(metrics, mc)
    extractors = {key: FEATURE_NETS[key].extractor(ExtractorContext(mc, device)) for key in plan}
    feats = {}
    for key, need in plan.items():
        ex = extractors[key]
        fa = features_of("A", sets["A"], ex, need.fake_features, mc.batch_size, mc.cache_dir, features_cache,
                         need.labels)
        fb = features_of("B", sets["B"], ex, need.real_features, mc.batch_size, mc.cache_dir, features_cache,
                         need.labels)
        feats[key] = fa, fb
    seconds = round(time.perf_counter() - t0, 2)

    def side(s: ImageSet, f: SetFeatures) -> dict[str, Any]:
        return {"spec": s.spec, "kind": s.kind, "count": f.count, "cache": f.cache, "cache_hit": f.cache_hit, **s.info}

    out: list[dict[str, Any]] = []
    for m in metrics:
        key = m.extractor_key(mc)
        ex, (fa, fb) = extractors[key], feats[key]
        comparison = Comparison(_side(fb), _side(fa), ex, mc, seed,
                                class_names=sets["B"].classes or sets["A"].classes, roles=("A", "B"))
        for r in m.compute(comparison):
            prov = {"metric": r.name, **ex.provenance, "a": side(sets["A"], fa), "b": side(sets["B"], fb),
                    "num_a": fa.count, "num_b": fb.count, "seed": seed, "seconds": seconds, **r.extra}
            out.append({"name": r.name, "value": float(r.value), "lower_is_better": m.lower_is_better(r.name),
                        "provenance": prov, "time": time.time()})
    return out
