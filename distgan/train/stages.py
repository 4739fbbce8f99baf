"""Where this rank is in a run, so a wait that ran out can say where it happened.

    stages.enter("rendezvous")                 # the loop marks each stage as it enters it
    stages.enter("step 12 phase D")
    stages.watch(timeout_s=180)                # a bounded stage that outlasts the timeout ends the rank
    msg = stages.explain(exc, rank, world, timeout_s, run_dir)   # after a collective failed

A collective that one rank never enters makes the others wait until the
process group's timeout (``dist.timeout_s``) and raise (gloo), or abort (NCCL).
:func:`explain` turns that error into one line naming this rank, the stage,
the ranks that did not report reaching it, and the last checkpoint. The ranks
compare notes through the rendezvous store (:mod:`distgan.rendezvous`): every
rank that failed writes its stage there, and those that stay silent for a
short grace period are the ones that never entered the collective.

The rank that is stuck (outside any collective) is ended by :func:`watch`'s
thread once its current bounded stage has run 1.5 x ``timeout_s`` (1 x on
NCCL, whose timed-out collectives abort without a Python error): it reports
its stage and exits with :data:`EXIT_HUNG`. Stages that may legitimately run long
(metrics over many images) are entered with ``bounded=False``.

A test hook, read here only: ``DISTGAN_TEST_HANG_AT="RANK:STAGE"`` makes
rank RANK block forever when it enters STAGE (a rank that never starts, or
never reaches a collective).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from distgan.log import get_logger
from distgan.ranks import launch_ranks
from distgan.rundir import list_checkpoints

EXIT_HUNG = 4  # a rank ended because a distributed wait ran out (never requeued: 3 means "resume me")
_FAILED = "distgan/failed/"
log = get_logger("train")

_lock = threading.Lock()
_stage, _since, _bounded = "start", time.monotonic(), False
_reporter: Callable[[str], None] | None = None
_watch_stop: threading.Event | None = None


def _hang_hook() -> tuple[int, str] | None:
    spec = os.environ.get("DISTGAN_TEST_HANG_AT", "")
    rank, sep, stage = spec.partition(":")
    return (int(rank), stage) if sep and rank.isdigit() else None


def enter(name: str, bounded: bool = True) -> None:
    """Mark that this rank now runs stage ``name`` (cheap: a lock and three assignments)."""
    global _stage, _since, _bounded
    with _lock:
        _stage, _since, _bounded = name, time.monotonic(), bounded
    hook = _hang_hook()
    if hook is not None and hook == (launch_ranks().rank, name):
        log.warning(f"test hook DISTGAN_TEST_HANG_AT: rank {hook[0]} blocks in {name!r}")
        while True:
            time.sleep(3600)


def current() -> str:
    """The stage this rank is in."""
    return _stage


def set_reporter(fn: Callable[[str], None] | None) -> None:
    """Called with the diagnosis before a hung rank exits (the worker records it in status.json)."""
    global _reporter
    _reporter = fn


def last_checkpoint(run_dir: str | Path | None) -> str:
    """'step N (path)' of the newest checkpoint, or a note that there is none."""
    if run_dir is None:
        return "no run directory"
    found = list_checkpoints(run_dir)
    if not found:
        return "none yet (the run starts from step 0 again)"
    step, path = found[-1]
    return f"step {step} ({path}); re-running the same command resumes from it"


def watch(timeout_s: float, rank: int, run_dir: str | Path | None = None, world: int = 1,
          factor: float = 1.5, poll_s: float = 1.0) -> None:
    """Start the thread that ends this rank when a bounded stage runs past ``factor`` x ``timeout_s`` + 2 s.

    On gloo (factor 1.5) the ranks waiting in a collective raise first, at the
    timeout, and name the rank that never came; this thread then ends that
    rank too. NCCL aborts a timed-out collective without a Python error, so
    there the launcher passes factor 1.0: the thread names the stage first.
    """
    global _watch_stop
    unwatch()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(poll_s):
            with _lock:
                stage, since, bounded = _stage, _since, _bounded
            if bounded and time.monotonic() - since > factor * timeout_s + 2:
                msg = f"rank {rank} spent more than {timeout_s:g} s (dist.timeout_s) in stage '{stage}' without " \
                      "finishing it (a rank it waits for is stuck or gone, or it is the stuck one)"
                others = _compare_notes(rank, world, stage, 2.0) if world > 1 else None
                if others:
                    msg += "; " + ", ".join(f"rank {r} at '{s}'" for r, s in sorted(others.items()) if r != rank)
                msg = f"{msg.rstrip('; ')}. Last checkpoint: {last_checkpoint(run_dir)}"
                # printed, not only logged: every rank's last words must reach its own stderr (the
                # .out file its launcher keeps), console handler or not, before the hard exit below
                print(f"[distgan] error: {msg}", file=sys.stderr, flush=True)
                if _reporter is not None:
                    try:
                        _reporter(msg)
                    except Exception:  # noqa: BLE001 - the exit below matters more than the record
                        pass
                os._exit(EXIT_HUNG)  # the main thread is blocked; only a hard exit ends the rank

    _watch_stop = stop
    threading.Thread(target=run, name="distgan-stage-watch", daemon=True).start()


def unwatch() -> None:
    """Stop the watch thread (end of training)."""
    global _watch_stop
    if _watch_stop is not None:
        _watch_stop.set()
        _watch_stop = None


def is_comm_failure(exc: BaseException) -> bool:
    """True for a collective that timed out or lost its peers (gloo/NCCL/store errors)."""
    import torch.distributed as tdist  # noqa: PLC0415 - torch, which this module avoids: only on the failure path

    if isinstance(exc, getattr(tdist, "DistError", ())):
        return True
    text = str(exc).lower()  # gloo words it several ways ("Timed out waiting", "Application timeout ...")
    return any(s in text for s in ("timed out", "timeout", "connection closed by peer", "connection reset by peer",
                                   "broken pipe", "pair closure"))


def explain(exc: BaseException, rank: int, world: int, timeout_s: float, run_dir: str | Path | None,
            grace_s: float | None = None) -> str:
    """One line: this rank, the stage, which ranks did not report reaching it, the last checkpoint."""
    stage = current()
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    what = (f"timed out after {timeout_s:g} s (dist.timeout_s) waiting in a collective" if timed_out
            else f"lost its peers in a collective ({text[:160]})")
    others = _compare_notes(rank, world, stage, min(10.0, max(1.0, timeout_s / 4)) if grace_s is None else grace_s)
    msg = f"rank {rank} {what} at stage '{stage}'"
    if others is not None:
        silent = [r for r in range(world) if r != rank and r not in others]
        same = sorted(r for r in others if r != rank)
        if silent:
            msg += f"; rank(s) {', '.join(map(str, silent))} never reached it (stuck or gone: see their logs)"
        if same:
            msg += "; rank(s) " + ", ".join(f"{r} ('{others[r]}')" for r in same) + " failed the same way"
    return f"{msg}. Last checkpoint: {last_checkpoint(run_dir)}"


def _compare_notes(rank: int, world: int, stage: str, grace_s: float) -> dict[int, str] | None:
    """{rank: stage} of every rank that reported a failed collective within ``grace_s`` (None: no store)."""
    from distgan import rendezvous  # noqa: PLC0415 - loads torch, which this module avoids: only on failure

    store = rendezvous.store()
    if store is None:
        return None
    try:
        store.set(f"{_FAILED}{rank}", stage)
        end = time.monotonic() + grace_s
        seen: dict[int, str] = {}
        while True:
            for r in range(world):
                if r not in seen and store.check([f"{_FAILED}{r}"]):
                    seen[r] = store.get(f"{_FAILED}{r}").decode()
            if len(seen) == world or time.monotonic() > end:
                return seen
            time.sleep(0.2)
    except Exception:  # noqa: BLE001 - rank 0 (holding the store) is gone: nobody to compare with
        return None
