"""Start-up checks, corrupt shards (fail by name / skip), pipe: sources, zscore round trips,
and the stream position carried through a real training checkpoint."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from distgan.data import DataSpec, build_loader, denormalize, normalize
from distgan.shards import ShardError, read_manifest, verify

SPEC = dict(resolution=28, batch_size=50, shuffle_buffer=0, resampled=False)


def all_keys(loader) -> list[str]:
    return [k for b in loader for k in b["key"]]


@pytest.fixture
def copy(mnist_shards, tmp_path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(mnist_shards, d)
    return d


def break_first_image(shard: Path) -> None:
    """Overwrite the PNG signature of the shard's first sample: same size, valid tar, bad image."""
    data = bytearray(shard.read_bytes())
    assert data[512:516] == b"\x89PNG"  # first member's data follows its 512-byte header
    data[512:520] = b"NOTAPNG!"
    shard.write_bytes(bytes(data))


def test_corrupt_shard_during_training_fails_naming_it_or_is_skipped(copy, caplog):
    victim = copy / read_manifest(copy).shards[2].name
    break_first_image(victim)
    # same size: the cheap start-up check passes, reading it fails with the shard's name
    with pytest.raises(ShardError, match=f"{victim.name}.*unreadable image"):
        all_keys(build_loader(copy, DataSpec(**SPEC)))
    keys = all_keys(build_loader(copy, DataSpec(**SPEC, skip_corrupt=True)))
    assert len(keys) == 4950 and len(set(keys)) == 4950  # one sample lost, one partial batch dropped
    assert victim.name in caplog.text  # a distgan.data warning (stderr once a command sets up the console)


def test_startup_checks_sizes_and_optionally_checksums(copy, caplog):
    shards = read_manifest(copy).shards
    tampered, truncated = copy / shards[1].name, copy / shards[4].name
    break_first_image(tampered)
    truncated.write_bytes(truncated.read_bytes()[:20000])
    with pytest.raises(ShardError, match=f"(?s)1 of 10 shards .* damaged.*{truncated.name}: size"):
        build_loader(copy, DataSpec(**SPEC))
    with pytest.raises(ShardError, match=f"(?s)2 of 10 shards.*{tampered.name}: sha256 mismatch"):
        build_loader(copy, DataSpec(**SPEC, verify_checksums=True))
    # skip_corrupt drops both at start-up, with a warning naming each
    keys = all_keys(build_loader(copy, DataSpec(**SPEC, verify_checksums=True, skip_corrupt=True), epochs=1))
    assert len(keys) == 4000 and len(set(keys)) == 4000
    assert tampered.name in caplog.text and truncated.name in caplog.text


def test_pipe_source_streams_like_the_directory(mnist_shards, tmp_path):
    pipe = f"pipe:cat {mnist_shards}/{{name}}"
    m = read_manifest(pipe)
    assert m.num_samples == 5000 and verify(pipe, m, checksums=True) == []
    assert all_keys(build_loader(pipe, DataSpec(**SPEC, verify_checksums=True))) == \
        all_keys(build_loader(mnist_shards, DataSpec(**SPEC)))
    # a failing command is an error naming it (never an empty epoch)
    d = tmp_path / "partial"
    d.mkdir()
    shutil.copy(mnist_shards / "manifest.json", d)
    with pytest.raises(ShardError, match=r"corrupt or unreadable shard 'pipe:cat .*shard-0000\d\d.tar'"
                                         r".*exited with status 1.*No such file"):
        all_keys(build_loader(f"pipe:cat {d}/{{name}}", DataSpec(**SPEC)))
    with pytest.raises(ValueError, match=r"needs a \{name\} placeholder"):
        read_manifest(f"pipe:cat {mnist_shards}/manifest.json")


def test_zscore_uses_manifest_stats_and_denormalize_inverts(mnist_shards):
    m = read_manifest(mnist_shards)
    images = torch.cat([b["image"] for b in build_loader(mnist_shards, DataSpec(**SPEC))])
    z = normalize(images, "zscore", m.mean, m.std)
    # the manifest's stats are those of the stored pixels: zscore data is standardised
    assert abs(z.mean().item()) < 1e-4 and abs(z.std().item() - 1) < 1e-3
    assert torch.equal(denormalize(z, "zscore", m.mean, m.std), images)
    x = normalize(images, "minmax")
    assert x.min().item() == -1 and x.max().item() == 1
    assert torch.equal(denormalize(x, "minmax"), images)
    rgb = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.0]  # a constant channel (std 0) must not blow up
    assert torch.equal(denormalize(normalize(rgb, "zscore", mean, std), "zscore", mean, std), rgb)
    assert denormalize(torch.tensor([[[[3.0, -7.0]]]]), "minmax").tolist() == [[[[255, 0]]]]  # clamped
    with pytest.raises(ValueError, match="one mean and std per channel"):
        normalize(rgb, "zscore", m.mean, m.std)


@pytest.mark.timeout(120)
def test_checkpoint_carries_stream_position_and_resume_matches_uninterrupted(debug_cfg, tmp_path):
    from distgan.checkpoint import load_file
    from distgan.train import train

    over = ("train.ckpt_every=4", "log.sample_every=100", "data.shuffle_buffer=50")
    train(debug_cfg("train.steps=8", *over), tmp_path / "straight")
    train(debug_cfg("train.steps=4", *over), tmp_path / "resumed")
    mid = load_file(tmp_path / "resumed" / "checkpoints" / "step_00000004.pt")
    assert (mid["data"]["epoch"], mid["data"]["batches"], mid["data"]["samples"]) == (0, 4, 64)
    # a copy of the stopped run whose checkpoint lost its stream position (the old behaviour)
    shutil.copytree(tmp_path / "resumed", tmp_path / "restarted")
    del mid["data"]
    torch.save(mid, tmp_path / "restarted" / "checkpoints" / "step_00000004.pt")
    train(debug_cfg("train.steps=8", *over), tmp_path / "resumed")
    train(debug_cfg("train.steps=8", *over), tmp_path / "restarted")
    a, b, c = (load_file(tmp_path / r / "checkpoints" / "step_00000008.pt")
               for r in ("straight", "resumed", "restarted"))
    assert a["data"] == b["data"] and a["data"]["batches"] == 8
    # same batches after resume -> bitwise the same weights; replaying the epoch start -> different weights
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    assert not all(torch.equal(a["G"][k], c["G"][k]) for k in a["G"])


@pytest.mark.parametrize("fmt", ["USTAR_FORMAT", "PAX_FORMAT", "GNU_FORMAT"])
def test_tar_reader_matches_tarfile_for_common_writers(tmp_path, fmt):
    """Shards from other tools (webdataset's TarWriter, GNU tar) use pax / GNU long names."""
    import io
    import tarfile

    from distgan.data.tarstream import iter_members

    members = [("a" * 60 + "/" + "k" * 80 + ".png", b"x" * 700), ("short.cls", b"3"), ("empty.txt", b""),
               ("s\u00e9.attr", b"0101" * 300)]
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=getattr(tarfile, fmt)) as tar:
        tar.addfile(_dir_info())  # a directory member: skipped by both readers
        for name, data in members:
            if fmt == "USTAR_FORMAT" and len(name.split("/")[-1]) > 100:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        want = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with open(path, "rb") as f:
        assert list(iter_members(f)) == want and len(want) >= 3
    data = bytearray(path.read_bytes())
    data[520] ^= 0xFF  # inside the second header's name: checksum mismatch
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(iter_members(io.BytesIO(bytes(data))))


def _dir_info():
    import tarfile

    info = tarfile.TarInfo("adir")
    info.type = tarfile.DIRTYPE
    return info
