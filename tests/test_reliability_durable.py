"""Renames are durable: after a file is renamed into place its directory is fsynced.

A rename changes the directory, not the file; until the directory reaches the disk a
power loss can undo it. Every owner of a renamed file is checked: checkpoints and the
``latest``/``best`` pointers, shard manifests, status.json. The spy records renames and
directory fsyncs in the order they happen, so each fsync is attributed to the rename it
follows: a rename into directory X must be followed by an fsync of X before the next
rename and before the writing function returns. Order matters, not just presence: the
step file must be on the disk before ``latest`` is renamed to name it, and a function that
returns tells its caller that the write is done.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch


@pytest.fixture
def fs_ops(monkeypatch):
    """[("rename", src, dst) | ("fsync", directory)] in the order they happened; paths are absolute."""
    ops: list[tuple] = []
    real_fsync = os.fsync

    def spy_rename(real):
        def rename(src, dst, **kw):
            # a dir_fd would make the paths relative to a directory the spy cannot see
            assert not kw, f"rename with {kw}: the spy cannot attribute it to a directory"
            real(src, dst)
            ops.append(("rename", Path(os.path.realpath(src)), Path(os.path.realpath(dst))))
        return rename

    def fsync(fd):
        real_fsync(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            ops.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
    monkeypatch.setattr(os, "replace", spy_rename(os.replace))
    monkeypatch.setattr(os, "rename", spy_rename(os.rename))
    monkeypatch.setattr(os, "fsync", fsync)
    return ops


def _during(ops: list[tuple], write, *args, **kwargs) -> list[tuple]:
    """The operations ``write(*args, **kwargs)`` performed, in order."""
    start = len(ops)
    write(*args, **kwargs)
    return ops[start:]


def _renamed(seq: list[tuple]) -> list[Path]:
    return [op[2] for op in seq if op[0] == "rename"]


def _renames_without_their_fsync(seq: list[tuple]) -> list[str]:
    """Each rename into X not followed by an fsync of X before the next rename or the end of ``seq``."""
    missing = []
    for i, op in enumerate(seq):
        if op[0] != "rename":
            continue
        nxt = next((j for j in range(i + 1, len(seq)) if seq[j][0] == "rename"), len(seq))
        if ("fsync", op[2].parent) not in seq[i + 1:nxt]:
            missing.append(f"{op[1]} -> {op[2]}")
    return missing


def test_checkpoint_and_pointers_are_fsynced_into_their_directory(tmp_path, fs_ops):
    from distgan.checkpoint import save_checkpoint
    from distgan.rundir import ckpt_dir, mark_best

    saved = _during(fs_ops, save_checkpoint, tmp_path, 5, {"step": 5, "w": torch.zeros(3)})
    ckpts = ckpt_dir(tmp_path).resolve()
    # the step file first, then the pointer naming it: both renamed into checkpoints/
    assert _renamed(saved) == [ckpts / "step_00000005.pt", ckpts / "latest"], saved
    assert _renames_without_their_fsync(saved) == [], saved

    marked = _during(fs_ops, mark_best, tmp_path, 5)
    assert _renamed(marked) == [ckpts / "best"], marked
    assert _renames_without_their_fsync(marked) == [], marked


def test_manifest_and_status_are_fsynced_into_their_directory(tmp_path, fs_ops):
    from distgan.rundir import STATUS, write_status
    from distgan.shards.manifest import MANIFEST, Manifest, write_manifest

    status = _during(fs_ops, write_status, tmp_path, "running", step=3)
    assert _renamed(status) == [(tmp_path / STATUS).resolve()], status
    assert _renames_without_their_fsync(status) == [], status

    manifest = _during(fs_ops, write_manifest, tmp_path / "shards",
                       Manifest(source="test", num_samples=0, height=8, width=8, channels=1, shards=[]))
    assert _renamed(manifest) == [(tmp_path / "shards" / MANIFEST).resolve()], manifest
    assert _renames_without_their_fsync(manifest) == [], manifest


def test_the_check_catches_a_missing_or_late_fsync():
    """The attribution itself: an fsync of the wrong directory, or one after the next rename, is not enough."""
    a, b = Path("/r/a"), Path("/r/b")
    ok = [("rename", a / ".x.tmp", a / "x"), ("fsync", a), ("rename", b / ".y.tmp", b / "y"), ("fsync", b)]
    assert _renames_without_their_fsync(ok) == []
    late = [("rename", a / ".x.tmp", a / "x"), ("rename", a / ".y.tmp", a / "y"), ("fsync", a)]
    assert _renames_without_their_fsync(late) == [f"{a / '.x.tmp'} -> {a / 'x'}"]
    wrong_dir = [("rename", a / ".x.tmp", a / "x"), ("fsync", b)]
    assert _renames_without_their_fsync(wrong_dir) == [f"{a / '.x.tmp'} -> {a / 'x'}"]
    none_at_end = [("fsync", a), ("rename", a / ".x.tmp", a / "x")]
    assert _renames_without_their_fsync(none_at_end) == [f"{a / '.x.tmp'} -> {a / 'x'}"]
