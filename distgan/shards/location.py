"""Where a shard set lives: a local directory or a ``pipe:`` command template.

``data.shards`` (and every reader in distgan) accepts either

* a directory holding ``manifest.json`` and the ``*.tar`` shards, or
* ``pipe:COMMAND`` where COMMAND contains ``{name}`` and writes the named file
  (``manifest.json`` or a shard) to stdout, as WebDataset users do for object
  stores::

      data.shards='pipe:aws s3 cp s3://bucket/celeba64/{name} -'
      data.shards='pipe:curl -sfL https://host/shards/celeba64/{name}'
      data.shards='pipe:cat /scratch/celeba64/{name}'

The manifest is fetched through the same command, so a pipe source needs no
local copy of anything.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

PIPE = "pipe:"
# shard names from a manifest go into a shell command: allow only plain file names
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def is_pipe(location: str | Path) -> bool:
    return str(location).startswith(PIPE)


def member_url(location: str | Path, name: str) -> str:
    """The URL of file ``name`` of a shard set: a local path or a ``pipe:`` command."""
    if not _SAFE_NAME.match(name):
        raise ValueError(f"shard file name {name!r} is not a plain file name (letters, digits, _ . -)")
    loc = str(location)
    if not is_pipe(loc):
        return str(Path(loc) / name)
    if "{name}" not in loc:
        raise ValueError(f"pipe shard source {loc!r} needs a {{name}} placeholder for the file name, "
                         "e.g. 'pipe:curl -sfL https://host/shards/{name}'")
    return loc.replace("{name}", shlex.quote(name))


@contextmanager
def open_url(url: str) -> Iterator[IO[bytes]]:
    """Open a local path or run a ``pipe:`` command; a failing command raises OSError naming it.

    The command's exit status is checked when the stream is closed, so a
    download that dies half-way is an error, not a silently short shard.
    """
    if not is_pipe(url):
        with open(url, "rb") as f:
            yield f
        return
    cmd = url[len(PIPE):]
    # stderr to a file, not a pipe: a chatty command must never block on a full stderr pipe
    errfile = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=errfile)
    try:
        yield proc.stdout
    except GeneratorExit:  # the consumer stopped early: do not wait for a long download
        _finish(proc, errfile, kill=True)
        raise
    except BaseException as e:
        # a read error is usually the command failing (empty or cut stream): report the command
        rc, err = _finish(proc, errfile, kill=False)
        if rc not in (0, None) and not isinstance(e, KeyboardInterrupt):
            raise OSError(_failed(cmd, rc, err)) from e
        raise
    while proc.stdout.read(1 << 16):  # drain tar padding: closing early would SIGPIPE the command
        pass
    rc, err = _finish(proc, errfile, kill=False)
    if rc != 0:
        raise OSError(_failed(cmd, rc, err))


def _finish(proc: subprocess.Popen, errfile: IO[bytes], kill: bool) -> tuple[int | None, str]:
    if kill:
        proc.kill()
    proc.stdout.close()
    try:
        rc = proc.wait(timeout=None if kill else 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
        proc.wait()
    errfile.seek(0)
    err = errfile.read().decode(errors="replace").strip()
    errfile.close()
    return rc, err


def _failed(cmd: str, rc: int, err: str) -> str:
    return f"command `{cmd}` exited with status {rc}" + (f": {err[-300:]}" if err else "")

