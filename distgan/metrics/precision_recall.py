"""Improved precision and recall (Kynkaanniemi, Karras, Laine, Lehtinen, Aila: "Improved Precision
and Recall Metric for Assessing Generative Models", NeurIPS 2019).

Each feature set approximates its manifold by the union of balls around its
points, each ball reaching the point's k-th nearest neighbour in the same set
(k = 3 in the paper). Then

- precision = fraction of generated samples inside the real manifold (quality);
- recall = fraction of real samples inside the generated manifold (coverage).

A point lies inside when its distance to some manifold point is <= that
point's radius. Distances are computed in float64 over row blocks, so two
10,000 x 2,048 sets need only a (block x 10,000) matrix at a time.
"""
from __future__ import annotations

import numpy as np
import torch

from distgan.metrics.protocol import Comparison, Result

K_NEIGHBOURS = 3


def _blocks(n: int, block: int):
    for lo in range(0, n, block):
        yield slice(lo, min(lo + block, n))


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``a`` and ``b`` (clamped at 0 before the root)."""
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0.0).sqrt_()


def knn_radii(feats: torch.Tensor, k: int = K_NEIGHBOURS, block: int = 1024) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (the row itself, at distance 0, is skipped)."""
    if len(feats) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set, got {len(feats)}")
    return torch.cat([_distances(feats[s], feats).kthvalue(k + 1, dim=1).values for s in _blocks(len(feats), block)])


def coverage(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, block: int = 1024) -> float:
    """Fraction of ``probes`` within ``radii[j]`` of some ``manifold[j]``."""
    inside = [(_distances(probes[s], manifold) <= radii[None, :]).any(1) for s in _blocks(len(probes), block)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K_NEIGHBOURS,
                     block: int = 1024) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real``, both (N, D) feature arrays."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"need (N, D) feature arrays with the same D, got {tuple(r.shape)} and {tuple(f.shape)}")
    precision = coverage(f, r, knn_radii(r, k, block), block)
    recall = coverage(r, f, knn_radii(f, k, block), block)
    return precision, recall


def precision_recall_records(c: Comparison) -> list[Result]:
    """``precision`` (the fakes inside the real manifold) and ``recall`` (the reals inside the fake one)."""
    p, r = precision_recall(c.real.features, c.fake.features)
    extra: dict = {"k": K_NEIGHBOURS}
    if c.roles:
        a, b = c.roles
        extra["manifold"] = f"precision: {a} inside {b}'s; recall: {b} inside {a}'s"
    return [Result("precision", p, dict(extra)), Result("recall", r, dict(extra))]
