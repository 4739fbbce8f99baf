"""Process-tree helpers for the kill tests, read from /proc (Linux).

    tree = descendants(launcher.pid)     # the ranks and their data-loader workers
    kill_all([launcher.pid, *tree])      # SIGKILL to every process (and its group)
    assert wait_gone(tree, 15) == []     # none survives
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of ``pid``, None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may contain spaces and parentheses
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has exited: it only waits to be reaped)."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z":
                children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_all(pids: list[int]) -> None:
    """SIGKILL every process in ``pids`` and every process group they lead."""
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait up to ``timeout_s`` for every process in ``pids`` to end; returns those still alive."""
    end = time.monotonic() + timeout_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def running_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (e.g. a run directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if text in cmdline and alive(int(entry)):
                found.append(int(entry))
    return found
