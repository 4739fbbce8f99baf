"""distgan's one logging channel: ``logging.getLogger("distgan")`` and its children.

    from distgan.log import get_logger
    log = get_logger("launch")          # the "distgan.launch" logger
    log.info("2 local ranks")           # console: "[launch] 2 local ranks" (stdout)
    log.warning("disk almost full")     # console: "[launch] warning: disk almost full" (stderr)

Library modules only log; they never add handlers. Entry points (the
``__main__`` of every command, the per-rank training worker) call
:func:`setup_console` once: informational lines go to stdout, warnings and
errors to stderr, and only on rank 0, so an N-rank job prints each line once.
:func:`add_file` adds a per-rank file (``RUN_DIR/logs/rankR.log``) that keeps
everything that rank logged, console or not.

Without :func:`setup_console` (distgan used as a library) Python's default
applies: warnings and errors reach stderr, informational lines are dropped
unless the application configures logging itself. Records always propagate
to the root logger too (an application's own handlers and pytest's ``caplog``
see them); an entry point therefore configures ``distgan``, never the root.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = "distgan"
_CONSOLE_TAG = "_distgan_console"
_FILE_TAG = "_distgan_file"


def get_logger(component: str = "") -> logging.Logger:
    """The ``distgan`` logger, or its child ``distgan.COMPONENT``."""
    return logging.getLogger(f"{ROOT}.{component}" if component else ROOT)


class _ConsoleFormatter(logging.Formatter):
    """``[component] message``; warnings and errors say so (``[launch] warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name[len(ROOT) + 1:] if record.name.startswith(ROOT + ".") else record.name
        tag = name.split(".")[0] if name != ROOT else "distgan"
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"[{tag}] {level}{text}"


class _ConsoleHandler(logging.Handler):
    """Info to stdout (or stderr with ``info_to_stderr``), warnings and errors to stderr, looked
    up at each record (so redirected or captured streams are honoured)."""

    def __init__(self, level: int, info_to_stderr: bool = False):
        super().__init__(level)
        self.info_to_stderr = info_to_stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            to_stderr = self.info_to_stderr or record.levelno >= logging.WARNING
            stream = sys.stderr if to_stderr else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never end the program
            self.handleError(record)


def setup_console(rank: int = 0, level: int = logging.INFO, info_to_stderr: bool = False) -> logging.Logger:
    """Give the ``distgan`` logger its console handler (rank 0 only); idempotent.

    ``info_to_stderr`` is for commands whose stdout is their machine-readable
    result (JSON lines): progress lines then go to stderr with the warnings.
    """
    root = get_logger()
    root.setLevel(min(level, root.level or level))
    for h in list(root.handlers):
        if getattr(h, _CONSOLE_TAG, False):
            root.removeHandler(h)
    if rank == 0:
        handler = _ConsoleHandler(level, info_to_stderr)
        handler.setFormatter(_ConsoleFormatter())
        setattr(handler, _CONSOLE_TAG, True)
        root.addHandler(handler)
    return root


def add_file(path: str | Path, level: int = logging.INFO) -> logging.Handler:
    """Append everything the ``distgan`` logger records to ``path`` (one file per rank).

    A second call for the same file replaces the first handler; call
    :func:`remove_file` with the returned handler when the run ends.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = get_logger()
    for h in list(root.handlers):
        if getattr(h, _FILE_TAG, None) == str(path):
            remove_file(h)
    handler = logging.FileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    setattr(handler, _FILE_TAG, str(path))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler


def remove_file(handler: logging.Handler) -> None:
    """Detach and close a handler returned by :func:`add_file`."""
    get_logger().removeHandler(handler)
    handler.close()
