"""SIGKILL of a 2-rank training process group, 6 times, while it checkpoints every step.

After every kill ``latest`` names a checkpoint that loads, and the run finished by
re-running the same command equals an uninterrupted run bitwise (weights, optimizer
states, EMA). Every kill falls after the attempt's first new checkpoint: every other one at a
random moment (seeded; the list is in the failure message), the others the moment a
checkpoint's temp file appears, i.e. in the middle of a checkpoint write.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distgan.rundir import list_checkpoints, resolve_checkpoint
from distgan.train.state import load_file

pytestmark = pytest.mark.multiproc
ROOT = Path(__file__).resolve().parents[1]
KILLS = 6


# Imported by the killed runs' interpreters (first on PYTHONPATH): every fsync of a temp
# file takes 50 ms longer, so the window in which a checkpoint write is under way is wide
# enough to hit; the kill itself is the real SIGKILL.
SLOW_FSYNC = """
import os, time
_fsync = os.fsync
def fsync(fd):
    try:
        slow = os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp")
    except OSError:
        slow = False
    if slow:
        time.sleep(0.05)
    return _fsync(fd)
os.fsync = fsync
"""


def _launch(run: Path, shards: Path, steps: int, pythonpath: str = "") -> subprocess.Popen:
    """The user's command, in its own process group (the launcher and both ranks)."""
    cmd = [sys.executable, "-m", "distgan.launch", "--config", str(ROOT / "configs" / "debug.yaml"),
           "--cluster", "local", "--procs-per-node", "2", "--run-dir", str(run), f"data.shards={shards}",
           f"train.steps={steps}", "train.ckpt_every=1", "train.keep_ckpts=2", "train.ema=true",
           "log.progress=false", "log.tensorboard=false", "log.sample_every=1000", "train.batch_size=8"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [pythonpath, str(ROOT)])))
    return subprocess.Popen(cmd, cwd=run.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _latest_mtime(run: Path) -> int:
    try:
        return (run / "checkpoints" / "latest").stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _writing(run: Path) -> bool:
    with os.scandir(run / "checkpoints") as it:
        return any(e.name.endswith(".tmp") for e in it)


def _assert_same(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.timeout(540)  # ~70 s on an idle machine; generous for a loaded one
def test_sigkill_during_checkpoint_writes_keeps_latest_loadable_and_resume_bitwise(mnist_shards, tmp_path):
    steps = 30
    straight = tmp_path / "straight"
    straight.mkdir()
    assert _launch(straight, mnist_shards, steps).wait(timeout=240) == 0

    run = tmp_path / "killed"
    run.mkdir()
    slow = tmp_path / "slow_fsync"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_FSYNC)
    rng = random.Random(1234)
    kills = []
    for _ in range(KILLS):
        before = _latest_mtime(run)
        proc = _launch(run, mnist_shards, steps, str(slow))
        deadline = time.monotonic() + 120
        while _latest_mtime(run) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:  # finished before this kill: nothing left to interrupt
            break
        if len(kills) % 2:  # the moment a checkpoint's temp file appears: mid-write by construction
            delay = -1.0
            while not _writing(run) and proc.poll() is None and time.monotonic() < deadline:
                pass
        else:  # any moment of the attempt (steps, checkpoint writes, pruning, pointer updates)
            delay = rng.uniform(0.0, 0.5)
            time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        latest = load_file(resolve_checkpoint(run, "latest"))  # always a whole, loadable checkpoint
        mid_write = bool(list((run / "checkpoints").glob(".*.tmp")))  # a write was cut off
        kills.append((round(delay, 3), int(latest["step"]), mid_write))
        assert latest["step"] < steps, kills
    assert len(kills) >= KILLS // 2, f"the run outpaced the kills: {kills}"
    assert any(mid for _, _, mid in kills), f"no kill cut a checkpoint write: {kills}"
    assert _launch(run, mnist_shards, steps).wait(timeout=240) == 0

    a, b = load_file(resolve_checkpoint(straight)), load_file(resolve_checkpoint(run))
    assert a["step"] == b["step"] == steps
    for key in ("G", "D", "ema", "opt_d", "opt_g", "sched_d", "sched_g", "data"):
        _assert_same(a[key], b[key], f"{key} (kills at (delay, latest step, mid-write): {kills})")
    assert [s for s, _ in list_checkpoints(run)] == [steps - 1, steps]
    assert not list((run / "checkpoints").glob(".*.tmp"))  # temp files of killed writes are cleaned up
