"""``python -m distgan.metrics NAMES A B`` on folders, .npz files, shards and a run, with a small stub
feature extractor standing in for Inception (the CLI's plumbing, caching and errors are under test)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.metrics import registry
from distgan.metrics.__main__ import main
from distgan.metrics.evaluate import Extractor
from distgan.metrics.frechet import fid_from_features, save_stats
from distgan.metrics.precision_recall import precision_recall


def stub_features(images: torch.Tensor) -> torch.Tensor:
    """3-d features of uint8 NCHW images: mean, std, top-half minus bottom-half mean."""
    x = images.float().mean(1)
    h = x.shape[1] // 2
    return torch.stack([x.mean((1, 2)), x.std((1, 2)), x[:, :h].mean((1, 2)) - x[:, h:].mean((1, 2))], 1) / 255


@pytest.fixture
def stub(monkeypatch):
    """Replace Inception by the stub; ``calls`` counts the images each extraction embeds."""
    calls = []

    def embed(images):
        calls.append(len(images))
        return stub_features(images)

    stub_net = dataclasses.replace(registry.FEATURE_NETS["inception"],
                                   build=lambda ctx: Extractor("stub", 3, embed, "0" * 64, "none", {}))
    monkeypatch.setitem(registry.FEATURE_NETS, "inception", stub_net)
    return calls


def _images(n: int, seed: int, size: int = 8, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _folder(path, images):
    path.mkdir(parents=True)
    for i, im in enumerate(images):
        sub = path / ("a" if i % 2 else "b")  # nested: found recursively
        sub.mkdir(exist_ok=True)
        Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(sub / f"{i:03d}.png")
    return path


def _run(argv, capsys) -> tuple[int, list[dict], str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_folder_vs_npz_computes_every_name_from_one_extraction(tmp_path, stub, capsys):
    a, b = _images(12, 0), _images(10, 1)
    folder = _folder(tmp_path / "imgs", a)
    np.savez(tmp_path / "b.npz", images=b)
    rc, records, _ = _run(["fid,kid,precision_recall", folder, tmp_path / "b.npz", "--kid-subset-size", "5"],
                          capsys)
    assert rc == 0
    assert sorted(stub) == [10, 12]  # one pass over each set, whatever the number of metrics
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"fid", "kid", "precision", "recall"}
    fa, fb = (stub_features(torch.from_numpy(x).permute(0, 3, 1, 2)) for x in (a, b))
    assert by_name["fid"]["value"] == pytest.approx(fid_from_features(fa.numpy(), fb.numpy()), rel=1e-6)
    p, r = precision_recall(fb.numpy(), fa.numpy())
    assert (by_name["precision"]["value"], by_name["recall"]["value"]) == pytest.approx((p, r))
    prov = by_name["fid"]["provenance"]
    assert prov["a"]["kind"] == "folder" and prov["b"]["kind"] == "npz" and prov["num_a"] == 12
    assert prov["weights_sha256"] == "0" * 64 and prov["feature_extractor"] == "stub"


def test_features_cache_is_reused(tmp_path, stub, capsys):
    np.savez(tmp_path / "a.npz", images=_images(6, 0))
    np.savez(tmp_path / "b.npz", images=_images(6, 1))
    argv = ["fid", tmp_path / "a.npz", tmp_path / "b.npz", "--features-cache", tmp_path / "cache"]
    rc1, first, _ = _run(argv, capsys)
    rc2, second, _ = _run(argv, capsys)
    assert rc1 == rc2 == 0 and stub == [6, 6]  # the second run embedded nothing
    assert second[0]["value"] == first[0]["value"] and second[0]["provenance"]["a"]["cache_hit"]


def test_stats_npz_gives_fid(tmp_path, stub, capsys):
    a = _images(8, 0)
    np.savez(tmp_path / "a.npz", images=a)
    fb = np.random.default_rng(3).normal(size=(20, 3))
    save_stats(tmp_path / "ref.npz", fb.mean(0), np.cov(fb, rowvar=False))
    rc, records, _ = _run(["fid", tmp_path / "a.npz", tmp_path / "ref.npz"], capsys)
    fa = stub_features(torch.from_numpy(a).permute(0, 3, 1, 2)).numpy()
    assert rc == 0 and records[0]["value"] == pytest.approx(fid_from_features(fa, fb), rel=1e-6)


def test_run_vs_shards_protocol_with_intra_fid(debug_run, mnist_shards, tmp_path, stub, capsys):
    """The benchmark's one-liner: samples of a class-conditional run against labelled shards."""
    rc, records, _ = _run(["fid,intra_fid,precision_recall", debug_run, mnist_shards, "--num", "40",
                           "--cache-dir", tmp_path / "refcache"], capsys)
    assert rc == 0, records
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"fid", "intra_fid", "precision", "recall"}
    per_class = by_name["intra_fid"]["provenance"]["per_class"]
    assert len(per_class) == 10 and by_name["intra_fid"]["value"] == pytest.approx(np.mean(list(per_class.values())))
    assert by_name["fid"]["provenance"]["a"]["kind"] == "run" and by_name["fid"]["provenance"]["num_b"] == 5000
    assert sum(stub) == 40 + 5000  # one pass over each set
    # the shard set's features are cached: a second evaluation embeds only the generated samples
    stub.clear()
    rc, again, _ = _run(["fid", debug_run, mnist_shards, "--num", "40", "--cache-dir", tmp_path / "refcache"], capsys)
    assert rc == 0 and stub == [40] and again[0]["provenance"]["b"]["cache_hit"]
    assert again[0]["value"] == pytest.approx(by_name["fid"]["value"])


def test_exported_generator_scores_like_its_run(debug_run, mnist_shards, tmp_path, stub, capsys):
    """A .safetensors export is a set of its own: the same samples, hence the same FID, as the run."""
    from distgan.export import main as export_main

    out = tmp_path / "g.safetensors"
    assert export_main(["--run", str(debug_run), "--format", "safetensors", "--out", str(out)]) == 0
    capsys.readouterr()
    common = [mnist_shards, "--num", "40", "--cache-dir", tmp_path / "refcache"]
    rc, from_run, _ = _run(["fid,intra_fid", debug_run, *common], capsys)
    rc2, from_file, _ = _run(["fid,intra_fid", out, *common], capsys)
    assert rc == rc2 == 0
    assert [r["value"] for r in from_file] == [r["value"] for r in from_run]
    assert from_file[0]["provenance"]["a"]["checkpoint"] == str(out)


@pytest.mark.parametrize("case, message", [
    ("missing", "nope' does not exist"),
    ("empty", "holds no images"),
    ("mixed", "mixes image sizes"),
    ("no_images", "has no 'images' array"),
    ("stats_for_pr", "holds only FID statistics"),
    ("intra_unlabelled", "intra_fid needs class labels"),
    ("unknown_metric", "unknown metric 'fdi'"),
])
def test_clear_errors(tmp_path, stub, capsys, case, message):
    good = tmp_path / "good.npz"
    np.savez(good, images=_images(4, 0))
    names, other = "fid", good
    if case == "missing":
        other = tmp_path / "nope"
    elif case == "empty":
        other = tmp_path / "empty"
        other.mkdir()
    elif case == "mixed":
        other = _folder(tmp_path / "mixed", list(_images(2, 0, size=8)) + list(_images(1, 1, size=9)))
    elif case == "no_images":
        other = tmp_path / "x.npz"
        np.savez(other, pictures=_images(2, 0))
    elif case == "stats_for_pr":
        other, names = tmp_path / "s.npz", "fid,precision_recall"
        save_stats(other, np.zeros(3), np.eye(3))
    elif case == "intra_unlabelled":
        names = "intra_fid"
    elif case == "unknown_metric":
        names = "fdi"
    rc = main([names, str(good), str(other)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert stub == []  # refused before any extraction
    if case in ("missing", "empty", "mixed", "no_images", "stats_for_pr"):
        assert str(other) in err  # names the offending path
