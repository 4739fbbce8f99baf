"""SIGKILL of every process of a 2-rank training attempt, 6 times, while it checkpoints every step.

Each kill hits the launcher, both ranks and their data-loader workers at once (each
rank leads a session of its own, so the launcher's process group alone would miss
them), and no process of the killed attempt may survive it. After every kill
``latest`` names a checkpoint that loads, the next attempt says it resumed from the
newest checkpoint the kill left (a step > 0: nothing started over), and the run
finished by re-running the same command equals an uninterrupted run bitwise
(weights, optimizer states, schedules, EMA, data position). Every kill falls after
the attempt's first new checkpoint: every other one at a random moment (seeded; the
list is in the failure message), the others the moment a checkpoint's temp file
appears, i.e. in the middle of a checkpoint write.

The orphan case: SIGKILL of the launcher alone. Its ranks must notice, checkpoint and
exit within seconds, with ``status.json`` saying why, and the checkpoint they left loads.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from procs import descendants, kill_all, running_with, wait_gone

from distgan.checkpoint import load_file, load_latest
from distgan.rundir import list_checkpoints, read_status, resolve_checkpoint

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


# how long the processes of a SIGKILLed attempt may take to be gone (the kernel's work only)
KILLED_GONE_S = 10
# how long the ranks of a launcher killed alone may take to checkpoint and exit: measured at
# about 4 s here (the stop itself takes ~0.1 s; the rest is the process group's and the
# interpreter's teardown), with room for a loaded machine
ORPHANS_GONE_S = 20


def _launch(run: Path, shards: Path, steps: int, pythonpath: str = "", *extra: str) -> subprocess.Popen:
    """The user's command in a session of its own; each rank starts one more (the launcher's design)."""
    cmd = [sys.executable, "-m", "distgan.launch", "--config", str(ROOT / "configs" / "debug.yaml"),
           "--cluster", "local", "--procs-per-node", "2", "--run-dir", str(run), f"data.shards={shards}",
           f"train.steps={steps}", "train.ckpt_every=1", "train.keep_ckpts=2", "train.ema=true",
           "log.progress=false", "log.tensorboard=false", "log.sample_every=1000", "train.batch_size=8",
           "data.num_workers=1", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [pythonpath, str(ROOT)])))
    return subprocess.Popen(cmd, cwd=run.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _output_size(run: Path) -> int:
    try:
        return (run / "logs" / "rank0.out").stat().st_size
    except FileNotFoundError:
        return 0


def _resumed_from(run: Path, offset: int) -> int | None:
    """The step rank 0 said it resumed from in the output written after ``offset``, None if it did not."""
    with open(run / "logs" / "rank0.out", "rb") as f:
        f.seek(offset)
        found = re.findall(r"resumed from step (\d+)", f.read().decode(errors="replace"))
    assert len(found) <= 1, found
    return int(found[0]) if found else None


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
    resumed: list[int | None] = []  # per attempt: the step it said it resumed from (None: started fresh)
    expected: list[int] = []  # per kill: the newest loadable checkpoint it left
    for _ in range(KILLS):
        before = _latest_mtime(run)
        proc_output_start = _output_size(run)
        proc = _launch(run, mnist_shards, steps, str(slow))
        deadline = time.monotonic() + 120
        while _latest_mtime(run) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:  # finished before this kill: nothing left to interrupt
            resumed.append(_resumed_from(run, proc_output_start))
            break
        if len(kills) % 2:  # the moment a checkpoint's temp file appears: mid-write by construction
            delay = -1.0
            while not _writing(run) and proc.poll() is None and time.monotonic() < deadline:
                pass
        else:  # any moment of the attempt (steps, checkpoint writes, pruning, pointer updates)
            delay = rng.uniform(0.0, 0.5)
            time.sleep(delay)
        attempt = [proc.pid, *descendants(proc.pid)]
        kill_all(attempt)
        proc.wait()
        assert len(attempt) >= 5, f"launcher, 2 ranks and their loader workers expected, found {attempt}"
        assert wait_gone(attempt, KILLED_GONE_S) == [], f"processes of a killed attempt survived: {kills}"
        assert running_with(str(run)) == [], "a process of the killed attempt is still running"
        latest = load_file(resolve_checkpoint(run, "latest"))  # always a whole, loadable checkpoint
        mid_write = bool(list((run / "checkpoints").glob(".*.tmp")))  # a write was cut off
        kills.append((round(delay, 3), int(latest["step"]), mid_write))
        assert latest["step"] < steps, kills
        resumed.append(_resumed_from(run, proc_output_start))
        expected.append(int(load_latest(run, map_location="cpu")["step"]))  # what the next attempt must resume
    assert len(kills) >= KILLS // 2, f"the run outpaced the kills: {kills}"
    assert any(mid for _, _, mid in kills), f"no kill cut a checkpoint write: {kills}"
    final_start = _output_size(run)
    assert _launch(run, mnist_shards, steps).wait(timeout=240) == 0
    resumed.append(_resumed_from(run, final_start))
    # the first attempt started fresh; every later one resumed where the kill before it left the run
    assert resumed[0] is None and resumed[1:len(expected) + 1] == expected, (resumed, expected, kills)
    assert all(step > 0 for step in expected), expected

    a, b = load_file(resolve_checkpoint(straight)), load_file(resolve_checkpoint(run))
    assert a["step"] == b["step"] == steps
    for key in ("G", "D", "ema", "opt_d", "opt_g", "sched_d", "sched_g", "scaler_d", "scaler_g", "data"):
        _assert_same(a[key], b[key], f"{key} (kills at (delay, latest step, mid-write): {kills})")
    assert [s for s, _ in list_checkpoints(run)] == [steps - 1, steps]
    assert not list((run / "checkpoints").glob(".*.tmp"))  # temp files of killed writes are cleaned up


@pytest.mark.timeout(300)
def test_ranks_of_a_killed_launcher_checkpoint_and_exit_within_seconds(mnist_shards, tmp_path):
    run = tmp_path / "orphans"
    run.mkdir()
    proc = _launch(run, mnist_shards, 100_000, "", "train.ckpt_every=100000", "log.every=10")
    try:
        _wait_for_stats(run, 20, proc)
        ranks = descendants(proc.pid)  # the two ranks and their loader workers
        assert len(ranks) >= 4, ranks
        os.kill(proc.pid, signal.SIGKILL)  # the launcher alone: a closed terminal, an OOM kill
        proc.wait()
        t0 = time.monotonic()
        left = wait_gone(ranks, ORPHANS_GONE_S)
        took = time.monotonic() - t0
    finally:
        kill_all([proc.pid, *descendants(proc.pid)])
    assert left == [], f"ranks outlived their launcher by more than {ORPHANS_GONE_S} s: {left}"
    st = read_status(run)
    assert st["state"] == "stopped" and st["reason"] == f"launcher (pid {proc.pid}) died", st
    ckpt = load_file(resolve_checkpoint(run, "latest"))  # the checkpoint written on the way down loads
    assert ckpt["step"] == st["step"] >= 20, (ckpt["step"], st, took)
    assert (run / "train.lock").read_bytes() == b""  # released cleanly: the next owner finds no dead one


def _wait_for_stats(run: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = (run / "stats.jsonl").read_text().splitlines() if (run / "stats.jsonl").is_file() else []
        if rows and json.loads(rows[-1])["step"] >= step:
            return
        assert proc.poll() is None, f"the run ended early: {proc.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"the run did not reach step {step} in {timeout} s")


@pytest.mark.timeout(300)
def test_an_attempt_killed_outright_still_counts_its_time_up_to_its_last_checkpoint(mnist_shards, tmp_path):
    """status.json is brought up to date at each checkpoint: a SIGKILLed attempt (no chance to write its end)
    leaves the step it reached and the time it spent, and the next attempt adds its own to that."""
    run = tmp_path / "run"
    run.mkdir()
    proc = _launch(run, mnist_shards, 100_000, "", "train.ckpt_every=10", "log.every=10")
    try:
        end = time.monotonic() + 120
        while (read_status(run).get("step") or 0) < 20:
            assert proc.poll() is None and time.monotonic() < end, read_status(run)
            time.sleep(0.1)
    finally:
        attempt = [proc.pid, *descendants(proc.pid)]
        kill_all(attempt)
        proc.wait()
        wait_gone(attempt, KILLED_GONE_S)
    killed = read_status(run)
    assert killed["state"] == "running" and killed["step"] % 10 == 0 and killed["step"] >= 20, killed
    assert killed["train_seconds"] > 0 and killed["rank_seconds"] == pytest.approx(2 * killed["train_seconds"],
                                                                                   abs=0.2)
    done = _launch(run, mnist_shards, killed["step"] + 10, "", "train.ckpt_every=10", "log.every=10")
    assert done.wait(timeout=240) == 0
    final = read_status(run)
    assert final["state"] == "completed" and final["train_seconds"] > killed["train_seconds"], (killed, final)
