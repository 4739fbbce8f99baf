"""User errors: failures whose message says everything the user needs.

Every command-line tool prints a :class:`UserError` as one ``error: ...`` line
and exits non-zero, without a traceback; any other exception is a bug and
keeps its traceback. A reader that goes away (``... | head``) ends the command
quietly with the shell's SIGPIPE status, 141. Error classes of the subsystems (config, shards, launch,
sampling, checkpoints, ...) derive from it, so one decorator on a command's
``main`` covers them all:

    @cli_main()                      # UserError -> "error: ..." on stderr, exit EXIT_USER_ERROR
    def main(argv: list[str] | None = None) -> int:
        ...

    return print_error(e, EXIT_FAILED)   # the same line where a command picks another exit code
"""
from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away

Main = TypeVar("Main", bound=Callable[..., int])


class UserError(Exception):
    """A failure caused by input, environment or data, explained by its message alone."""


class ConfigError(UserError, ValueError):
    """A config file or override is wrong; the message names key, value and expectation."""


def print_error(e: BaseException | str, code: int = EXIT_USER_ERROR, prefix: str = "") -> int:
    """Print ``error: {prefix}{e}`` as one line on stderr; return ``code`` (the command's exit status)."""
    print(f"error: {prefix}{e}", file=sys.stderr, flush=True)
    return code


def cli_main(*also: type[BaseException], code: int = EXIT_USER_ERROR) -> Callable[[Main], Main]:
    """Decorate a command's ``main``: a :class:`UserError` it raises (or one of ``also``, for
    commands that report some library errors the same way) becomes :func:`print_error`'s line and
    exit ``code``; anything else keeps its traceback."""
    caught = (UserError, *also)

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except caught as e:
                return print_error(e, code)
            except BrokenPipeError:  # the reader went away (`| head`): nothing left to say to it
                # point stdout at /dev/null, or the interpreter's final flush raises again at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return EXIT_BROKEN_PIPE

        return run  # type: ignore[return-value]

    return wrap


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
