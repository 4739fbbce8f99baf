"""Start the ranks of one run on this machine and wait for them.

    code = launch_local(run_dir, procs=2)      # 2 CPU processes on gloo (or 1 per GPU)

Each rank is ``python -m distgan.launch.worker RUN_DIR`` with RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT in
its environment: exactly what Accelerate reads (with ``Accelerator(cpu=True)``
on a CPU machine this gives a gloo group of ``procs`` ranks; ``torchrun`` or
``accelerate launch --cpu`` would not). Every rank writes its output straight
into ``RUN_DIR/logs/rank{r}.out``; the launcher follows rank 0's file onto the
console. No rank writes into a pipe held by the launcher, so a launcher that
dies never turns a rank's next line into a broken-pipe error.

When one rank fails, the others are stopped (SIGTERM, then SIGKILL after
``grace_s``) and the return code is that rank's exit code: a failure never
leaves ranks hanging in a collective. When the launcher itself dies, however it
dies, its ranks checkpoint and exit (:mod:`distgan.launch.lifeline`; each
rank is given the launcher's pid). The kernel's parent-death signal
follows the *thread* that started a rank, so ``launch_local`` must run to its
end in the thread that called it (it does: it waits for its ranks).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, MutableMapping

from distgan.launch.common import EXIT_DEADLINE, EXIT_STOPPED
from distgan.launch.env import free_port
from distgan.log import get_logger
from distgan.rundir import logs_dir

log = get_logger("launch")


def drop_slurm_env(env: MutableMapping[str, str]) -> None:
    """Remove Slurm's variables from ``env``: a local launch inside an allocation is no Slurm step."""
    for k in [k for k in env if k.startswith("SLURM_")]:
        del env[k]


def rank_env(rank: int, world: int, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of local rank ``rank`` of ``world`` (single node)."""
    env = dict(os.environ if base is None else base)
    drop_slurm_env(env)
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # 2+ threads per rank on few cores is many times slower
    return env


def _follow(path: Path, offset: int, proc: subprocess.Popen, echo: IO[bytes], poll_s: float = 0.1) -> None:
    """Copy what a rank appends to its output file after ``offset`` onto the console, until it exits."""
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            done = proc.poll() is not None  # read once more after the exit: the file then holds everything
            chunk = f.read(65536)
            if chunk:
                echo.write(chunk)
                echo.flush()
            elif done:
                return
            else:
                time.sleep(poll_s)


def launch_local(run_dir: str | Path, procs: int = 1, grace_s: float = 10.0, stream: bool = True,
                 python: str = sys.executable, command: list[str] | None = None,
                 deadline_s: float | None = None) -> int:
    """Run ``procs`` ranks of the run in ``run_dir``; returns 0 when all succeed.

    Otherwise returns the exit code of the first rank that failed (a signal
    death -N is reported as 128+N, like a shell). ``command`` replaces the
    per-rank command (default: the training worker), e.g. for other programs
    that need the same rendezvous. After ``deadline_s`` seconds (None: no limit)
    every rank still running is stopped and the code is ``EXIT_DEADLINE`` (124, like ``timeout``).
    """
    run_dir = Path(run_dir)
    logs = logs_dir(run_dir)
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs_list: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    files = []
    console = sys.stdout.buffer if stream else None
    for r in range(procs):
        log_path = logs / f"rank{r}.out"
        f = open(log_path, "ab")
        files.append(f)
        offset = f.tell()
        argv = command or [python, "-m", "distgan.launch.worker", str(run_dir), "--log", str(log_path),
                           "--launcher-pid", str(os.getpid())]
        p = subprocess.Popen(argv, env=rank_env(r, procs, port), stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)  # own group: Ctrl-C is forwarded by us, once
        procs_list.append(p)
        if r == 0 and console is not None:
            t = threading.Thread(target=_follow, args=(log_path, offset, p, console), daemon=True)
            t.start()
            pumps.append(t)

    def stop_all(sig: int = signal.SIGTERM) -> None:
        for p in procs_list:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass

    # forward Ctrl-C / SIGTERM to the ranks: they checkpoint at the next step boundary
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for s in previous:
            signal.signal(s, lambda signum, frame: stop_all(signal.SIGTERM))
    failed: tuple[int, int] | None = None
    end = None if deadline_s is None else time.monotonic() + deadline_s
    try:
        pending = set(range(procs))
        while pending:
            if end is not None and time.monotonic() > end and failed is None:
                log.warning("ranks still running after %g s: stopping them", deadline_s)
                failed = (min(pending), EXIT_DEADLINE)
                stop_all(signal.SIGKILL)
            for r in sorted(pending):
                code = procs_list[r].poll()
                if code is None:
                    continue
                pending.discard(r)
                if code != 0 and failed is None:
                    failed = (r, code)
                    why = ("stopped after checkpointing (re-run the same command to resume)"
                           if code == EXIT_STOPPED else f"exited with code {code}")
                    log.warning("rank %d %s; stopping the other ranks (its output: %s)", r, why, logs / f"rank{r}.out")
                    stop_all(signal.SIGTERM)
                    deadline = time.monotonic() + grace_s
                    threading.Thread(target=_kill_after, args=(procs_list, deadline), daemon=True).start()
            if pending:
                # block on one live rank for a short while instead of spinning
                try:
                    procs_list[min(pending)].wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
    finally:
        if in_main:
            for s, h in previous.items():
                signal.signal(s, h)
        stop_all(signal.SIGKILL)
        for t in pumps:
            t.join(timeout=5)
        for f in files:
            f.close()
    if failed is None:
        return 0
    code = failed[1]
    return 128 - code if code < 0 else code


def _kill_after(procs: list[subprocess.Popen], deadline: float) -> None:
    """SIGKILL ranks still alive at ``deadline`` (a rank blocked in a collective ignores SIGTERM's flag)."""
    for p in procs:
        left = deadline - time.monotonic()
        try:
            p.wait(timeout=max(0.0, left))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
