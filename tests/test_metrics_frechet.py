"""The Frechet distance, KID and feature statistics against straightforward references."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from distgan.metrics import FeatureStats, fid_from_features, frechet_distance, kid, load_stats, save_stats
from distgan.metrics.kid import polynomial_mmd2


def scipy_reference(mu1, s1, mu2, s2) -> float:
    """The textbook recipe (pytorch-fid style): sqrtm of the non-symmetric product, real part."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def stats(f):
    return f.mean(0), np.cov(f, rowvar=False)


@pytest.mark.parametrize("n,d", [(500, 16), (300, 64), (2000, 128)])
def test_matches_scipy_sqrtm_on_random_features(n, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.2
    ours = frechet_distance(*stats(a), *stats(b))
    ref = scipy_reference(*stats(a), *stats(b))
    assert isinstance(ours, float)
    assert ours == pytest.approx(ref, rel=1e-8, abs=1e-8)
    assert fid_from_features(a, b) == pytest.approx(ours, rel=1e-12)


@pytest.mark.parametrize("n,d", [(20, 64), (50, 200)])
def test_matches_scipy_when_covariances_are_singular(n, d):
    """N < D: both covariances have rank N-1; the textbook sqrtm still gets the real part right."""
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) * 1.5 + 0.1
    m1, s1 = stats(a)
    m2, s2 = stats(b)
    assert np.linalg.matrix_rank(s1) == n - 1
    ours = frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(scipy_reference(m1, s1, m2, s2), rel=1e-6)


def test_rank_deficient_low_dimensional_subspace():
    """Features living in a 5-d subspace of 40-d: compare with the exact answer in the subspace."""
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(40, 5)))[0]
    a = rng.normal(size=(400, 5)) @ basis.T
    b = (rng.normal(size=(400, 5)) * 2 + 1) @ basis.T
    full = frechet_distance(*stats(a), *stats(b))
    sub = scipy_reference(*stats(a @ basis), *stats(b @ basis))  # same distance, full-rank 5-d problem
    assert full == pytest.approx(sub, rel=1e-8)
    assert full == pytest.approx(scipy_reference(*stats(a), *stats(b)), rel=1e-5)


def test_identical_and_one_dimensional_closed_form():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(100, 10))
    d = frechet_distance(*stats(f), *stats(f))
    assert isinstance(d, float) and 0.0 <= d < 1e-9
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # a zero covariance is fine (point mass)
    assert frechet_distance(np.zeros(3), np.zeros((3, 3)), np.ones(3), np.eye(3)) == pytest.approx(3.0 + 3.0)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma \(D, D\)"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan]), np.eye(1), np.zeros(1), np.eye(1))
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


def test_feature_stats_equal_numpy_and_merge():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(257, 12)) + 3.0
    st = FeatureStats(12, keep=True)
    for chunk in np.array_split(f, 5):
        st.add(chunk)
    assert st.count == 257
    np.testing.assert_allclose(st.mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.sigma, np.cov(f, rowvar=False), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(st.features(), f.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        st.add(np.zeros((2, 3)))


def test_stats_npz_roundtrip_and_errors(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    save_stats(tmp_path / "s.npz", mu, sigma, count=7)
    d = load_stats(tmp_path / "s.npz")
    np.testing.assert_array_equal(d["mu"], mu)
    assert int(d["count"]) == 7
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ValueError, match="lacks \\['mu', 'sigma'\\]"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_stats(tmp_path / "missing.npz")


def test_kid_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    # straightforward double loop over pairs
    k = lambda a, b: (a @ b / 8 + 1) ** 3  # noqa: E731
    m = 60
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    same, _ = kid(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), num_subsets=20, subset_size=100)
    far, _ = kid(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 0.05 < far
