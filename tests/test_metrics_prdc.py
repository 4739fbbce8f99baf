"""Improved precision/recall and intra-class FID against values worked out by hand on tiny feature sets."""
from __future__ import annotations

import numpy as np
import pytest

from distgan.metrics.intra_fid import intra_fid
from distgan.metrics.precision_recall import knn_radii, precision_recall

SQUARE = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)


def test_knn_radius_is_the_third_neighbour_excluding_the_point_itself():
    # each corner of the unit square: neighbours at 1, 1, sqrt(2)
    import torch

    np.testing.assert_allclose(knn_radii(torch.as_tensor(SQUARE)).numpy(), np.full(4, np.sqrt(2)))


def test_precision_and_recall_by_hand():
    """Real = unit square corners (radius sqrt 2 each). Generated: (.5,.5) and (2,1) lie within sqrt 2 of a
    corner, (3,3) (2.83 from (1,1)) and (2.5,0) (1.5 from (1,0)) do not: precision 2/4. The generated
    radii are 3.54, 2.24, 3.54, 3.04 (third-nearest generated point); (.5,.5) is .71 from every corner: recall 1."""
    fake = np.array([[0.5, 0.5], [2, 1], [3, 3], [2.5, 0]])
    p, r = precision_recall(SQUARE, fake)
    assert p == pytest.approx(0.5) and r == pytest.approx(1.0)


def test_recall_counts_real_points_the_generated_manifold_misses():
    """A tight generated cluster at the origin (radius .141) covers only the real (0, 0): recall 1/5;
    every generated point is within sqrt 2 of (0, 0): precision 1. Swapping the sets swaps the two."""
    real = np.vstack([SQUARE, [[10, 10]]])
    fake = np.array([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1]])
    assert precision_recall(real, fake) == pytest.approx((1.0, 0.2))
    assert precision_recall(fake, real) == pytest.approx((0.2, 1.0))


def test_blocking_does_not_change_the_result():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(37, 5)), rng.normal(0.3, 1.2, size=(29, 5))
    assert precision_recall(real, fake, block=4) == precision_recall(real, fake, block=1024)


def test_too_few_points_for_k_is_an_error():
    with pytest.raises(ValueError, match="more than 3 samples"):
        precision_recall(SQUARE[:3], SQUARE)


def test_intra_fid_by_hand():
    """1-d features, where FID = (m1 - m2)^2 + (s1 - s2)^2 with sample std. Class 0: real {0, 2}
    (mean 1, var 2) vs generated {1, 3} (mean 2, var 2): 1. Class 1: real {0, 2} vs {0, 4} (mean 2,
    var 8): 1 + (sqrt 2 - sqrt 8)^2 = 3. Mean 2."""
    real = np.array([[0.0], [2.0], [0.0], [2.0]])
    fake = np.array([[1.0], [0.0], [3.0], [4.0]])
    mean, per_class = intra_fid(real, np.array([0, 0, 1, 1]), fake, np.array([0, 1, 0, 1]))
    assert per_class == pytest.approx({0: 1.0, 1: 3.0})
    assert mean == pytest.approx(2.0)


def test_intra_fid_refuses_missing_or_foreign_classes():
    real, labels = np.zeros((4, 1)), np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 has 2 real and 1 generated"):
        intra_fid(real, labels, np.ones((3, 1)), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match=r"classes \[7\] that the real set lacks"):
        intra_fid(real, labels, np.ones((4, 1)), np.array([0, 0, 1, 7]))
