"""The Frechet distance between two Gaussians, and the statistics that feed it.

    from distgan.metrics import frechet_distance, fid_from_features
    d = fid_from_features(feats_real, feats_fake)          # (N, D) arrays -> float
    d = frechet_distance(mu1, sigma1, mu2, sigma2)

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

The trace term is computed as tr((sqrt(S1) S2 sqrt(S1))^(1/2)): that matrix is
symmetric positive semi-definite, so two symmetric eigen-decompositions give it
exactly, with no complex numbers and no failure when a covariance is singular
(rank-deficient features, or fewer samples than dimensions). scipy's ``sqrtm``
of the non-symmetric product S1 S2, the usual recipe, can return complex
results and needs an ``eps * I`` retry in exactly those cases.

:class:`FeatureStats` accumulates float64 sufficient statistics (sum, sum of
outer products, count) so several ranks can add theirs up and every rank ends
with the same mean and covariance as one process would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from distgan import dist
from distgan.fsutil import atomic_open
from distgan.metrics.protocol import Comparison, Result


def _clean(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off removed: those below the numerical-rank
    tolerance (max * D * eps, as numpy's matrix_rank) become 0. Without this, the ~1e-16
    noise eigenvalues of a singular covariance each add sqrt(1e-16) = 1e-8 to the trace."""
    tol = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _sym_psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(_clean(w))) @ v.T


def _check(name: str, mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{name}: mu must be (D,) and sigma (D, D); got mu {mu.shape}, sigma {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name}: mu/sigma contain NaN or inf")
    return mu, (sigma + sigma.T) / 2.0  # symmetrise: eigh reads one triangle only


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Robust to singular covariances; never returns a complex number. Tiny
    negative results from round-off (identical inputs) are clipped to 0.
    """
    mu1, s1 = _check("first statistics", mu1, sigma1)
    mu2, s2 = _check("second statistics", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    root1 = _sym_psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_covmean = float(np.sqrt(_clean(eig)).sum())
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(d, 0.0)


def frechet_record(name: str) -> Callable[[Comparison], list[Result]]:
    """A metric's compute function: the Frechet distance between the two sides' Gaussians, as record ``name``."""
    def compute(c: Comparison) -> list[Result]:
        return [Result(name, frechet_distance(c.real.mu, c.real.sigma, c.fake.mu, c.fake.sigma))]
    return compute


def mean_cov(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (rows are samples), float64; needs at least 2 rows."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need a (N >= 2, D) feature array, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature arrays."""
    return frechet_distance(*mean_cov(feats_a), *mean_cov(feats_b))


class FeatureStats:
    """float64 running sums of features: count, sum, sum of outer products.

    ``add`` per batch; ``all_reduce`` sums over ranks (every rank gets the
    total); ``mu``/``sigma`` then equal a single-process pass over the union.
    With ``keep=True`` the features themselves are kept (with their global
    sample index, so the gathered order does not depend on the rank count),
    which KID needs.
    """

    def __init__(self, dim: int, keep: bool = False):
        self.dim = dim
        self.count = 0
        self.total = np.zeros(dim, dtype=np.float64)
        self.outer = np.zeros((dim, dim), dtype=np.float64)
        self.keep = keep
        self._feats: list[np.ndarray] = []
        self._index: list[np.ndarray] = []

    def add(self, feats: torch.Tensor | np.ndarray, index: np.ndarray | None = None) -> None:
        f = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (B, {self.dim}), got {f.shape}")
        self.count += f.shape[0]
        self.total += f.sum(axis=0)
        self.outer += f.T @ f
        if self.keep:
            idx = np.arange(self.count - f.shape[0], self.count) if index is None else np.asarray(index)
            self._feats.append(f.astype(np.float32))
            self._index.append(idx.astype(np.int64))

    def all_reduce(self) -> "FeatureStats":
        """Sum the statistics of every rank in place (no-op with one process)."""
        if not dist.is_distributed():
            return self
        packed = np.concatenate([[float(self.count)], self.total, self.outer.ravel()])
        packed = dist.all_reduce_sum(packed)
        self.count = int(round(packed[0]))
        self.total = packed[1:1 + self.dim]
        self.outer = packed[1 + self.dim:].reshape(self.dim, self.dim)
        if self.keep:
            parts = dist.gather_objects((self._stack_index(), self.features_local()))
            self._index = [p[0] for p in parts]
            self._feats = [p[1] for p in parts]
        return self

    def _stack_index(self) -> np.ndarray:
        return np.concatenate(self._index) if self._index else np.zeros(0, np.int64)

    def features_local(self) -> np.ndarray:
        return np.concatenate(self._feats) if self._feats else np.zeros((0, self.dim), np.float32)

    def features(self) -> np.ndarray:
        """All kept features (after ``all_reduce``: every rank's), ordered by sample index."""
        if not self.keep:
            raise RuntimeError("FeatureStats was created with keep=False; features were not kept")
        order = np.argsort(self._stack_index(), kind="stable")
        return self.features_local()[order]

    @property
    def mu(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def sigma(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"covariance needs at least 2 samples, have {self.count}")
        mu = self.mu
        return (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **extra: np.ndarray | str | int) -> None:
    """Write a pytorch-fid compatible ``.npz`` (keys ``mu``, ``sigma``, plus ``extra``), atomically."""
    with atomic_open(Path(path), "wb") as f:
        np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
                 **{k: np.asarray(v) for k, v in extra.items()})


def load_stats(path: str | Path) -> dict[str, np.ndarray]:
    """Read a stats ``.npz`` (ours or pytorch-fid's); clear error when ``mu``/``sigma`` are missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statistics file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise ValueError(f"'{path}' is not a readable .npz statistics file: {e}") from None
    missing = [k for k in ("mu", "sigma") if k not in data]
    if missing:
        raise ValueError(f"statistics file '{path}' lacks {missing}; expected keys 'mu' and 'sigma' "
                         f"(pytorch-fid format), found {sorted(data)}")
    _check(str(path), data["mu"], data["sigma"])
    return data
