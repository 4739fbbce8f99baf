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
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finished = False
    try:
        yield proc.stdout
        finished = True
    finally:
        if not finished:  # consumer stopped early (or failed): do not wait for a long download
            proc.kill()
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        rc = proc.wait()
    if rc != 0:
        raise OSError(f"command `{cmd}` exited with status {rc}" + (f": {err[-300:]}" if err else ""))


def read_bytes(url: str) -> bytes:
    with open_url(url) as f:
        return f.read()
