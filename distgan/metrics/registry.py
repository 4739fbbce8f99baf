"""Metrics by name: what each config name computes, which features it needs, which way is better.

``metrics.names`` takes the *config names* below; each yields one or more
*records* (one line of ``metrics.jsonl`` each):

========== ========================================== =============================
config     records                                     features
========== ========================================== =============================
fid        fid                                         Inception pool3 (2048-d)
classifier classifier_fd, classifier_acc               small CNN (128-d) + its logits
           (+ classifier_acc/<attribute> for
           multi-label data)
kid        kid (mean; std in provenance)               ``metrics.kid_features``
precision_ precision, recall (k=3)                     Inception pool3 (2048-d)
recall
intra_fid  intra_fid (per-class values in provenance)  Inception pool3 (2048-d)
========== ========================================== =============================

``intra_fid`` needs a class-conditional model and labelled shards.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    name: str
    records: tuple[str, ...]
    extractor: str  # "inception" | "classifier" | "kid" (= metrics.kid_features)
    doc: str


REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    REGISTRY[spec.name] = spec
    return spec


register(MetricSpec("fid", ("fid",), "inception",
                    "Frechet Inception Distance: standard TF Inception pool features, 299x299"))
register(MetricSpec("classifier", ("classifier_fd", "classifier_acc"), "classifier",
                    "Frechet distance on a small CNN's features + conditional accuracy of generated images"))
register(MetricSpec("kid", ("kid",), "kid",
                    "Kernel Inception Distance: unbiased cubic-polynomial MMD^2 over subsets"))

register(MetricSpec("precision_recall", ("precision", "recall"), "inception",
                    "improved precision and recall (Kynkaanniemi et al. 2019), k=3 nearest neighbours"))
register(MetricSpec("intra_fid", ("intra_fid",), "inception",
                    "intra-class FID (Miyato & Koyama 2018): mean over classes of the per-class FID"))

LOWER_IS_BETTER = {"fid": True, "classifier_fd": True, "kid": True, "classifier_acc": False,
                   "precision": False, "recall": False, "intra_fid": True}


def lower_is_better(record_name: str) -> bool:
    """Direction of a record (``classifier_acc/<attr>`` follows ``classifier_acc``)."""
    return LOWER_IS_BETTER[record_name.split("/")[0]]


def check_names(names: list[str]) -> list[str]:
    """Validate ``metrics.names``; a clear error names the unknown entry and the known ones."""
    out = []
    for n in names:
        if n not in REGISTRY:
            raise ValueError(f"metrics.names: unknown metric '{n}'; available: {', '.join(REGISTRY)}")
        if n not in out:
            out.append(n)
    return out


def main_record(names: list[str], main: str = "") -> str:
    """The record that picks the best checkpoint: ``metrics.main`` or the first name's first record."""
    names = check_names(names)
    produced = [r for n in names for r in REGISTRY[n].records]
    if main:
        if main in REGISTRY:  # a config name: its first record
            main = REGISTRY[main].records[0]
        if main not in produced:
            raise ValueError(f"metrics.main='{main}' is not produced by metrics.names={names}; "
                             f"choose one of {produced}")
        return main
    if not produced:
        raise ValueError("metrics.names is empty: nothing to select the best checkpoint by")
    return produced[0]
