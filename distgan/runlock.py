"""One owner per run directory: the training process holds ``RUN_DIR/train.lock``.

    with hold(run_dir):                 # rank 0 of a training run, for as long as it trains
        train(cfg, run_dir)
    ensure_free(run_dir)                # a launcher, before it writes anything into run_dir
    owner(run_dir)                      # {"host", "pid", "job_id", ...} of a live owner, or None

Two trainings of one run directory would write checkpoints from two diverging
histories and flip ``latest`` between them, so a second one stops at once with
a :class:`RunDirBusy` naming the owner (host, pid, Slurm job) and how to stop it.
Readers (``sample``, ``metrics``, ``export``, ``report``) never take the lock.

The primitive is a POSIX record lock (``fcntl.lockf``, i.e. ``F_SETLK`` on the
whole file), chosen over ``flock`` for three reasons:

- it works across the nodes of a shared file system: NFS carries POSIX locks
  natively (NLM for v3, the protocol itself for v4; Linux even emulates ``flock``
  with them there), and Lustre does when mounted with ``-o flock``
  (``localflock`` makes every lock node-local: then two nodes are not excluded);
- the kernel (or the NFS server, when a client's lease ends, 90 s by default
  for v4) releases it when its process dies, however it dies: a dead owner
  never needs a human to delete a file;
- it is not inherited by ``fork``: a data-loader worker that outlives its rank
  for a few seconds does not keep the run locked.

Its one trap: a process loses its POSIX locks when it closes *any* descriptor
of the file. This module therefore keeps one descriptor per locked file and
process, reads the owner's record through it, and never probes a lock this
process holds (:func:`owner` answers from memory then).

The file holds a JSON record of the owner (host, Slurm node, pid, launcher pid,
job id, start time). A clean release empties it, so a record found by the next
owner is that of one that died: it is taken over with a note naming it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from distgan.errors import UserError
from distgan.log import get_logger
from distgan.rundir import lock_path, slurm_job_id

log = get_logger("run")

# a new owner writes its record just after taking the lock: a reader that sees the lock
# held with no record, or with a dead owner's record, looks again for this long
_RECORD_WAIT_S = 2.0


class RunDirBusy(UserError):
    """The run directory is owned by a live training process; the message names it."""


class _Held:
    """This process's lock on one run directory (re-entrant: a count of holders)."""

    def __init__(self, fd: int, record: dict[str, Any]) -> None:
        self.fd, self.record, self.count = fd, record, 1


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def _key(run_dir: str | Path) -> str:
    return os.path.realpath(lock_path(run_dir))


def _own_record() -> dict[str, Any]:
    rec: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    if os.environ.get("SLURMD_NODENAME"):
        rec["node"] = os.environ["SLURMD_NODENAME"]
    job = slurm_job_id()
    if job:
        rec["job_id"] = job
    return rec


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def _read_fd(fd: int) -> dict[str, Any] | None:
    return _parse(os.pread(fd, 1 << 16, 0))


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(rec: dict[str, Any] | None) -> str:
    """``pid 123 on host h (node n, Slurm job 45), since 2026-12-06 13:20:01``."""
    if not rec:
        return "a process that has not written its record yet"
    text = f"pid {rec.get('pid', '?')} on host {rec.get('host', '?')}"
    extra = [f"node {rec['node']}"] if rec.get("node") else []
    if rec.get("job_id"):
        extra.append(f"Slurm job {rec['job_id']}")
    if extra:
        text += f" ({', '.join(extra)})"
    if isinstance(rec.get("started"), (int, float)):
        text += ", since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec["started"]))
    return text


def _how_to_stop(rec: dict[str, Any] | None) -> str:
    if rec and rec.get("job_id"):
        return f"stop it with `scancel {rec['job_id']}` (it checkpoints first), or wait for it to end"
    if rec and rec.get("pid"):
        pid = rec.get("launcher_pid") or rec["pid"]
        return (f"stop it with `kill {pid}` on {rec.get('host', 'its host')} (it checkpoints first), "
                "or wait for it to end")
    return "wait for it to end"


def _busy(run_dir: str | Path, rec: dict[str, Any] | None) -> RunDirBusy:
    return RunDirBusy(f"run directory {run_dir} is in use by a training run: {describe(rec)}; {_how_to_stop(rec)}. "
                      "Two trainings of one run directory would write diverging checkpoints; reading it "
                      "(sample, metrics, export) needs no lock")


def _try_lock(fd: int, path: Path) -> bool:
    """Take the lock without waiting; False when another process holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise UserError(f"{path}: the file system refuses file locks ({errno.errorcode[e.errno]}); on NFS "
                            "the lock daemon (rpc.statd/lockd, or NFSv4) must run, on Lustre mount with "
                            "-o flock. distgan needs the lock so that two trainings of one run directory "
                            "cannot overlap") from e
        raise
    return True


def acquire(run_dir: str | Path, **extra: Any) -> dict[str, Any]:
    """Make this process the run directory's owner (again, if it already is); returns its record.

    ``extra`` fields join the record of a new hold (the local launcher's ``launcher_pid``:
    the process to signal to stop the run). Raises :class:`RunDirBusy` when another live
    process owns it.
    """
    key = _key(run_dir)
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return held.record
        path = Path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd, path):
                raise _busy(run_dir, _settled_record(path))
            previous = _read_fd(fd)
            if previous:  # a clean release empties the record: its owner died holding it
                log.info("taking over run directory %s from its previous owner, %s, which is no longer "
                         "running", run_dir, describe(previous))
            record = {**_own_record(), **extra}
            data = json.dumps(record).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing drops the lock too, if it was taken
            raise
        _held[key] = _Held(fd, record)
        return record


def release(run_dir: str | Path) -> None:
    """Give up one hold; the last one empties the record and unlocks."""
    key = _key(run_dir)
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[key]
        try:
            os.ftruncate(held.fd, 0)  # empty: the next owner need not report a dead predecessor
        except OSError:
            pass  # a file system that went away: the lock goes with the descriptor below
        os.close(held.fd)


@contextmanager
def hold(run_dir: str | Path, **extra: Any) -> Iterator[dict[str, Any]]:
    """Own the run directory for the duration of the block (see :func:`acquire`)."""
    record = acquire(run_dir, **extra)
    try:
        yield record
    finally:
        release(run_dir)


def _settled_record(path: Path) -> dict[str, Any] | None:
    """The record of the process holding ``path``'s lock, allowing it a moment to write it."""
    end = time.monotonic() + _RECORD_WAIT_S
    while True:
        try:
            rec = _parse(path.read_bytes())
        except OSError:
            rec = None
        same_host = rec is not None and rec.get("host") == socket.gethostname()
        if rec and not (same_host and not _pid_alive(rec.get("pid"))):
            return rec
        if time.monotonic() > end:
            return rec
        time.sleep(0.05)


def owner(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of the live process that owns ``run_dir``, or None when nobody does.

    Never takes the lock away from anyone, and in the owning process answers
    from memory (probing its own lock would release it).
    """
    key = _key(run_dir)
    with _guard:
        held = _held.get(key)
        if held is not None:
            return held.record
        path = Path(key)
        if not path.is_file():
            return None
        fd = os.open(path, os.O_RDWR)
        try:
            if _try_lock(fd, path):
                return None  # nobody holds it (closing the descriptor below drops our probe)
        finally:
            os.close(fd)
    return _settled_record(path) or {}


def ensure_free(run_dir: str | Path) -> None:
    """Raise :class:`RunDirBusy` when a live process owns ``run_dir`` (a launcher's early check)."""
    rec = owner(run_dir)
    if rec is not None and _key(run_dir) not in _held:
        raise _busy(run_dir, rec)
