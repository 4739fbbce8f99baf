"""precision_recall and intra_fid through the training-time Evaluator (stub features, no Inception)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from distgan.config import MetricsConfig
from distgan.metrics.evaluate import Evaluator, Extractor
from distgan.metrics.generate import Conditioning, conditioning_for, generate
from distgan.metrics.intra_fid import intra_fid
from distgan.metrics.precision_recall import precision_recall
from distgan.metrics.refstats import read_real

RES = 16


def _stub(images: torch.Tensor) -> torch.Tensor:
    """4-d features of [-1, 1] or uint8 images: quadrant means."""
    x = images.float().mean(1)
    x = x / 127.5 - 1 if images.dtype == torch.uint8 else x
    h = x.shape[1] // 2
    return torch.stack([x[:, :h, :h].mean((1, 2)), x[:, :h, h:].mean((1, 2)), x[:, h:, :h].mean((1, 2)),
                        x[:, h:, h:].mean((1, 2))], 1)


def test_precision_recall_and_intra_fid_records(debug_cfg, tmp_path):
    from distgan.models import DataInfo, build_models

    cfg = debug_cfg()
    torch.manual_seed(0)
    G, _ = build_models(cfg.model, DataInfo(channels=1, resolution=RES, num_classes=10))
    mc = dataclasses.replace(cfg.metrics, names=["precision_recall", "intra_fid"], num_fake=60, batch_size=16,
                             num_real=300, cache_dir=str(tmp_path))
    cond = conditioning_for(cfg.model.cond, cfg.data.shards)
    ev = Evaluator(mc, cfg.data.shards, RES, cond, cfg.model.z_dim)
    ev._extractors["inception"] = Extractor("stub", 4, _stub, "0" * 64, "none", {})
    by = {r["name"]: r for r in ev.evaluate(G, step=3)}
    assert set(by) == {"precision", "recall", "intra_fid"}
    assert not by["precision"]["lower_is_better"] and by["intra_fid"]["lower_is_better"]

    real = read_real(cfg.data.shards, RES, limit=300)
    fake_images, fake_labels = [], []
    for _, images, y in generate(G, 60, cfg.model.z_dim, cond, 16, seed=0):
        fake_images.append(images)
        fake_labels.append(y)
    fr, ff = _stub(real["image"]).numpy(), _stub(torch.cat(fake_images)).numpy()
    p, r = precision_recall(fr, ff)
    assert (by["precision"]["value"], by["recall"]["value"]) == pytest.approx((p, r))
    mean, per_class = intra_fid(fr, real["label"].numpy(), ff, torch.cat(fake_labels).numpy())
    assert by["intra_fid"]["value"] == pytest.approx(mean)
    assert by["intra_fid"]["provenance"]["per_class"] == pytest.approx({str(c): v for c, v in per_class.items()})


def test_intra_fid_needs_a_class_conditional_model(mnist_shards):
    with pytest.raises(ValueError, match="intra_fid, which needs a class-conditional model"):
        Evaluator(MetricsConfig(names=["fid", "intra_fid"]), mnist_shards, RES, Conditioning(), 8)
