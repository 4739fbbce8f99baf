"""fd_dinov2: DINOv2 loaded from a local file through the config key, on the two-set command and the evaluator.

A DINOv2-shaped ViT small enough for the CPU (patch 14, 518x518 position grid,
LayerScale, 32-d, 2 blocks) is registered with timm and saved to a file; the
entry loads it exactly as it would load ViT-L/14 (``metrics.features.dinov2.arch`` names it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from distgan.config import MetricsConfig
from distgan.errors import UserError
from distgan.metrics import registry
from distgan.metrics.__main__ import main
from distgan.metrics.dinov2 import DEFAULT_ARCH, Dinov2Error, Dinov2Settings, preprocess
from distgan.metrics.evaluate import Evaluator, Extractor
from distgan.metrics.frechet import fid_from_features
from distgan.metrics.generate import conditioning_for, generate
from distgan.metrics.protocol import ExtractorContext
from distgan.metrics.refstats import read_real

TINY = "distgan_test_vit_tiny_patch14_dinov2"
RES = 16


def distgan_test_vit_tiny_patch14_dinov2(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                                         cache_dir=None, **kwargs):
    """DINOv2's layout (patch 14, 37x37 position grid at 518, LayerScale 1e-5, no head), 32-d, 2 blocks."""
    args = dict(img_size=518, patch_size=14, embed_dim=32, depth=2, num_heads=2, init_values=1e-5, num_classes=0)
    return VisionTransformer(**{**args, **kwargs})


@pytest.fixture(scope="module")
def native():
    """The tiny network at its native 518x518 grid, as a checkpoint holds it."""
    if not timm.is_model(TINY):
        register_model(distgan_test_vit_tiny_patch14_dinov2)
    torch.manual_seed(0)
    return timm.create_model(TINY).eval()


@pytest.fixture(scope="module")
def weights(native, tmp_path_factory):
    path = tmp_path_factory.mktemp("dinov2") / "tiny_dinov2.safetensors"
    save_file(native.state_dict(), str(path))
    return path


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mc(weights, **kw) -> MetricsConfig:
    return MetricsConfig(features={"dinov2": {"weights": str(weights), "arch": TINY}}, **kw)


def _images(n: int, seed: int, size: int = 8, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def dinov2_reference(net: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's own forward on the native-grid network: its 37x37 position embeddings interpolated at call
    time (bicubic, scale (16 + 0.1) / 37, no antialiasing), blocks, final norm, CLS token."""
    tokens = net.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([net.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    side, grid, dim = 37, x.shape[-1] // 14, net.pos_embed.shape[-1]
    patches = net.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, scale_factor=((grid + 0.1) / side,) * 2, mode="bicubic", antialias=False)
    tokens = tokens + torch.cat([net.pos_embed[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    for block in net.blocks:
        tokens = block(tokens)
    return net.norm(tokens)[:, 0]


def test_the_default_network_is_vit_large_with_1024d_cls_features_at_224():
    assert Dinov2Settings().arch == DEFAULT_ARCH == "vit_large_patch14_dinov2.lvd142m"
    with torch.device("meta"):  # the architecture only: no weights, no memory
        net = timm.create_model(DEFAULT_ARCH, pretrained=False, img_size=224, num_classes=0)
    assert net.num_features == 1024 and tuple(net.patch_embed.grid_size) == (16, 16) and net.global_pool == "token"


def test_preprocessing_is_dgm_evals():
    """RGB, PIL bicubic to 224x224, [0, 1], ImageNet mean/std: torchvision's transforms on PIL images as reference."""
    import torchvision.transforms as T

    ref = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                     T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    for arr in (_images(2, 0, size=28), _images(2, 1, size=40, channels=3)):
        want = torch.stack([ref(Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).convert("RGB")) for a in arr])
        got = preprocess(_nchw(arr))
        assert got.shape == (2, 3, 224, 224)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        as_float = _nchw(arr).float() / 127.5 - 1.0  # G's [-1, 1] output quantises to the same pixels
        torch.testing.assert_close(preprocess(as_float), got, rtol=0, atol=0)


def test_features_are_dinov2s_cls_token_from_either_file_format(native, weights, tmp_path):
    ex = registry.FEATURE_NETS["dinov2"].extractor(ExtractorContext(_mc(weights)))
    assert ex.dim == 32 and ex.sha256 == _sha256(weights) and ex.name == f"{TINY}_cls224"
    images = _nchw(_images(3, 2, size=20, channels=3))
    with torch.no_grad():
        want = dinov2_reference(native, preprocess(images))
    got = ex.embed(images)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # DINOv2's own .pth (with its masked-modelling token) loads into the same network
    pth = tmp_path / "dinov2_tiny_pretrain.pth"
    torch.save({**native.state_dict(), "mask_token": torch.zeros(1, 32)}, pth)
    ex_pth = registry.FEATURE_NETS["dinov2"].extractor(ExtractorContext(_mc(pth)))
    assert ex_pth.sha256 == _sha256(pth) != ex.sha256
    torch.testing.assert_close(ex_pth.embed(images), got, rtol=0, atol=0)


def _run(argv, capsys) -> tuple[int, list[dict], str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_two_set_command_computes_fd_dinov2_beside_fid(weights, tmp_path, monkeypatch, capsys):
    """fid (a stub Inception) and fd_dinov2 from one CLI call: each set embedded once per network."""
    calls = []

    def stub(images):
        calls.append(len(images))
        return images.float().mean((1, 2, 3))[:, None].repeat(1, 3) * torch.tensor([1.0, 2.0, 3.0])

    monkeypatch.setitem(registry.FEATURE_NETS, "inception", dataclasses.replace(
        registry.FEATURE_NETS["inception"], build=lambda ctx: Extractor("stub", 3, stub, "0" * 64, "none", {})))
    a, b = _images(12, 3), _images(10, 4, channels=3)
    folder = tmp_path / "a"
    folder.mkdir()
    for i, im in enumerate(a):
        Image.fromarray(im[..., 0]).save(folder / f"{i:02d}.png")
    np.savez(tmp_path / "b.npz", images=b)
    rc, records, err = _run(["fid,fd_dinov2", folder, tmp_path / "b.npz", "--dinov2-weights", weights,
                             "--dinov2-arch", TINY], capsys)
    assert rc == 0, err
    assert sorted(calls) == [10, 12]  # Inception (stub): one pass per set
    by = {r["name"]: r for r in records}
    assert set(by) == {"fid", "fd_dinov2"}
    fd = by["fd_dinov2"]
    ex = registry.FEATURE_NETS["dinov2"].extractor(ExtractorContext(_mc(weights)))
    fa, fb = ex.embed(_nchw(a)).numpy(), ex.embed(_nchw(b)).numpy()
    assert fd["value"] == pytest.approx(fid_from_features(fa, fb), rel=1e-5) and fd["lower_is_better"] is True
    prov = fd["provenance"]
    assert prov["weights_sha256"] == _sha256(weights) and prov["feature_extractor"] == f"{TINY}_cls224"
    assert prov["timm_model"] == TINY and prov["resize"].startswith("uint8 -> rgb -> pil-bicubic 224x224")
    assert prov["num_a"] == 12 and prov["num_b"] == 10 and by["fid"]["provenance"]["feature_extractor"] == "stub"


def test_evaluator_records_fd_dinov2_against_the_shards(debug_cfg, weights, tmp_path):
    from distgan.models import DataInfo, build_models

    cfg = debug_cfg()
    torch.manual_seed(0)
    G, _ = build_models(cfg.model, DataInfo(channels=1, resolution=RES, num_classes=10))
    mc = dataclasses.replace(cfg.metrics, names=["fd_dinov2"], num_fake=24, num_real=30, batch_size=16,
                             cache_dir=str(tmp_path), features={"dinov2": {"weights": str(weights), "arch": TINY}})
    registry.check_config(mc)
    cond = conditioning_for(cfg.model.cond, cfg.data.shards)
    records = Evaluator(mc, cfg.data.shards, RES, cond, cfg.model.z_dim).evaluate(G, step=5)
    assert [r["name"] for r in records] == ["fd_dinov2"]
    rec = records[0]
    prov = rec["provenance"]
    assert rec["lower_is_better"] is True and rec["step"] == 5
    assert prov["weights_sha256"] == _sha256(weights) and prov["num_real"] == 30 and prov["num_fake"] == 24
    ex = registry.FEATURE_NETS["dinov2"].extractor(ExtractorContext(mc))
    real = ex.embed(read_real(cfg.data.shards, RES, limit=30)["image"]).numpy()
    fake = torch.cat([ex.embed(images) for _, images, _ in generate(G, 24, cfg.model.z_dim, cond, 16)]).numpy()
    assert rec["value"] == pytest.approx(fid_from_features(real, fake), rel=1e-5)


def test_run_command_takes_the_weights_flag(debug_run, weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # the run's metrics.cache_dir is the default under ~
    rc, records, err = _run(["fd_dinov2", "--run", debug_run, "--num", "12", "--num-real", "20",
                             "--dinov2-weights", weights, "--dinov2-arch", TINY], capsys)
    assert rc == 0, err
    assert [r["name"] for r in records] == ["fd_dinov2"] and records[0]["provenance"]["num_fake"] == 12
    assert records[0]["provenance"]["weights_sha256"] == _sha256(weights)


@pytest.mark.parametrize("case, message", [
    ("unset", "set metrics.features.dinov2.weights=PATH (command line: --dinov2-weights PATH)"),
    ("missing", "nope.safetensors' (metrics.features.dinov2.weights / --dinov2-weights) do not exist"),
    ("corrupt", "are not a readable safetensors or torch state-dict file"),
    ("wrong_arch", "do not fit timm model 'vit_small_patch14_dinov2'"),
    ("unknown_arch", "metrics.features.dinov2.arch='vit_nonexistent_dinov2' is not a timm model"),
])
def test_missing_or_wrong_weights_are_one_error_line(case, message, weights, tmp_path, capsys):
    np.savez(tmp_path / "a.npz", images=_images(4, 0))
    argv = ["fd_dinov2", tmp_path / "a.npz", tmp_path / "a.npz"]
    if case == "missing":
        argv += ["--dinov2-weights", tmp_path / "nope.safetensors"]
    elif case == "corrupt":
        (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
        argv += ["--dinov2-weights", tmp_path / "bad.safetensors"]
    elif case == "wrong_arch":  # the tiny weights into ViT-S/14: shapes differ
        argv += ["--dinov2-weights", weights, "--dinov2-arch", "vit_small_patch14_dinov2"]
    elif case == "unknown_arch":
        argv += ["--dinov2-weights", weights, "--dinov2-arch", "vit_nonexistent_dinov2"]
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and message in err and "Traceback" not in err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err  # one line
    if case == "unset":  # where such weights come from
        assert f"timm model '{DEFAULT_ARCH}'" in err and f"Hugging Face hub timm/{DEFAULT_ARCH}" in err
    named = {"missing": tmp_path / "nope.safetensors", "corrupt": tmp_path / "bad.safetensors", "wrong_arch": weights}
    if case in named:
        assert str(named[case]) in err  # the file at fault


def test_a_config_without_the_weights_is_refused_early(mnist_shards):
    mc = MetricsConfig(names=["fid", "fd_dinov2"])
    with pytest.raises(Dinov2Error, match="metrics.features.dinov2.weights") as e:
        registry.check_config(mc)
    assert isinstance(e.value, UserError)
    ev = Evaluator(mc, mnist_shards, RES, conditioning_for("none", mnist_shards), 8)
    with pytest.raises(Dinov2Error, match="--dinov2-weights"):
        ev.extractor("dinov2")


def test_the_networks_settings_are_config_keys_it_declares_itself(weights):
    """metrics.features.dinov2.* come from Dinov2Settings: set, typo-checked and renamed through the config."""
    from distgan.config import ConfigError, load_config

    cfg = load_config(None, ["metrics.names=[fd_dinov2]", f"metrics.features.dinov2.weights={weights}",
                             f"metrics.features.dinov2.arch={TINY}"])
    registry.check_config(cfg.metrics)
    assert registry.FEATURE_NETS["dinov2"].settings_for(cfg.metrics) == Dinov2Settings(str(weights), TINY)
    for key, named in [("metrics.features.dinov2.weight=x", "'metrics.features.dinov2.weight'"),
                       ("metrics.features.dinov3.weights=x", "'metrics.features.dinov3'"),
                       ("metrics.features.inception.weights=x", "'metrics.features.inception'")]:
        with pytest.raises(ConfigError, match=named):
            registry.check_config(load_config(None, [key]).metrics)
    # an older run's config.yaml spelled the keys metrics.dinov2_weights / metrics.dinov2_arch
    old = load_config(None, [f"metrics.dinov2_weights={weights}", f"metrics.dinov2_arch={DEFAULT_ARCH}"])
    assert old.metrics.features == {"dinov2": {"weights": str(weights)}}  # the old default arch is the default


def test_registry_entries_carry_direction_and_features():
    assert registry.names() == ["fid", "classifier", "kid", "precision_recall", "intra_fid", "fd_dinov2"]
    assert "fd_dinov2" in registry.two_set_names() and "classifier" not in registry.two_set_names()
    assert registry.records(["fd_dinov2", "precision_recall"]) == ["fd_dinov2", "precision", "recall"]
    assert registry.lower_is_better("fd_dinov2") and not registry.lower_is_better("classifier_acc/even")
    assert registry.main_record(["fid", "fd_dinov2"], "fd_dinov2") == "fd_dinov2"
    assert registry.REGISTRY["fd_dinov2"].extractor_key(MetricsConfig()) == "dinov2"
    assert registry.REGISTRY["kid"].extractor_key(MetricsConfig(kid_features="classifier")) == "classifier"
    with pytest.raises(registry.MetricNameError, match="unknown metric record 'fd_inception'"):
        registry.lower_is_better("fd_inception")
