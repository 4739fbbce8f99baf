"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel.

    k(x, y) = (x . y / d + 1) ** 3

averaged over random subsets of equal size m drawn from each feature set (the
usual estimator; unbiased for every subset). Works on any features: Inception
pool features (the standard KID) or the small classifier's.
"""
from __future__ import annotations

import numpy as np

from distgan.metrics.protocol import Comparison, Result


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two equal-size samples (rows) with the cubic polynomial kernel."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise ValueError(f"need two (m >= 2, d) arrays of the same shape, got {x.shape} and {y.shape}")
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kid(feats_a: np.ndarray, feats_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``num_subsets`` subsets of ``min(subset_size, N_a, N_b)``.

    Subsets are drawn without replacement from a seeded generator, so a result
    is reproducible and does not depend on how many ranks computed the features.
    """
    a = np.asarray(feats_a)
    b = np.asarray(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) feature arrays with the same D, got {a.shape} and {b.shape}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    vals = [polynomial_mmd2(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
            for _ in range(num_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def kid_records(c: Comparison) -> list[Result]:
    """The ``kid`` record: mean over subsets, their std and sizes in the provenance."""
    mc = c.mc
    mean, std = kid(c.real.features, c.fake.features, mc.kid_subsets, mc.kid_subset_size, seed=c.seed)
    return [Result("kid", mean, {"kid_std": std, "kid_subsets": mc.kid_subsets,
                                 "kid_subset_size": min(mc.kid_subset_size, c.fake.count, c.real.count)})]
