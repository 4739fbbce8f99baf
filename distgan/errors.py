"""User errors: failures whose message says everything the user needs.

Every command-line tool prints a :class:`UserError` as one ``error: ...`` line
and exits non-zero, without a traceback; any other exception is a bug and
keeps its traceback. Error classes of the subsystems (config, shards, launch,
sampling, checkpoints, ...) derive from it, so one ``except UserError`` in a
CLI covers them all:

    try:
        ...
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
"""
from __future__ import annotations

import errno

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A failure caused by input, environment or data, explained by its message alone."""


def describe_os_error(e: OSError) -> str:
    """``'No space left on device (ENOSPC)'`` for an OSError, its text otherwise."""
    name = errno.errorcode.get(e.errno or 0)
    return f"{e.strerror} ({name})" if e.strerror and name else str(e)


def load_failure(e: BaseException) -> str:
    """One line on why loading a checkpoint failed (torch's weights-only messages run to many
    lines, the first of which suggests loading the file unsafely)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    refused = [ln for ln in lines if "Unsupported global" in ln or "Unsupported operand" in ln]
    why = (refused or lines or [""])[0][:240]
    if refused:
        why = "refused by the weights-only loader, nothing was executed: " + why
    return f"{type(e).__name__}: {why}"
