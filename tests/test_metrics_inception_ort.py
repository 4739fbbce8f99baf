"""The FID Inception on ONNX Runtime: same features as PyTorch, a verified cache, clear errors."""
from __future__ import annotations

import logging

import pytest
import torch

from distgan.errors import UserError
from distgan.metrics import inception as inc
from distgan.metrics import inception_ort


def test_onnxruntime_backend_gives_the_torch_backends_features():
    """Grey 28x28 and an RGB non-square image: max abs difference below 1e-4."""
    g = torch.Generator().manual_seed(2)
    grey = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=g)
    rgb = torch.randint(0, 256, (1, 3, 40, 32), dtype=torch.uint8, generator=g)
    fast, ref = inc.InceptionFeatures(backend="onnxruntime"), inc.InceptionFeatures(backend="torch")
    assert (fast.backend, ref.backend) == ("onnxruntime", "torch")
    assert inc.InceptionFeatures().backend == "onnxruntime"  # auto: installed here, so used
    for images in (grey, rgb):
        got, want = fast(images), ref(images)
        assert got.shape == want.shape == (len(images), inc.FEATURE_DIM)
        assert got.dtype == torch.float32
        assert (got - want).abs().max().item() < 1e-4


def test_cached_model_is_reused_and_an_unreadable_one_exported_again(tmp_path, monkeypatch, caplog):
    net = inc.InceptionFeatures(backend="torch").layers
    first = inception_ort.OrtInception(net, "ab" * 32, cache_dir=tmp_path)
    assert first.path.parent == tmp_path and first.path.name.startswith("inception-abababababababab-torch")
    good = first.path.read_bytes()

    def no_export(_net):
        raise AssertionError("exported although a valid cached model exists")

    with monkeypatch.context() as m:
        m.setattr(inception_ort, "export_onnx", no_export)
        again = inception_ort.OrtInception(net, "ab" * 32, cache_dir=tmp_path)
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    assert torch.equal(again(x), first(x))

    first.path.write_bytes(good[: len(good) // 3])  # a truncated file (a disk that filled up, say)
    with caplog.at_level(logging.WARNING, logger="distgan"):
        rebuilt = inception_ort.OrtInception(net, "ab" * 32, cache_dir=tmp_path)
    assert "does not load or run" in caplog.text and str(first.path) in caplog.text
    assert first.path.read_bytes() == good
    assert (rebuilt(x) - first(x)).abs().max().item() < 1e-6


def test_a_model_that_does_not_reproduce_pytorch_is_refused(tmp_path, monkeypatch):
    net = inc.InceptionFeatures(backend="torch").layers
    inception_ort.OrtInception(net, "cd" * 32, cache_dir=tmp_path)  # fills the cache
    monkeypatch.setattr(inception_ort, "PROBE_TOLERANCE", -1.0)  # nothing can match now
    cached = (tmp_path / next(p.name for p in tmp_path.iterdir())).read_bytes()
    monkeypatch.setattr(inception_ort, "export_onnx", lambda _net: cached)
    with pytest.raises(RuntimeError, match="differs from the PyTorch network.*inception_backend=torch"):
        inception_ort.OrtInception(net, "cd" * 32, cache_dir=tmp_path)


def test_missing_onnxruntime_is_one_clear_error_and_auto_uses_torch(monkeypatch):
    monkeypatch.setattr(inception_ort, "available", lambda: False)
    with pytest.raises(UserError, match="'onnxruntime' and 'onnxscript'.*inception_backend=torch"):
        inc.InceptionFeatures(backend="onnxruntime")
    assert inc.InceptionFeatures().backend == "torch"
    with pytest.raises(inc.WeightsError, match="inception_backend='tensorrt' is not one of auto, torch"):
        inc.InceptionFeatures(backend="tensorrt")
