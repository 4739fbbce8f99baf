"""Metrics by name: each entry says which features it needs, which way each record is better, and computes.

``metrics.names`` (and the ``NAMES`` of ``python -m distgan.metrics``) take the
entries' names; each yields one or more *records* (one line of ``metrics.jsonl``):

============= ========================================== ====================================
name          records                                    features (extractor)
============= ========================================== ====================================
fid           fid                                        Inception pool3, 2048-d (inception)
classifier    classifier_fd, classifier_acc              small CNN, 128-d, + its logits
              (+ classifier_acc/<attribute> for           (classifier; training runs only)
              multi-label data)
kid           kid (mean; std in provenance)              ``metrics.kid_features``
precision_    precision, recall (k=3)                    Inception pool3 (inception)
recall
intra_fid     intra_fid (per-class values in provenance) Inception pool3 (inception)
fd_dinov2     fd_dinov2                                  DINOv2 ViT-L/14 CLS, 1024-d (dinov2)
============= ========================================== ====================================

The training evaluator and the two-set command loop over the entries they are
given: one embedding pass per extractor and set, whatever the number of metrics
on it. Adding a metric is one :class:`Metric` entry here (and, for new features,
one :class:`FeatureNet` entry and its module); see ``docs/extending.md``.

Other code asks this module, never a list of its own: :func:`names`,
:func:`two_set_names`, :func:`records`, :func:`lower_is_better`,
:func:`check_names`, :func:`main_record`, :func:`check_config`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from distgan.config import ConfigError, settings_from
from distgan.errors import UserError
from distgan.metrics.classifier import classifier_extractor, classifier_records
from distgan.metrics.dinov2 import Dinov2Settings, check_weights_set, dinov2_extractor
from distgan.metrics.frechet import frechet_record
from distgan.metrics.inception import inception_extractor
from distgan.metrics.intra_fid import intra_fid_records
from distgan.metrics.kid import kid_records
from distgan.metrics.precision_recall import precision_recall_records
from distgan.metrics.protocol import Comparison, Extractor, ExtractorContext, Result

if TYPE_CHECKING:  # annotations only: entries read the metrics section of a config
    from distgan.config import MetricsConfig

LOWER, HIGHER = True, False  # values of Metric.records: is a lower value better?


class MetricNameError(UserError, ValueError):
    """An unknown metric or record name; the message lists the known ones."""


@dataclass(frozen=True)
class FeatureNet:
    """A feature network that metrics share: built once per evaluation, embedded once per image set.

    Its settings are either flat ``metrics.*`` keys (``options``: the packaged Inception's and the
    classifier's) or a dataclass of its own (``settings``, fields made with :func:`distgan.config.option`),
    read from ``metrics.features.<key>``, so a new network declares its keys in its own module. Either way
    each key is also a ``--flag`` of ``python -m distgan.metrics`` (``--<key>-<field>`` for settings).
    """

    key: str
    build: Callable[[ExtractorContext], Extractor]
    options: tuple[str, ...] = ()  # flat metrics.* keys it reads
    settings: type | None = None  # its own settings: metrics.features.<key>.<field>
    check: Callable[[Any], None] | None = None  # cheap check of its settings, run when a config is validated
    doc: str = ""

    def settings_for(self, mc: MetricsConfig) -> Any:
        """This network's settings from ``metrics.features.<key>`` (checked; None without a settings class)."""
        given = mc.features.get(self.key, {})
        if self.settings is None:
            if given:
                raise ConfigError(f"config key 'metrics.features.{self.key}': network '{self.key}' has no settings "
                                  f"of its own; its keys: {', '.join('metrics.' + o for o in self.options)}")
            return None
        return settings_from(self.settings, given, f"metrics.features.{self.key}")

    def extractor(self, ctx: ExtractorContext) -> Extractor:
        """Build the network for ``ctx`` (its settings read from ``ctx.mc``)."""
        return self.build(dataclasses.replace(ctx, settings=self.settings_for(ctx.mc)))


@dataclass(frozen=True)
class Metric:
    """One ``metrics.names`` entry: its features, its records' directions and how to compute them."""

    name: str
    records: dict[str, bool]  # record name -> lower is better, in the order compute yields them
    extractor: str | Callable[[MetricsConfig], str]  # a FEATURE_NETS key, or one chosen by the config
    compute: Callable[[Comparison], list[Result]]
    doc: str
    real_features: bool = False  # needs every real feature vector, not only their mean and covariance
    fake_features: bool = False  # the same for the evaluated set
    labels: bool = False  # compares class c with class c: both sets need class labels
    two_set: bool = True  # offered by ``python -m distgan.metrics NAMES A B`` (needs only two image sets)

    def lower_is_better(self, record: str) -> bool:
        """Direction of one of this metric's records (``classifier_acc/<attr>`` follows ``classifier_acc``)."""
        base = record.split("/")[0]
        if base not in self.records:
            raise MetricNameError(f"metric '{self.name}' has no record '{record}'; its records: "
                                  f"{', '.join(self.records)}")
        return self.records[base]

    def extractor_key(self, mc: MetricsConfig) -> str:
        key = self.extractor(mc) if callable(self.extractor) else self.extractor
        if key not in FEATURE_NETS:
            raise MetricNameError(f"metric '{self.name}' asks for features '{key}'; known: {', '.join(FEATURE_NETS)}")
        return key


FEATURE_NETS: dict[str, FeatureNet] = {}
REGISTRY: dict[str, Metric] = {}


def register_features(net: FeatureNet) -> FeatureNet:
    FEATURE_NETS[net.key] = net
    return net


def register(metric: Metric) -> Metric:
    REGISTRY[metric.name] = metric
    return metric


register_features(FeatureNet("inception", inception_extractor,
                             ("inception_weights", "inception_sha256", "inception_backend"),
                             doc="TF 2015 InceptionV3 pool3 (FID), 2048-d, packaged weights"))
register_features(FeatureNet("classifier", classifier_extractor, ("classifier_seed",),
                             doc="small CNN trained on the run's shards, 128-d (training runs only)"))
register_features(FeatureNet("dinov2", dinov2_extractor, settings=Dinov2Settings, check=check_weights_set,
                             doc="DINOv2 ViT-L/14 CLS token at 224x224, 1024-d, weights from a local file"))

register(Metric("fid", {"fid": LOWER}, "inception", frechet_record("fid"),
                "Frechet Inception Distance: standard TF Inception pool features, 299x299"))
register(Metric("classifier", {"classifier_fd": LOWER, "classifier_acc": HIGHER}, "classifier", classifier_records,
                "Frechet distance on a small CNN's features + conditional accuracy of generated images",
                fake_features=True, two_set=False))
register(Metric("kid", {"kid": LOWER}, lambda mc: mc.kid_features, kid_records,
                "Kernel Inception Distance: unbiased cubic-polynomial MMD^2 over subsets",
                real_features=True, fake_features=True))
register(Metric("precision_recall", {"precision": HIGHER, "recall": HIGHER}, "inception", precision_recall_records,
                "improved precision and recall (Kynkaanniemi et al. 2019), k=3 nearest neighbours",
                real_features=True, fake_features=True))
register(Metric("intra_fid", {"intra_fid": LOWER}, "inception", intra_fid_records,
                "intra-class FID (Miyato & Koyama 2018): mean over classes of the per-class FID",
                real_features=True, fake_features=True, labels=True))
register(Metric("fd_dinov2", {"fd_dinov2": LOWER}, "dinov2", frechet_record("fd_dinov2"),
                "Frechet distance on DINOv2 ViT-L/14 features (Stein et al. 2023), 224x224"))


# ----------------------------------------------------------------------------- what other code asks

def names() -> list[str]:
    """Every metric name (the choices of ``metrics.names``), in registry order."""
    return list(REGISTRY)


def two_set_names() -> list[str]:
    """The names ``python -m distgan.metrics NAMES A B`` computes (those that need only two image sets)."""
    return [n for n, m in REGISTRY.items() if m.two_set]


def records(metric_names: list[str] | None = None) -> list[str]:
    """Record names the given metrics (default: all) produce (the choices of ``metrics.main``)."""
    return [r for n in check_names(list(metric_names if metric_names is not None else REGISTRY))
            for r in REGISTRY[n].records]


def lower_is_better(record_name: str) -> bool:
    """Direction of a record (``classifier_acc/<attr>`` follows ``classifier_acc``)."""
    base = record_name.split("/")[0]
    for m in REGISTRY.values():
        if base in m.records:
            return m.lower_is_better(record_name)
    raise MetricNameError(f"unknown metric record '{record_name}'; known: {', '.join(records())}")


def check_names(metric_names: list[str], key: str = "metrics.names") -> list[str]:
    """Validate a list of metric names (``key`` says which); a clear error names the unknown entry and the
    known ones. Duplicates dropped."""
    out = []
    for n in metric_names:
        if n not in REGISTRY:
            raise MetricNameError(f"{key}: unknown metric '{n}'; available: {', '.join(REGISTRY)}")
        if n not in out:
            out.append(n)
    return out


def main_record(metric_names: list[str], main: str = "") -> str:
    """The record that picks the best checkpoint: ``metrics.main`` or the first name's first record."""
    produced = records(metric_names)
    if main:
        if main in REGISTRY:  # a metric name: its first record
            main = next(iter(REGISTRY[main].records))
        if main not in produced:
            raise MetricNameError(f"metrics.main='{main}' is not produced by metrics.names={list(metric_names)}; "
                                  f"choose one of {produced}")
        return main
    if not produced:
        raise MetricNameError("metrics.names is empty: nothing to select the best checkpoint by")
    return produced[0]


@dataclass
class Needs:
    """What the metrics on one feature network need beyond the two sets' mean and covariance."""

    real_features: bool = False
    fake_features: bool = False
    labels: bool = False


def needs(metrics: list[Metric], mc: MetricsConfig) -> dict[str, Needs]:
    """Feature-network key -> what its metrics need, in the metrics' order: one embedding pass per key and set."""
    out: dict[str, Needs] = {}
    for m in metrics:
        n = out.setdefault(m.extractor_key(mc), Needs())
        n.real_features |= m.real_features
        n.fake_features |= m.fake_features
        n.labels |= m.labels
    return out


def check_config(mc: MetricsConfig) -> None:
    """Everything about ``metrics.*`` that can be checked before a run starts: names, main, feature settings.

    Raises a :class:`~distgan.errors.UserError` whose message names the key.
    """
    chosen = check_names(list(mc.names))
    final = check_names(list(mc.final), "metrics.final")
    both = [n for n in final if n in chosen]
    if both:
        raise ConfigError(f"config key 'metrics.final': got {list(mc.final)!r}, expected metrics that metrics.names "
                          f"does not compute ({', '.join(both)} is in both: its records at the last step would be "
                          "two evaluations of different sample counts under one name)")
    for key in mc.features:  # every network's settings, chosen or not: a typo is an error either way
        if key not in FEATURE_NETS:
            raise ConfigError(f"config key 'metrics.features.{key}': no feature network '{key}'; networks with "
                              f"settings of their own: {', '.join(k for k, n in FEATURE_NETS.items() if n.settings)}")
        FEATURE_NETS[key].settings_for(mc)
    if chosen:
        main_record(chosen, mc.main)
    for key in dict.fromkeys(REGISTRY[n].extractor_key(mc) for n in chosen + final):
        net = FEATURE_NETS[key]
        if net.check is not None:
            net.check(net.settings_for(mc))
