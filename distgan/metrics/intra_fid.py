"""Intra-class FID (Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018).

The mean over classes c of FID(real images of class c, generated images
conditioned on c): it scores each class's samples against that class's data,
so a conditional model that draws good images of the wrong class scores badly
even when its overall FID is good.
"""
from __future__ import annotations

import numpy as np

from distgan.metrics.frechet import fid_from_features
from distgan.metrics.protocol import Comparison, Result


def intra_fid(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray,
              fake_labels: np.ndarray) -> tuple[float, dict[int, float]]:
    """(mean over classes, {class: FID}) for labelled (N, D) feature sets.

    Classes are those of the real labels; every one needs at least 2 real and
    2 generated samples (a covariance), and generated labels outside them are an error.
    """
    real_labels = np.asarray(real_labels).reshape(-1)
    fake_labels = np.asarray(fake_labels).reshape(-1)
    if len(real_labels) != len(real) or len(fake_labels) != len(fake):
        raise ValueError(f"intra_fid: {len(real)} real features with {len(real_labels)} labels, "
                         f"{len(fake)} generated with {len(fake_labels)}")
    classes = sorted(int(c) for c in np.unique(real_labels))
    extra = sorted(set(int(c) for c in np.unique(fake_labels)) - set(classes))
    if extra:
        raise ValueError(f"intra_fid: generated samples have classes {extra} that the real set lacks")
    per_class = {}
    for c in classes:
        r, f = real[real_labels == c], fake[fake_labels == c]
        if len(r) < 2 or len(f) < 2:
            raise ValueError(f"intra_fid: class {c} has {len(r)} real and {len(f)} generated samples; "
                             "each class needs at least 2 of each")
        per_class[c] = fid_from_features(r, f)
    return float(np.mean(list(per_class.values()))), per_class


def intra_fid_records(c: Comparison) -> list[Result]:
    """The ``intra_fid`` record, per-class values in the provenance (keyed by class name where known)."""
    mean, per_class = intra_fid(c.real.features, c.real.labels, c.fake.features, c.fake.labels)
    if c.class_names is None:
        return [Result("intra_fid", mean, {"per_class": {str(k): v for k, v in per_class.items()}})]
    names = c.class_names
    per = {(names[k] if k < len(names) else str(k)): v for k, v in per_class.items()}
    return [Result("intra_fid", mean, {"per_class": per, "num_classes": len(per_class)})]
