"""User errors: failures whose message says everything the user needs.

Every command-line tool prints a :class:`UserError` as one ``error: ...`` line
and exits non-zero, without a traceback; any other exception is a bug and
keeps its traceback. Error classes of the subsystems (config, shards, launch,
sampling, checkpoints, ...) derive from it, so one ``except UserError`` in a
CLI covers them all.

    from distgan.errors import UserError, cli_errors
    def main(argv=None) -> int:
        with cli_errors() as status:
            ...
        return status.code
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A failure caused by input, environment or data, explained by its message alone."""


def describe_os_error(e: OSError) -> str:
    """``'No space left on device (ENOSPC)'`` for an OSError, its text otherwise."""
    import errno

    name = errno.errorcode.get(e.errno or 0)
    return f"{e.strerror} ({name})" if e.strerror and name else str(e)


@dataclass
class CliStatus:
    """Exit code a CLI should return: 0 unless a user error was reported."""

    code: int = 0


@contextmanager
def cli_errors(prog: str = "") -> Iterator[CliStatus]:
    """Report a :class:`UserError` raised inside as one line on stderr; set the exit code to 2."""
    status = CliStatus()
    try:
        yield status
    except UserError as e:
        print(f"{prog + ': ' if prog else ''}error: {e}", file=sys.stderr)
        status.code = EXIT_USER_ERROR
