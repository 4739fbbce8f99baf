"""Metrics between any two image sets, each embedded once (``python -m distgan.metrics NAMES A B``).

    records = compare(["fid", "precision_recall"], "runs/X", "shards/fashion28_test", num=10000)

A is the set under evaluation (e.g. generated samples), B the reference (e.g.
the real test images): precision is the fraction of A inside B's manifold,
recall the fraction of B inside A's, intra_fid compares A's class c with B's.
FID and KID are symmetric. Every name is computed from ONE feature extraction
per set.

Caching: a shard directory's features go to the reference-statistics cache
(``--cache-dir``, default ``~/.cache/distgan/refstats``), shared with training
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

from distgan.log import get_logger
from distgan.metrics.evaluate import Extractor, inception_extractor
from distgan.metrics.frechet import frechet_distance, load_stats, mean_cov, save_stats
from distgan.metrics.intra_fid import intra_fid
from distgan.metrics.kid import kid
from distgan.metrics.precision_recall import K_NEIGHBOURS, precision_recall
from distgan.metrics.refstats import reference_stats, shard_labels
from distgan.metrics.registry import lower_is_better
from distgan.metrics.sources import ImageSet, open_set

log = get_logger("metrics")

TWO_SET_METRICS = ("fid", "kid", "precision_recall", "intra_fid")
NEEDS_FEATURES = ("kid", "precision_recall", "intra_fid")


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
    out = []
    for n in (x.strip() for x in items):
        if n not in TWO_SET_METRICS:
            raise ValueError(f"unknown metric '{n}' for two image sets; available: {', '.join(TWO_SET_METRICS)} "
                             "(comma-join several: fid,intra_fid,precision_recall)")
        if n not in out:
            out.append(n)
    return out


def check_sets(names: list[str], sets: dict[str, ImageSet]) -> None:
    """Refuse, before any extraction, combinations that cannot work."""
    for side, s in sets.items():
        if s.kind == "stats":
            bad = [n for n in names if n in NEEDS_FEATURES]
            if bad:
                raise ValueError(f"{side} '{s.spec}' holds only FID statistics (mu/sigma); {', '.join(bad)} "
                                 "need features: pass the images (folder, .npz, shards or run) instead")
        if "intra_fid" in names:
            labelled = s.labels is not None or (s.kind == "shards" and s.classes)
            if not labelled:
                raise ValueError(f"intra_fid needs class labels, but {side} '{s.spec}' ({s.kind}) has none: use "
                                 "labelled shards, an .npz with 'labels', or a class-conditional run")
    a, b = sets["A"], sets["B"]
    if "intra_fid" in names and a.classes and b.classes and a.classes != b.classes:
        raise ValueError(f"intra_fid compares class c with class c, but A '{a.spec}' has classes {a.classes} "
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
                cache_dir: str = "", features_cache: str = "") -> SetFeatures:
    """mu/sigma (and features, labels when needed) of one set, from a cache when possible."""
    if s.kind == "stats":
        made_by = str(s.stats["extractor"]) if "extractor" in s.stats else ex.name
        if made_by != ex.name:
            raise ValueError(f"{side} '{s.spec}': statistics come from '{made_by}', not '{ex.name}'")
        return SetFeatures(s.stats["mu"], s.stats["sigma"], s.count, cache=s.spec, cache_hit=True)
    if s.kind == "shards":
        res = int(s.info["resolution"])
        ref = reference_stats(s.info["path"], res, ex.embed, ex.dim, ex.name, ex.sha256, ex.resize,
                              keep=need_features, cache_dir=cache_dir, batch_size=batch_size)
        labels = shard_labels(s.info["path"]) if need_features else None
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


def compare(names: str | list[str], a: str, b: str, num: int = 0, seed: int = 0, checkpoint: str | int = "latest",
            ema: bool | None = None, batch_size: int = 64, cache_dir: str = "", features_cache: str = "",
            kid_subsets: int = 100, kid_subset_size: int = 1000, extractor: Extractor | None = None,
            weights: str = "", weights_sha256: str = "", device: str = "cpu",
            backend: str = "auto") -> list[dict[str, Any]]:
    """One record per metric (``precision_recall`` gives ``precision`` and ``recall``); see the module docstring."""
    names = parse_names(names)
    t0 = time.perf_counter()
    sets = {"A": open_set(a, num, seed, checkpoint, ema, device), "B": open_set(b, num, seed, checkpoint, ema, device)}
    check_sets(names, sets)
    ex = extractor or inception_extractor(weights, weights_sha256, device, backend)
    need = any(n in NEEDS_FEATURES for n in names)
    fa, fb = (features_of(side, s, ex, need, batch_size, cache_dir, features_cache) for side, s in sets.items())
    seconds = round(time.perf_counter() - t0, 2)
    out: list[dict[str, Any]] = []

    def record(name: str, value: float, **extra: Any) -> None:
        def side(s: ImageSet, f: SetFeatures) -> dict[str, Any]:
            return {"spec": s.spec, "kind": s.kind, "count": f.count, "cache": f.cache, "cache_hit": f.cache_hit,
                    **s.info}

        prov = {"metric": name, "weights_sha256": ex.sha256, "feature_extractor": ex.name, "resize": ex.resize,
                "a": side(sets["A"], fa), "b": side(sets["B"], fb), "num_a": fa.count, "num_b": fb.count,
                "seed": seed, "seconds": seconds, **ex.extra, **extra}
        out.append({"name": name, "value": float(value), "lower_is_better": lower_is_better(name),
                    "provenance": prov, "time": time.time()})

    for n in names:
        if n == "fid":
            record("fid", frechet_distance(fa.mu, fa.sigma, fb.mu, fb.sigma))
        elif n == "kid":
            mean, std = kid(fb.features, fa.features, kid_subsets, kid_subset_size, seed=seed)
            record("kid", mean, kid_std=std, kid_subsets=kid_subsets,
                   kid_subset_size=min(kid_subset_size, fa.count, fb.count))
        elif n == "precision_recall":
            p, r = precision_recall(fb.features, fa.features)
            record("precision", p, k=K_NEIGHBOURS, manifold="precision: A inside B's; recall: B inside A's")
            record("recall", r, k=K_NEIGHBOURS, manifold="precision: A inside B's; recall: B inside A's")
        elif n == "intra_fid":
            mean, per_class = intra_fid(fb.features, fb.labels, fa.features, fa.labels)
            names_b = sets["B"].classes or sets["A"].classes
            per = {(names_b[c] if c < len(names_b) else str(c)): v for c, v in per_class.items()}
            record("intra_fid", mean, per_class=per, num_classes=len(per_class))
    return out
