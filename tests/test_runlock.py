"""One owner per run directory: the lock, its record, and what launches and sweeps do with it.

Owners are real processes: a POSIX lock is per process, so a second owner in the
same interpreter would not be refused (and is not the case the lock exists for).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgan import runlock
from distgan.errors import UserError
from distgan.rundir import lock_path

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from distgan import runlock
runlock.acquire(sys.argv[1], launcher_pid=4242)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process that owns ``tmp_path / 'run'`` until the test ends (or kills it)."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "SLURM_JOB_ID": "", "SLURM_ARRAY_JOB_ID": ""})
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    proc.kill()
    proc.wait()


def test_a_live_owner_is_named_and_refuses_a_second_owner(holder):
    run, proc = holder
    rec = runlock.owner(run)
    assert rec["pid"] == proc.pid and rec["launcher_pid"] == 4242 and "job_id" not in rec
    with pytest.raises(runlock.RunDirBusy) as e:
        runlock.acquire(run)
    msg = str(e.value)
    assert f"pid {proc.pid} on host" in msg and "kill 4242" in msg and str(run) in msg
    with pytest.raises(runlock.RunDirBusy):
        runlock.ensure_free(run)
    assert runlock.owner(run)["pid"] == proc.pid  # asking did not take the lock away


def test_a_dead_owner_is_taken_over_with_a_note(holder, caplog):
    run, proc = holder
    proc.kill()
    proc.wait()  # killed holding the lock: the kernel released it, its record stays
    assert runlock.owner(run) is None
    runlock.ensure_free(run)
    with caplog.at_level(logging.INFO, logger="distgan"):
        rec = runlock.acquire(run)
    try:
        assert rec["pid"] == os.getpid()
        assert any(f"taking over run directory {run}" in r.getMessage() and f"pid {proc.pid}" in r.getMessage()
                   for r in caplog.records)
    finally:
        runlock.release(run)
    assert lock_path(run).read_bytes() == b""  # a clean release leaves no record to take over


def test_holds_are_reentrant_and_the_owner_never_probes_its_own_lock(tmp_path):
    run = tmp_path / "run"
    probe = [sys.executable, "-c", "import sys; from distgan import runlock; "
             "sys.exit(0 if runlock.owner(sys.argv[1]) is None else 3)", str(run)]
    with runlock.hold(run) as rec:
        with runlock.hold(run) as again:  # the worker holds it, then train() takes it again
            assert again is rec
        # owner() and ensure_free() in the owning process must not open and close the file:
        # closing any descriptor of it would drop this process's POSIX lock
        assert runlock.owner(run) is rec
        runlock.ensure_free(run)
        assert subprocess.run(probe).returncode == 3  # still held, seen from another process
    assert subprocess.run(probe).returncode == 0


def test_a_file_system_without_locks_is_named(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with pytest.raises(UserError, match=r"train\.lock: the file system refuses file locks \(ENOLCK\).*-o flock"):
        runlock.acquire(tmp_path / "run")


def test_launch_on_a_run_dir_in_use_stops_before_writing_anything(holder, mnist_shards):
    run, proc = holder
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "distgan.launch", "--config", str(ROOT / "configs/debug.yaml"),
                          "--cluster", "local", "--run-dir", str(run), f"data.shards={mnist_shards}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run directory") and f"pid {proc.pid}" in lines[0]
    assert "Traceback" not in out.stderr and time.monotonic() - t0 < 30
    assert sorted(p.name for p in run.iterdir()) == ["train.lock"]  # no config.yaml, no status.json


def test_a_sweep_skips_a_cell_that_is_training_now(tmp_path):
    from distgan.sweep.spec import load_sweep
    from distgan.sweep.submit import plan

    sweep_file = ROOT / "configs" / "sweeps" / "debug_grid.yaml"
    sweep = load_sweep(sweep_file, out=tmp_path / "sweep")
    first = sweep.runs()[0]
    cell = sweep.out / "runs" / first.name
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(cell)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        todo, skipped = plan(sweep)
    finally:
        proc.kill()
        proc.wait()
    assert first.name not in [r.name for r in todo]
    assert [(r.name, why.split(":")[0]) for r, why in skipped] == [(first.name, "training now")]
    assert f"pid {proc.pid}" in skipped[0][1]
    assert len(todo) == len(sweep.runs()) - 1


def test_sample_reads_a_run_that_is_training_now(debug_run, tmp_path):
    import shutil

    run = tmp_path / "live"
    shutil.copytree(debug_run, run)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        out = subprocess.run([sys.executable, "-m", "distgan.sample", "--run", str(run), "--num", "4",
                              "--out", str(tmp_path / "s.npz")], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert runlock.owner(run)["pid"] == proc.pid  # the reader left the owner its lock
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / "s.npz").is_file()
