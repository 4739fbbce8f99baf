"""Interop with the webdataset library, both ways.

Shards written by ``webdataset.ShardWriter`` (jpg + cls, png + json with class
names and attributes, class folders in the key) are indexed by
``python -m distgan.shards index`` and then read and trained on by distgan;
distgan's own shards are read back by ``webdataset.WebDataset`` sample for
sample.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from distgan.config import load_config
from distgan.data.loader import build_loader
from distgan.data.pipeline import DataSpec
from distgan.shards.__main__ import main as shards_main
from distgan.shards.index import expand_braces, index_shards
from distgan.shards.manifest import read_manifest, verify

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "fox"]


def _image(i: int, size: int = 12, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (size, size) if grey else (size, size, 3), dtype=np.uint8)


def _write(out: Path, n: int, per_shard: int, sample) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "data-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(n):
            sink.write(sample(i))
    return out


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _webp(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def _jpg_cls(i: int) -> dict:
    return {"__key__": f"s{i:05d}", "jpg": _jpeg(_image(i)), "cls": i % 3}


def _png_json(i: int) -> dict:
    # webdataset encodes .png from a uint8 array itself; .json from a dict
    return {"__key__": f"s{i:05d}", "png": _image(i, grey=True),
            "json": {"class": NAMES[i % 3], "attrs": {"Smiling": 1 if i % 2 else -1, "Young": int(i % 5 == 0)}}}


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("d-{000..002}.tar") == ["d-000.tar", "d-001.tar", "d-002.tar"]
    assert expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]


def test_jpg_cls_shards_are_indexed_and_read_with_their_labels(tmp_path):
    d = _write(tmp_path / "wds", 24, 6, _jpg_cls)
    assert shards_main(["index", str(d / "data-{000000..000003}.tar"), "--no-progress"]) == 0
    m = read_manifest(d)
    assert (m.num_samples, len(m.shards), m.height, m.width, m.channels) == (24, 4, 12, 12, 3)
    assert [s.count for s in m.shards] == [6, 6, 6, 6]
    assert m.classes == ["0", "1", "2"] and m.members["label"] == "cls"
    assert verify(d, m) == []  # the recorded sha256 and sizes are the files'
    loader = build_loader(d, DataSpec(resolution=12, batch_size=4, resampled=False, shuffle_buffer=0))
    seen = {}
    for b in loader:
        for k, y, img in zip(b["key"], b["label"].tolist(), b["image"]):
            seen[k] = (y, img)
    assert len(seen) == 24
    for k, (y, img) in seen.items():
        i = int(k[1:])
        assert y == i % 3
        # jpeg is lossy: compare with the stored bytes as PIL decodes them
        want = np.asarray(Image.open(io.BytesIO(_jpeg(_image(i)))).convert("RGB"))
        assert np.array_equal(img.permute(1, 2, 0).numpy(), want)


def test_png_json_labels_by_name_and_attributes(tmp_path):
    d = _write(tmp_path / "wds", 12, 4, _png_json)
    m, location, _ = index_shards(str(d), label="json", label_key="class", attrs_key="attrs", progress=False)
    assert location == str(d)
    assert m.classes == NAMES and m.attributes == ["Smiling", "Young"] and m.channels == 1
    assert m.mean and 0.3 < m.mean[0] < 0.7
    batches = list(build_loader(d, DataSpec(resolution=12, batch_size=4, resampled=False, shuffle_buffer=0)))
    got = {k: (y, a.tolist(), img) for b in batches for k, y, a, img in zip(b["key"], b["label"].tolist(),
                                                                           b["attrs"], b["image"])}
    assert len(got) == 12
    for k, (y, attrs, img) in got.items():
        i = int(k[1:])
        assert NAMES[y] == NAMES[i % 3]
        assert attrs == [float(i % 2), float(i % 5 == 0)]
        assert np.array_equal(img[0].numpy(), _image(i, grey=True))  # png is lossless
    # the metrics read the same attributes (their real-data conditioning), in shard order
    from distgan.metrics.generate import real_attribute_rows

    rows = real_attribute_rows(d).tolist()
    assert rows == [[float(i % 2), float(i % 5 == 0)] for i in range(12)]


def test_class_folders_in_keys_become_classes(tmp_path):
    d = _write(tmp_path / "wds", 9, 9, lambda i: {"__key__": f"{NAMES[i % 3]}/img{i}",
                                                  "webp": _webp(_image(i))})
    m, _, _ = index_shards(str(d), progress=False)
    assert m.members["label"] == "prefix" and m.classes == NAMES
    b = next(iter(build_loader(d, DataSpec(resolution=12, batch_size=9, resampled=False, shuffle_buffer=0))))
    assert [NAMES[y] for y in b["label"].tolist()] == [k.split("/")[0] for k in b["key"]]
    for k, img in zip(b["key"], b["image"]):  # lossless webp: exact pixels
        assert np.array_equal(img.permute(1, 2, 0).numpy(), _image(int(k.split("img")[1])))


def test_mixed_image_sizes_are_refused_naming_the_sample(tmp_path, capsys):
    d = _write(tmp_path / "wds", 5, 5, lambda i: {"__key__": f"s{i}", "cls": 0,
                                                  "png": _image(i, size=16 if i == 3 else 12)})
    assert shards_main(["index", str(d), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "sample 's3'" in err and "16x16" in err and "mixed image sizes" in err
    assert not (d / "manifest.json").exists()


def test_pipe_source_is_indexed_into_out_and_streamed(tmp_path):
    d = _write(tmp_path / "wds", 8, 4, _jpg_cls)
    meta = tmp_path / "meta"
    spec = f"pipe:cat {d}/data-{{000000..000001}}.tar"
    m, location, where = index_shards(spec, out=str(meta), progress=False)
    assert location == f"pipe:cat {d}/{{name}}" and where == meta
    assert m.num_samples == 8 and [s.count for s in m.shards] == [4, 4]
    # the manifest travels beside the shards; the pipe then serves both
    (d / "manifest.json").write_text((meta / "manifest.json").read_text())
    assert verify(location, read_manifest(location)) == []
    b = next(iter(build_loader(location, DataSpec(resolution=12, batch_size=8, resampled=False, shuffle_buffer=0))))
    assert sorted(b["label"].tolist()) == sorted(i % 3 for i in range(8))


def test_a_sample_without_image_is_named(tmp_path, capsys):
    d = _write(tmp_path / "wds", 3, 3, lambda i: {"__key__": f"s{i}", "cls": 0,
                                                  **({"txt": "caption"} if i == 1 else {"png": _image(i)})})
    assert shards_main(["index", str(d), "--no-progress"]) == 2
    assert "sample 's1'" in capsys.readouterr().err


def test_distgan_shards_read_back_through_webdataset(mnist_shards):
    m = read_manifest(mnist_shards)
    urls = [str(mnist_shards / s.name) for s in m.shards]
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("l").to_tuple("__key__", "png", "cls")
    ours = {}
    for s in build_loader(mnist_shards, DataSpec(resolution=28, batch_size=500, resampled=False, shuffle_buffer=0)):
        for k, y, img in zip(s["key"], s["label"].tolist(), s["image"]):
            ours[k] = (y, img[0].numpy())
    count = 0
    for key, img, cls in ds:
        y, mine = ours[key]
        assert int(cls) == y
        assert np.array_equal((np.asarray(img) * 255).round().astype(np.uint8), mine)
        count += 1
    assert count == m.num_samples == len(ours) == 5000


TRAIN_SETS = {  # (sample writer, index arguments, class names, channels)
    "jpg+cls": (lambda i: {"__key__": f"s{i:04d}", "jpg": Image.fromarray(_image(i, 16)), "cls": i % 3},
                [], ["0", "1", "2"], 3),
    "png+json": (lambda i: {"__key__": f"s{i:04d}", "png": _image(i, 16, grey=True),
                            "json": {"class": NAMES[i % 3]}},
                 ["--label", "json", "--label-key", "class"], NAMES, 1),
}


@pytest.mark.parametrize("kind", sorted(TRAIN_SETS))
def test_webdataset_written_shards_train_end_to_end(tmp_path, kind):
    from distgan.train import train

    sample, index_args, classes, channels = TRAIN_SETS[kind]
    d = _write(tmp_path / "wds", 64, 16, sample)
    assert shards_main(["index", str(d), *index_args, "--no-progress"]) == 0
    cfg = load_config(ROOT / "configs" / "debug.yaml", [f"data.shards={d}", "log.progress=false", "train.steps=4",
                                                        "train.ckpt_every=4", "log.every=2", "log.sample_every=4",
                                                        "log.num_samples=6", "train.batch_size=8"])
    run = tmp_path / "run"
    train(cfg, run)
    info = json.loads((run / "data_info.json").read_text())
    assert info["classes"] == classes and info["channels"] == channels
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000004.pt"
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["step"] == 4 and np.isfinite(stats[-1]["loss_d"])
