"""distgan's Frechet distance vs the textbook scipy ``sqrtm`` recipe on 2048-d features.

Rows (same run, same inputs):
- ``frechet_distance seconds``: distgan (two symmetric eigen-decompositions) vs
  scipy.linalg.sqrtm of the non-symmetric product S1 S2 (pytorch-fid's recipe);
- ``|distgan - scipy|``: absolute difference of the two distances, against the
  distance itself as the reference (the ratio is the relative difference);
- the same with N < D (singular covariances), where sqrtm is least reliable.
Features are synthetic, shaped like Inception pool features (non-negative, correlated).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from distgan.extras import require
from distgan.metrics import frechet_distance

linalg = require("scipy.linalg", "bench", "the FID benchmark's scipy reference")


def _scipy_fd(mu1, s1, mu2, s2) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def _features(n: int, d: int, shift: float, rng: np.random.Generator) -> np.ndarray:
    mix = rng.normal(size=(64, d)) / 8
    return np.maximum(rng.normal(size=(n, 64)) @ mix + rng.normal(size=(n, d)) * 0.3 + shift, 0.0)


def _timed(fn, *args) -> tuple[float, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def run(quick: bool) -> list[dict]:
    d = 512 if quick else 2048
    rows = []
    rng = np.random.default_rng(0)
    for n, label in ((4 * d, "N=4D"), (d // 4, "N<D")):
        a, b = _features(n, d, 0.2, rng), _features(n, d, 0.25, rng)
        stats = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
        ours, t_ours = _timed(frechet_distance, *stats)
        ref, t_ref = _timed(_scipy_fd, *stats)
        rows.append({"case": f"frechet_distance seconds, D={d} {label}", "value": t_ours, "reference": t_ref,
                     "unit": "s"})
        rows.append({"case": f"|distgan - scipy sqrtm|, D={d} {label} (reference: the distance)",
                     "value": abs(ours - ref), "reference": abs(ref), "unit": "fid"})
    return rows


if __name__ == "__main__":
    for r in run(quick=False):
        print(r)
