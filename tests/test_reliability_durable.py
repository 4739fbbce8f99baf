"""Renames are durable: after a file is renamed into place its directory is fsynced.

A rename changes the directory, not the file; until the directory reaches the disk a
power loss can undo it. Every owner of a renamed file is checked: checkpoints and the
``latest``/``best`` pointers, shard manifests, status.json. The spy records each fsync
of a directory together with what the directory held at that moment, so the test sees
that the fsync came after the rename.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch


@pytest.fixture
def dir_fsyncs(monkeypatch):
    """[(directory, names it held when fsynced)] for every fsync of a directory."""
    seen: list[tuple[Path, set[str]]] = []
    real = os.fsync

    def spy(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            d = Path(os.readlink(f"/proc/self/fd/{fd}"))
            seen.append((d, set(os.listdir(d))))
        return real(fd)
    monkeypatch.setattr(os, "fsync", spy)
    return seen


def _synced_after_rename(seen, path: Path) -> bool:
    return any(d == path.parent.resolve() and path.name in names for d, names in seen)


def test_checkpoint_and_pointers_are_fsynced_into_their_directory(tmp_path, dir_fsyncs):
    from distgan.rundir import ckpt_dir, mark_best
    from distgan.train.state import save_checkpoint

    path = save_checkpoint(tmp_path, 5, {"step": 5, "w": torch.zeros(3)})
    mark_best(tmp_path, 5)
    for p in (path, ckpt_dir(tmp_path) / "latest", ckpt_dir(tmp_path) / "best"):
        assert _synced_after_rename(dir_fsyncs, p), p


def test_manifest_and_status_are_fsynced_into_their_directory(tmp_path, dir_fsyncs):
    from distgan.rundir import STATUS, write_status
    from distgan.shards.manifest import MANIFEST, Manifest, write_manifest

    write_status(tmp_path, "running", step=3)
    assert _synced_after_rename(dir_fsyncs, tmp_path / STATUS)
    write_manifest(tmp_path / "shards", Manifest(source="test", num_samples=0, height=8, width=8, channels=1,
                                                 shards=[]))
    assert _synced_after_rename(dir_fsyncs, tmp_path / "shards" / MANIFEST)
