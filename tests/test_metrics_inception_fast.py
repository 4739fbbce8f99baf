"""The native FID Inception: the same weights and the same features as the TorchScript graph.

The CPU default of :class:`InceptionFeatures` is ONNX Runtime when it is installed, so
every extractor here is built with ``backend="torch"``: these tests are about the
PyTorch module (ONNX Runtime is compared in test_metrics_inception_ort).
"""
from __future__ import annotations

import warnings

import pytest
import torch

from distgan.metrics import inception as inc
from distgan.metrics.inception_net import InceptionNet, read_torchscript_tensors


def _torchscript_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation
        return torch.jit.load(str(inc.packaged_weights_path()), map_location="cpu").net.layers.eval()


def test_archive_reader_gives_the_torchscript_tensors_exactly():
    ours = read_torchscript_tensors(str(inc.packaged_weights_path()))
    ref = _torchscript_layers().state_dict()
    assert set(ours) == {f"net.layers.{k}" for k in ref}
    for k, v in ref.items():
        assert torch.equal(ours[f"net.layers.{k}"], v), k
    # and the native module's names are the graph's, in the graph's order
    assert list(InceptionNet().state_dict()) == list(ref)


def test_fused_native_features_equal_the_torchscript_graph():
    """Grey 28x28 and an RGB non-square image: max abs difference below 1e-4 (float32 rounding only)."""
    g = torch.Generator().manual_seed(1)
    grey = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=g)
    rgb = torch.randint(0, 256, (1, 3, 40, 32), dtype=torch.uint8, generator=g)
    feats = inc.InceptionFeatures(backend="torch")
    assert feats.backend == "torch"
    layers = _torchscript_layers()
    for images in (grey, rgb):
        x = inc.tf_bilinear_resize(images.float().expand(-1, 3, -1, -1), 299) / 128.0 - 1.0
        with torch.no_grad():
            ref = layers(x).reshape(-1, inc.FEATURE_DIM)
        got = feats(images)
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() < 1e-4
    assert feats._ort is None  # ONNX Runtime was never built: the features came from the PyTorch module


def test_unreadable_weights_name_the_file(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(inc.WeightsError, match="weights.pt.*not a readable TorchScript file"):
        inc.load_layers(inc.WeightsInfo(bad, "x", "torchscript", "test"))
