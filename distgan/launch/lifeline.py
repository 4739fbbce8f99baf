"""A rank started by the local launcher never outlives it.

    lifeline = Lifeline.start(launcher_pid, grace_s=60, on_stop=..., on_timeout=...)   # in the rank
    ...
    lifeline.reason          # "launcher (pid 1234) died" once it has, else None

The local launcher starts every rank in a session of its own (so that a Ctrl-C
reaches each rank once, through the launcher), which also means that nothing
ends the ranks when the launcher itself is killed: a closed terminal, a lost
login-node session or the OOM killer would leave them training on, still
writing checkpoints into a run directory that the next launch resumes.

So a rank asks the kernel for a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, Linux), and a watcher thread also compares the
parent pid with the launcher's (it catches a launcher that died before the
``prctl``, and is the only mechanism elsewhere). On that signal the rank does
what a SIGTERM asks of a training rank: checkpoint at the next step boundary,
then exit (``status.json`` names the reason). If it has not exited
``grace_s`` seconds later (a stuck collective, a very slow file system), it
exits anyway; the previous checkpoint is intact, writes being atomic.

The launcher passes its pid on the rank's command line (``--launcher-pid``),
not in the environment, which any process the rank starts would inherit.
Under Slurm the step's tasks are ended by ``slurmstepd`` itself; there no
launcher pid is given and nothing is armed.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from distgan.launch.common import EXIT_FAILED, EXIT_STOPPED
from distgan.log import get_logger

_PR_SET_PDEATHSIG = 1
# a signal of its own: SIGTERM and SIGUSR1/2 may come from a site's scheduler with other meanings
DEATH_SIGNAL = signal.SIGRTMIN + 2 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2
_POLL_S = 0.5

log = get_logger("launch")


def _ask_kernel(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig): the kernel signals us when our parent exits; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Lifeline:
    """Stops this rank when its launcher (``launcher_pid``) dies; see the module docstring.

    ``on_stop(reason)`` runs when the launcher's death is noticed before training
    has installed its stop handler (nothing to checkpoint yet); ``on_timeout(reason)``
    just before a forced exit after ``grace_s``.
    """

    def __init__(self, launcher_pid: int, grace_s: float, on_stop: Callable[[str], None] | None = None,
                 on_timeout: Callable[[str], None] | None = None) -> None:
        self.launcher_pid, self.grace_s = launcher_pid, grace_s
        self.on_stop, self.on_timeout = on_stop, on_timeout
        self.reason: str | None = None
        self._fired = threading.Event()

    @classmethod
    def start(cls, launcher_pid: int, grace_s: float, **hooks: Any) -> Lifeline | None:
        """Armed for a rank of the local launcher (``launcher_pid`` > 0) in the main thread, else None."""
        if launcher_pid <= 0 or threading.current_thread() is not threading.main_thread():
            return None  # signal handlers belong to the main thread: a rank's entry point runs there
        lifeline = cls(launcher_pid, grace_s, **hooks)
        lifeline.arm()
        return lifeline

    def arm(self) -> None:
        """Install the handler, ask the kernel for the signal, start the watcher (main thread only)."""
        signal.signal(DEATH_SIGNAL, self._handler)
        _ask_kernel(DEATH_SIGNAL)
        threading.Thread(target=self._watch, name="distgan-lifeline", daemon=True).start()
        if os.getppid() != self.launcher_pid:  # it died before the kernel was asked
            os.kill(os.getpid(), DEATH_SIGNAL)

    def _watch(self) -> None:
        while not self._fired.is_set():
            if os.getppid() != self.launcher_pid:
                os.kill(os.getpid(), DEATH_SIGNAL)
                return
            time.sleep(_POLL_S)

    def _handler(self, signum: int, frame: Any) -> None:
        if self._fired.is_set():
            return
        self._fired.set()
        self.reason = f"launcher (pid {self.launcher_pid}) died"
        log.warning("%s: checkpointing at the next step boundary, then exiting (at most %g s)",
                    self.reason, self.grace_s)
        threading.Thread(target=self._deadline, name="distgan-lifeline-deadline", daemon=True).start()
        stop = signal.getsignal(signal.SIGTERM)
        if callable(stop):  # training runs: its stop flag checkpoints at the next step boundary
            stop(signal.SIGTERM, frame)
            return
        if self.on_stop is not None:  # still setting up: nothing to save
            self.on_stop(self.reason)
        raise SystemExit(EXIT_STOPPED)

    def _deadline(self) -> None:
        time.sleep(self.grace_s)
        reason = f"{self.reason}; no checkpoint within {self.grace_s:g} s, exited without one"
        log.error("%s", reason)
        if self.on_timeout is not None:
            try:
                self.on_timeout(reason)
            except Exception:  # noqa: BLE001 - the exit below must happen regardless
                pass
        os._exit(EXIT_FAILED)
