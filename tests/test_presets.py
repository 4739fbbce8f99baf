"""Every preset builds and trains: a tiny forward/backward per preset, and the first
training steps through the real trainer for representative ones (dcgan, acgan,
multilabel on fake attribute shards, pix2pix on fake paired shards)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.checkpoint import load_file
from distgan.config import load_config
from distgan.models import DataInfo, build_models, data_info
from distgan.rundir import resolve_checkpoint
from distgan.shards import read_manifest
from distgan.shards.writer import ShardWriter
from distgan.train import train

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))
SEED_PRESETS = [p for p in PRESETS if p.name != "debug.yaml"]
# small but structure-preserving sizes per family (tests must stay fast)
TINY = {"dcgan": 16, "upsample": 28, "mlp": 28, "pix2pix": 16}
FAST = ["log.progress=false", "metrics.names=[]", "log.tensorboard=false", "data.shuffle_buffer=16"]


# the write-ups and studies presets reproduce, by the names docs/references.md lists them under
SOURCES = "De Matteis|Viel|Toutouh|Bordon et al.|Lecture 9a|Lucic et al."


def test_presets_cover_every_seed_experiment():
    names = {p.stem for p in SEED_PRESETS}
    assert {"mnist_cdcgan", "fashion_cdcgan", "cifar10_cdcgan", "fashion_cgan_mlp", "mnist_gan_upsample",
            "mnist_acgan", "fashion_acgan", "pix2pix", "dogs_dcgan", "dogs_feature_matching", "dogs_cgan",
            "dogs_projection", "dogs_acgan", "celeba_multilabel"} <= names
    for p in SEED_PRESETS:
        header = "".join(line for line in p.read_text().splitlines(True) if line.startswith("#"))
        assert re.search(rf"^#.*({SOURCES})", header, re.M), f"{p.name}: name the source"
        assert re.search(r"[Tt]able|[Ff]igure|Algorithm|slide|code", header), f"{p.name}: name the table/figure"
        assert "shards/" in load_config(p).data.shards


def test_dogs_dcgan_is_the_viel_best_setting():
    cfg = load_config(ROOT / "configs" / "dogs_dcgan.yaml")
    t, m = cfg.train, cfg.model
    assert (t.batch_size, m.z_dim, m.width, cfg.data.resolution) == (64, 100, 128, 64)
    assert (t.lr_d, t.lr_min_d, t.lr_g, t.lr_min_g, t.schedule) == (1e-3, 1e-5, 2e-3, 1e-5, "cosine")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_forward_backward(preset):
    cfg = load_config(preset)
    res = TINY[cfg.model.arch]
    cfg.model.width = 4
    channels = 1 if "mnist" in preset.stem or "fashion" in preset.stem or preset.stem == "debug" else 3
    classes = 120 if preset.stem.startswith("dogs") else 10
    attrs = list(cfg.data.attributes)
    norm = cfg.data.normalize
    info = DataInfo(channels, res, classes, attributes=attrs, normalize=norm,
                    mean=[0.4] * channels, std=[0.3] * channels)
    torch.manual_seed(0)
    G, D = build_models(cfg.model, info)
    B = 4
    if cfg.model.arch == "pix2pix":
        y = torch.rand(B, channels, res, res) * 2 - 1
        x = G(y)
    else:
        z = torch.randn(B, cfg.model.z_dim)
        y = None if cfg.model.cond == "none" else (
            torch.randint(0, 2, (B, len(attrs))).float() if attrs else torch.randint(0, classes, (B,)))
        x = G(z, y)
    out = D(x, y)
    lo, hi = (-1.0, 1.0) if norm == "minmax" else ((0 - 0.4) / 0.3, (1 - 0.4) / 0.3)
    assert x.shape == (B, channels, res, res)
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5
    assert out.logits.shape == (B,) and torch.isfinite(out.logits).all()
    if cfg.model.cond == "acgan":
        assert out.class_logits.shape == (B, classes)
    loss = out.logits.mean() + (out.class_logits.mean() if out.class_logits is not None else 0)
    loss.backward()
    for name, model in (("G", G), ("D", D)):
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{preset.stem}: no gradient in {name}"


# ----------------------------------------------------------------------------- through the trainer

def _fake_attr_shards(out: Path) -> Path:
    """CelebA-like shards: 16x16 RGB faces-to-be whose colour follows three 0/1 attributes."""
    rng = np.random.default_rng(0)
    w = ShardWriter(out, shard_size=32)
    for i in range(64):
        a = rng.integers(0, 2, 3)
        img = np.full((16, 16, 3), 60, np.int64)
        img[..., 0] += 120 * a[0]
        img[..., 2] += 120 * a[2]
        img = np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)
        w.add(f"{i:06d}", img, attrs=a)
    w.finish(source="fake-celeba", height=16, width=16, channels=3, attributes=["Male", "Eyeglasses", "Black_Hair"])
    return out


def _fake_paired_shards(out: Path) -> Path:
    rng = np.random.default_rng(1)
    w = ShardWriter(out, shard_size=16)
    for i in range(32):
        src = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        w.add(f"{i:06d}", src[:, ::-1].copy(), src=src)  # target = mirrored source
    w.finish(source="fake-paired", height=16, width=16, channels=3, paired=True)
    return out


def _run(preset, shards, run_dir, *overrides):
    cfg = load_config(ROOT / "configs" / preset, [f"data.shards={shards}", "train.steps=2", "train.batch_size=8",
                                                  "train.ckpt_every=2", "log.every=1", "log.sample_every=2",
                                                  "log.num_samples=8", *FAST, *overrides])
    out = train(cfg, run_dir)
    assert out["completed"] and out["step"] == 2
    assert (run_dir / "samples" / "step_00000002.png").is_file()
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_d"]) and np.isfinite(r["loss_g"]) for r in stats)
    return cfg, stats


LABELLED = [p for p in SEED_PRESETS if p.stem not in ("celeba_multilabel", "pix2pix")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("preset", LABELLED, ids=lambda p: p.stem)
def test_preset_first_steps_through_the_trainer(preset, mnist_shards, tmp_path):
    """The class-labelled presets on the embedded digits, shrunk (width 4; 16x16 for dcgan)."""
    res = ["data.resolution=16"] if load_config(preset).model.arch == "dcgan" else []
    _, stats = _run(preset.name, mnist_shards, tmp_path / "run", "model.width=4", *res)
    if preset.stem.startswith("dogs"):
        assert stats[-1]["lr_d"] < 1e-3  # Viel's cosine schedule is running
    if "acgan" in preset.stem:
        assert "loss_d_aux" in stats[-1] and "loss_g_aux" in stats[-1]


@pytest.mark.timeout(120)
def test_celeba_multilabel_first_steps_on_fake_attribute_shards(tmp_path):
    shards = _fake_attr_shards(tmp_path / "celeba")
    cfg, _ = _run("celeba_multilabel.yaml", shards, tmp_path / "run", "data.resolution=16", "model.width=4")
    info = json.loads((tmp_path / "run" / "data_info.json").read_text())
    assert info["attributes"] == ["Male", "Black_Hair"]  # the chosen subset, in config order
    from distgan.api import load_generator

    G, ginfo = load_generator(tmp_path / "run")
    imgs = G.sample(4, attrs=[{"Male": 1, "Black_Hair": 0}, {"Male": 0, "Black_Hair": 1}], seed=0)
    assert len(imgs) == 4
    bad = load_config(ROOT / "configs" / "celeba_multilabel.yaml", [f"data.shards={shards}",
                                                                    "data.attributes=[Male,Bald]"])
    with pytest.raises(ValueError, match="'Bald'.*Male, Eyeglasses, Black_Hair"):
        data_info(bad, read_manifest(shards))


@pytest.mark.timeout(120)
def test_pix2pix_first_steps_on_fake_paired_shards(tmp_path):
    shards = _fake_paired_shards(tmp_path / "facades")
    _, stats = _run("pix2pix.yaml", shards, tmp_path / "run", "data.resolution=16", "model.width=4")
    assert stats[-1]["loss_g_l1"] > 0
    assert stats[-1]["loss_g"] > 100 * stats[-1]["loss_g_l1"] * 0.99  # cGAN + lambda * L1, lambda = 100


@pytest.mark.timeout(180)
def test_short_acgan_run_learns_a_class_head_above_chance(mnist_shards, tmp_path):
    """A CPU AC-GAN of a few seconds on the embedded digits: D's class head sorts real digits."""
    cfg = load_config(ROOT / "configs" / "debug.yaml", [
        f"data.shards={mnist_shards}", "model.cond=acgan", "model.width=16", "train.steps=60",
        "train.batch_size=32", "train.lr_d=1e-3", "train.ckpt_every=60", "log.sample_every=60", *FAST])
    train(cfg, tmp_path / "run")
    manifest = read_manifest(mnist_shards)
    _, D = build_models(cfg.model, data_info(cfg, manifest))
    D.load_state_dict(load_file(resolve_checkpoint(tmp_path / "run", "latest"))["D"])
    D.eval()
    from distgan.data import DataSpec, build_loader
    from distgan.train.objectives import BatchPrep, phase_batch

    loader = build_loader(mnist_shards, DataSpec(resolution=16, batch_size=200, shuffle_buffer=500, resampled=False),
                          seed=5)
    batch = phase_batch(next(iter(loader)), torch.device("cpu"), BatchPrep())
    with torch.no_grad():
        acc = (D(batch["real"]).class_logits.argmax(1) == batch["label"]).float().mean().item()
    print(f"AC-GAN class head accuracy on real digits: {acc:.3f}")
    assert acc > 0.3, f"class head accuracy {acc:.2f} on real digits (chance 0.10)"
