"""Resuming never loses a run silently; write failures are reported by file, cause and intact step.

- every checkpoint unreadable, or ``latest`` naming a missing file: the run stops with an
  error naming each file (and the opt-in key), the files stay untouched;
  ``train.restart_if_unreadable=true`` is the explicit way to start over;
- a full disk (a real 1 MiB tmpfs) while writing a checkpoint: one error naming the file,
  "No space left on device" and the newest intact checkpoint, which still loads;
- a sample grid, stats line or metric record that cannot be written is a warning in the
  log and training goes on.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from distgan.checkpoint import CheckpointError, load_file
from distgan.rundir import METRICS, list_checkpoints, resolve_checkpoint
from distgan.train import train

ROOT = Path(__file__).resolve().parents[1]


def _copy(debug_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(debug_run, run)
    return run


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}


@pytest.mark.timeout(300)
def test_all_checkpoints_unreadable_stops_naming_each_file_and_changes_nothing(debug_run, debug_cfg, tmp_path):
    run = _copy(debug_run, tmp_path)
    for _, p in list_checkpoints(run):
        p.write_bytes(p.read_bytes()[:1000])  # truncated, as after a file-system fault
    before = _snapshot(run)
    with pytest.raises(CheckpointError) as e:
        train(debug_cfg("train.steps=30"), run)
    msg = str(e.value)
    for _, p in list_checkpoints(run):
        assert str(p) in msg
    assert "train.restart_if_unreadable=true" in msg
    assert _snapshot(run) == before  # nothing overwritten, nothing pruned

    # the CLI: one line naming the files and the key, non-zero exit, no traceback
    proc = subprocess.run([sys.executable, "-m", "distgan.launch", "--config", str(run / "config.yaml"),
                           "--run-dir", str(run), "--cluster", "local", "train.steps=30"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "step_00000020.pt" in proc.stderr
    assert "train.restart_if_unreadable=true" in proc.stderr
    assert _snapshot(run) == before

    # starting over is an explicit choice
    out = train(debug_cfg("train.steps=4", "train.ckpt_every=4", "train.restart_if_unreadable=true"), run)
    assert out["completed"] and out["step"] == 4
    assert load_file(resolve_checkpoint(run, "latest"))["step"] == 4


@pytest.mark.timeout(300)
def test_latest_naming_a_missing_file_stops_unless_fallback_is_chosen(debug_run, debug_cfg, tmp_path):
    run = _copy(debug_run, tmp_path)
    (run / "checkpoints" / "step_00000020.pt").unlink()
    with pytest.raises(CheckpointError, match=r"names step_00000020\.pt, which does not exist.*"
                                              r"present: step_00000010\.pt.*train\.restart_if_unreadable=true"):
        train(debug_cfg("train.steps=30"), run)
    out = train(debug_cfg("train.steps=12", "train.restart_if_unreadable=true"), run)
    assert out["step"] == 12
    assert "resumed from step 10" in (run / "logs" / "rank0.log").read_text()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs, mounted for the test (needs root or CAP_SYS_ADMIN).

    Without one the test skips (a failure under CI=true): a write error injected in-process
    would not show what the real file system does when it fills mid-checkpoint.
    """
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command: cannot mount the 1 MiB tmpfs that the disk-full test fills")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs for the disk-full test (needs root or CAP_SYS_ADMIN): "
                    f"mount exited {proc.returncode}: {proc.stderr.strip()}")
    try:
        assert os.path.ismount(mnt)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> None:
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    with open(mnt / f"filler-{uuid.uuid4().hex}", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.timeout(300)
def test_disk_full_during_checkpoint_names_file_cause_and_intact_step(debug_cfg, small_disk):
    run = small_disk / "run"
    cfg = ("train.steps=20", "train.ckpt_every=10", "log.tensorboard=false")
    train(debug_cfg(*cfg, "train.steps=10"), run)  # step_00000010.pt (~180 kB) fits
    _fill(small_disk, leave=64 * 1024)  # room for logs and grids, not for a checkpoint
    with pytest.raises(CheckpointError) as e:
        train(debug_cfg(*cfg), run)
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.ENOSPC  # from the disk
    msg = str(e.value)
    assert "step_00000020.pt" in msg and "No space left on device (ENOSPC)" in msg
    assert "'latest' still names step_00000010.pt, the newest intact checkpoint" in msg
    assert load_file(resolve_checkpoint(run, "latest"))["step"] == 10
    assert [s for s, _ in list_checkpoints(run)] == [10]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]  # no half files left


@pytest.mark.timeout(300)
def test_unwritable_sample_grid_and_stats_warn_and_training_continues(debug_cfg, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples").write_text("a file where the samples folder should be")  # every grid write fails
    (run / "stats.jsonl").mkdir()  # every stats append fails
    out = train(debug_cfg("train.steps=10", "train.ckpt_every=10", "log.sample_every=5"), run)
    assert out["completed"] and out["step"] == 10
    log = (run / "logs" / "rank0.log").read_text()
    assert f"WARNING sample grid {run / 'samples' / 'step_00000005.png'} not written" in log
    assert f"WARNING step 5: {run / 'stats.jsonl'} not appended" in log
    assert "training continues" in log
    assert load_file(resolve_checkpoint(run, "latest"))["step"] == 10


def test_unwritable_metrics_record_warns_and_evaluation_result_still_counts(tmp_path, caplog):
    from distgan.config import Config
    from distgan.metrics import training as mt

    hook = mt.TrainMetrics.__new__(mt.TrainMetrics)  # only what __call__ uses: no evaluator to build
    hook.run_dir, hook.writer, hook.main, hook.lower, hook.best = tmp_path, None, "fid", True, None
    hook.recorded = set()
    hook.cfg = Config()
    record = {"name": "fid", "value": 3.0, "provenance": {}}
    hook.evaluator = type("E", (), {"evaluate": lambda self, G, step, ema: [record]})()
    (tmp_path / METRICS).mkdir()  # the append fails with IsADirectoryError
    with caplog.at_level("WARNING", logger="distgan.metrics"):
        assert hook(7, None) is True  # the value still counts for `best`
    assert f"step 7: {tmp_path / METRICS} not appended" in caplog.text
    assert "training continues" in caplog.text
