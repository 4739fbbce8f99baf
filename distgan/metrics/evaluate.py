"""Evaluate a generator: real reference statistics (cached), generated features, records.

    ev = Evaluator(cfg.metrics, shard_dir=cfg.data.shards, resolution=cfg.data.resolution,
                   cond=conditioning_for(cfg.model.cond, cfg.data.shards, cfg.data.attributes), z_dim=cfg.model.z_dim)
    records = ev.evaluate(G, step=1000, ema=True)     # on every rank together

Every rank generates and embeds 1/R of the samples; statistics are summed over
ranks, so all ranks return the same records. Each record is one line of
``metrics.jsonl``: ``{step, name, value, lower_is_better, ema, provenance, time}``.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from distgan import dist
from distgan.config import MetricsConfig
from distgan.log import get_logger
from distgan.metrics.classifier import classifier_for, correct
from distgan.metrics.frechet import FeatureStats, frechet_distance, load_stats
from distgan.metrics.generate import Conditioning, generate
from distgan.metrics.inception import RESIZE_POLICY, InceptionFeatures
from distgan.metrics.intra_fid import intra_fid
from distgan.metrics.kid import kid
from distgan.metrics.precision_recall import K_NEIGHBOURS, precision_recall
from distgan.metrics.refstats import reference_stats, shard_labels
from distgan.metrics.registry import REGISTRY, check_names, lower_is_better
from distgan.pixels import to_minmax
from distgan.shards.manifest import read_manifest

FEATURE_METRICS = ("kid", "precision_recall", "intra_fid")  # need every feature, not only mu/sigma

log = get_logger("metrics")


class Extractor:
    """A named feature network with its identity (for provenance and cache keys)."""

    def __init__(self, name: str, dim: int, embed: Any, sha256: str, resize: str, extra: dict[str, Any]):
        self.name, self.dim, self.embed, self.sha256, self.resize, self.extra = name, dim, embed, sha256, resize, extra


def inception_extractor(weights: str = "", pinned_sha256: str = "", device: Any = "cpu",
                        backend: str = "auto") -> Extractor:
    """The FID Inception on ``device`` as an :class:`Extractor`: uint8 or [-1, 1] images in, CPU features out."""
    net = InceptionFeatures(weights, pinned_sha256, backend).to(device)
    return Extractor(net.name, net.dim, lambda x: net(x.to(device)).cpu(), net.sha256, RESIZE_POLICY,
                     {"weights": net.info.description, "inception_backend": net.backend})


def _state_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
        self.pixels = (normalize, mean, std)  # how G's output maps back to pixels
        self.shard_dir, self.resolution, self.cond, self.z_dim = str(shard_dir), resolution, cond, z_dim
        self.real, self.device, self.seed = real, torch.device(device), seed
        self._extractors: dict[str, Extractor] = {}
        self._refs: dict[str, dict[str, Any]] = {}
        self.classifier = None
        if "intra_fid" in self.names and cond.mode != "class":
            raise ValueError("metrics.names has intra_fid, which needs a class-conditional model (model.cond) "
                             f"trained on shards with class labels; this run's conditioning is '{cond.mode}'")

    # ---- feature networks, built on first use
    def extractor(self, kind: str) -> Extractor:
        if kind == "kid":
            kind = self.mc.kid_features
        if kind not in self._extractors:
            if kind == "inception":
                self._extractors[kind] = inception_extractor(self.mc.inception_weights, self.mc.inception_sha256,
                                                             self.device, self.mc.inception_backend)
            elif kind == "classifier":
                clf = classifier_for(self.shard_dir, self.resolution, self.mc.cache_dir, self.mc.classifier_seed)
                self.classifier = clf.to(self.device)
                self._extractors[kind] = Extractor(
                    f"classifier_v{clf.key.split('-')[1][1:]}_penultimate", clf.dim, clf.features,
                    _state_sha256(clf.net), f"none (classifier at {self.resolution}x{self.resolution})",
                    {"classifier_heldout_accuracy": round(clf.heldout["accuracy"], 5),
                     "classifier_heldout_num": clf.heldout["num"], "classifier_key": clf.key,
                     **({"classifier_heldout_per_attribute": clf.heldout["per_attribute"]}
                        if "per_attribute" in clf.heldout else {})})
            else:
                raise ValueError(f"metrics.kid_features='{kind}': expected 'inception' or 'classifier'")
        return self._extractors[kind]

    def _kinds(self) -> dict[str, bool]:
        """Extractors needed -> whether their features must be kept (KID)."""
        kinds: dict[str, bool] = {}
        for n in self.names:
            kind = self.mc.kid_features if REGISTRY[n].extractor == "kid" else REGISTRY[n].extractor
            kinds[kind] = kinds.get(kind, False) or n in FEATURE_METRICS
        return kinds

    # ---- real side
    def reference(self, kind: str, keep: bool) -> dict[str, Any]:
        ex = self.extractor(kind)
        if self.real.endswith(".npz"):
            data = load_stats(self.real)
            made_by = str(data["extractor"]) if "extractor" in data else "inception_v3_tf2015_pool3"
            if made_by != ex.name:
                raise ValueError(f"--real {self.real}: statistics come from '{made_by}', but this metric needs "
                                 f"'{ex.name}' features")
            if keep and "features" not in data:
                need = ", ".join(n for n in self.names if n in FEATURE_METRICS)
                raise ValueError(f"--real {self.real}: the metrics {need} need the real images' features, but "
                                 "the file holds only "
                                 "mu/sigma; pass a shard directory instead")
            if "intra_fid" in self.names and "labels" not in data:
                raise ValueError(f"--real {self.real}: intra_fid needs real class labels; pass a shard directory")
            count = int(data["count"]) if "count" in data else -1
            return {"mu": data["mu"], "sigma": data["sigma"], "count": count, "features": data.get("features"),
                    "labels": data.get("labels"), "path": self.real, "cache_hit": True}
        shards = self.real or self.shard_dir
        ref = reference_stats(shards, self.resolution, ex.embed, ex.dim, ex.name, ex.sha256, ex.resize,
                              limit=self.mc.num_real, keep=keep, cache_dir=self.mc.cache_dir)
        if "intra_fid" in self.names and kind == "inception":
            ref["labels"] = shard_labels(shards, self.mc.num_real)  # manifest order = the features' order
            if ref["labels"] is None:
                raise ValueError(f"intra_fid needs class labels, but shard set '{shards}' has none")
        return ref

    def _to_minmax(self, images: torch.Tensor) -> torch.Tensor:
        """G's output -> [-1, 1] (z-score runs generate per-channel standardised pixels)."""
        return to_minmax(images, *self.pixels)

    # ---- everything
    def _acc_names(self) -> list[str]:
        """Attribute names scored for conditional accuracy (the run's chosen subset)."""
        cols = self.cond.attr_columns
        return list(self.classifier.names) if cols is None else [self.classifier.names[c] for c in cols]

    def evaluate(self, G: nn.Module, step: int = 0, ema: bool = False) -> list[dict[str, Any]]:
        """Records for every configured metric; call on all ranks together."""
        t0 = time.perf_counter()
        kinds = self._kinds()
        for k, keep in kinds.items():  # real statistics: once per Evaluator (training evaluates repeatedly)
            if k not in self._refs or (keep and self._refs[k]["features"] is None):
                self._refs[k] = self.reference(k, keep)
        refs = self._refs
        fakes = {k: FeatureStats(self.extractor(k).dim, keep=keep) for k, keep in kinds.items()}
        want_acc = "classifier" in self.names and self.cond.mode != "none"
        acc_sum, acc_n = None, 0
        for index, images, y in generate(G, self.mc.num_fake, self.z_dim, self.cond, self.mc.batch_size, self.seed):
            images = self._to_minmax(images)
            for k, st in fakes.items():
                st.add(self.extractor(k).embed(images), index=index)
            if want_acc:
                logits = self.classifier.logits(images)
                if self.classifier.mode == "attrs" and self.cond.attr_columns is not None:
                    logits = logits[:, self.cond.attr_columns]  # the classifier knows every manifest attribute
                ok = correct(logits, y, self.classifier.mode).sum(dim=0).double()
                acc_sum = ok if acc_sum is None else acc_sum + ok
                acc_n += len(index)
        for st in fakes.values():
            st.all_reduce()
        if want_acc:
            a = len(self._acc_names()) if self.classifier.mode == "attrs" else 1
            packed = dist.all_reduce_sum(np.concatenate(
                [[float(acc_n)], acc_sum.numpy().reshape(-1) if acc_sum is not None else np.zeros(a)]))
            acc_n, acc = int(packed[0]), packed[1:] / max(packed[0], 1)
        out = []
        seconds = round(time.perf_counter() - t0, 2)

        def record(name: str, value: float, kind: str | None, **extra: Any) -> None:
            ex = self.extractor(kind) if kind else self.extractor("classifier")
            ref = refs.get(kind) if kind else None
            prov = {"metric": name, "weights_sha256": ex.sha256, "feature_extractor": ex.name,
                    "num_real": int(ref["count"]) if ref else 0, "num_fake": self.mc.num_fake,
                    "resize": ex.resize, "resolution": self.resolution, "ema": ema, "step": step,
                    "real": (ref["path"] if ref else None), "seed": self.seed, "seconds": seconds,
                    **ex.extra, **extra}
            out.append({"step": step, "name": name, "value": float(value), "lower_is_better": lower_is_better(name),
                        "ema": ema, "provenance": prov, "time": time.time()})

        for n in self.names:
            if n == "fid":
                r, f = refs["inception"], fakes["inception"]
                record("fid", frechet_distance(r["mu"], r["sigma"], f.mu, f.sigma), "inception")
            elif n == "classifier":
                r, f = refs["classifier"], fakes["classifier"]
                record("classifier_fd", frechet_distance(r["mu"], r["sigma"], f.mu, f.sigma), "classifier")
                if want_acc:
                    mean_acc = float(acc.mean())
                    record("classifier_acc", mean_acc, None, num_scored=acc_n, conditioning=self.cond.mode)
                    if self.classifier.mode == "attrs":
                        for attr, v in zip(self._acc_names(), acc):
                            record(f"classifier_acc/{attr}", float(v), None, num_scored=acc_n, conditioning="attrs")
            elif n == "precision_recall":
                p, rc = precision_recall(refs["inception"]["features"], fakes["inception"].features())
                record("precision", p, "inception", k=K_NEIGHBOURS)
                record("recall", rc, "inception", k=K_NEIGHBOURS)
            elif n == "intra_fid":
                fake_labels = self.cond.labels(np.arange(self.mc.num_fake)).numpy()  # what generate() used
                mean, per_class = intra_fid(refs["inception"]["features"], refs["inception"]["labels"],
                                            fakes["inception"].features(), fake_labels)
                record("intra_fid", mean, "inception", per_class={str(c): v for c, v in per_class.items()})
            elif n == "kid":
                kind = self.mc.kid_features
                mean, std = kid(refs[kind]["features"], fakes[kind].features(), self.mc.kid_subsets,
                                self.mc.kid_subset_size, seed=self.seed)
                record("kid", mean, kind, kid_std=std, kid_subsets=self.mc.kid_subsets,
                       kid_subset_size=min(self.mc.kid_subset_size, self.mc.num_fake, len(refs[kind]["features"])))
        return out
