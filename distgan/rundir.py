"""The run directory: its layout, its config, its checkpoints, its records and its status.

    RUN_DIR/
      config.yaml          the resolved config the run was started with (CONFIG)
      data_info.json       what G needs to know about the data (DATA_INFO; see distgan.api)
      checkpoints/         step_00000100.pt ... plus ``latest`` and ``best`` pointer files
      logs/                rank{R}.log per rank, launcher output
      samples/             step_00000100.png grids from fixed noise
      tb/                  TensorBoard events
      stats.jsonl          training scalars, one JSON record per line
      metrics.jsonl        metric records, one JSON record per line
      status.json          where the run stands (running / paused / stopped / completed / failed)
      train.lock           held by the training process that owns the run (distgan.runlock)

Every other module asks this one for these paths, so the layout is written
down once. The module stays light (no torch, no training stack): loading a
generator or reading a sweep's results imports it without pulling in training.
Records in the JSON-lines files are appended whole and fsynced; a crash can
still tear the last line, which :func:`read_jsonl` skips.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from distgan.config import Config, load_config
from distgan.errors import UserError
from distgan.fsutil import atomic_write_text

CONFIG = "config.yaml"
DATA_INFO = "data_info.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
SAMPLES = "samples"
TB = "tb"
STATS = "stats.jsonl"
METRICS = "metrics.jsonl"
STATUS = "status.json"
LOCK = "train.lock"
DATA_INFO_VERSION = 1  # format of data_info.json
POINTERS = ("latest", "best")  # text files in checkpoints/ naming a step file

_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointNotFound(UserError, FileNotFoundError):
    """The requested checkpoint does not exist (or the request names none); the message lists what does."""


# ----------------------------------------------------------------------------- paths and config

def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def logs_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOGS


def rank_log(run_dir: str | Path, rank: int) -> Path:
    """The per-rank log file the worker writes (``logs/rank{R}.log``)."""
    return logs_dir(run_dir) / f"rank{rank}.log"


def lock_path(run_dir: str | Path) -> Path:
    """The run's ownership lock (``train.lock``; :mod:`distgan.runlock` holds it)."""
    return Path(run_dir) / LOCK


def samples_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / SAMPLES


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds a run's ``config.yaml``."""
    return config_path(path).is_file()


def write_data_info(run_dir: str | Path, info: Any, normalize: str, mean: Sequence[float],
                    std: Sequence[float]) -> Path:
    """Record what G needs to know about the data in ``RUN_DIR/data_info.json`` (atomic).

    ``info`` is the :class:`distgan.models.DataInfo` the trainer built the models
    with; every field of it is stored (so new fields survive), plus the pixel
    normalisation needed to turn G's output back into 0-255 images.
    """
    record = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(info)
    record.update(normalize=normalize, mean=[float(m) for m in mean], std=[float(s) for s in std],
                  format_version=DATA_INFO_VERSION)
    path = Path(run_dir) / DATA_INFO
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def read_config(run_dir: str | Path) -> Config:
    """The run's resolved config; FileNotFoundError when ``run_dir`` is no run directory,
    ConfigError naming the file when it cannot be read (bad YAML, a key this version lacks)."""
    path = config_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run directory: {path} does not exist")
    return load_config(path)


# ----------------------------------------------------------------------------- checkpoints

def ckpt_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def ckpt_path(run_dir: str | Path, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every step checkpoint, oldest first."""
    d = ckpt_dir(run_dir)
    found = []
    for p in d.glob("step_*.pt") if d.is_dir() else []:
        m = _STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def read_pointer(run_dir: str | Path, name: str) -> str | None:
    """The file name a pointer (``latest``, ``best``) names, or None when the pointer is absent."""
    p = ckpt_dir(run_dir) / name
    return p.read_text().strip() if p.is_file() else None


def mark_best(run_dir: str | Path, step: int) -> None:
    """Point ``checkpoints/best`` at the step-``step`` checkpoint (kept from pruning)."""
    atomic_write_text(ckpt_dir(run_dir) / "best", ckpt_path(run_dir, step).name + "\n")


def available_checkpoints(run_dir: str | Path) -> list[str]:
    """Names :func:`resolve_checkpoint` accepts for this run: latest, best (if marked) and step numbers."""
    steps = [str(s) for s, _ in list_checkpoints(run_dir)]
    if not steps:
        return []
    return ["latest"] + (["best"] if (ckpt_dir(run_dir) / "best").is_file() else []) + steps


def resolve_checkpoint(run_dir: str | Path, which: str | int = "latest") -> Path:
    """Path of checkpoint ``latest``, ``best`` or a step number in ``RUN_DIR/checkpoints``.

    ``latest`` is the file its pointer names, or the highest step when the
    pointer is absent or names a file that is gone; ``best`` is only what its
    pointer names. Raises :class:`CheckpointNotFound` listing what is available.
    """
    which = str(which).strip()
    path: Path | None = None
    if which in POINTERS:
        name = read_pointer(run_dir, which)
        if name and (ckpt_dir(run_dir) / name).is_file():
            path = ckpt_dir(run_dir) / name
        elif which == "latest" and (found := list_checkpoints(run_dir)):
            path = found[-1][1]
    elif which.isdigit():
        path = ckpt_path(run_dir, int(which))
    else:
        raise CheckpointNotFound(f"checkpoint {which!r}: expected latest, best or a step number")
    if path is None or not path.is_file():
        avail = ", ".join(available_checkpoints(run_dir)) or "none"
        raise CheckpointNotFound(f"checkpoint '{which}' not found in {ckpt_dir(run_dir)}; available: {avail}")
    return path


# ----------------------------------------------------------------------------- JSON-lines records

def _parse_lines(lines: Iterable[bytes | str]) -> list[Any]:
    """The records of JSON lines; a line that does not parse (torn by a crash mid-write) is skipped."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def read_jsonl(path: str | Path) -> list[Any]:
    """Every record of a JSON-lines file ([] when it is missing); a line that does not parse (the
    torn last line of a crash mid-write) is skipped."""
    path = Path(path)
    return _parse_lines(path.read_text(errors="replace").splitlines()) if path.is_file() else []


def read_jsonl_since(path: str | Path, offset: int = 0) -> tuple[list[Any], int]:
    """Records of the complete lines after byte ``offset`` and the offset to continue from.

    For a reader that follows a file another process appends to: a last line
    without its newline is still being written and waits for the next call; a
    complete line that does not parse (torn by a crash) is skipped.
    """
    path = Path(path)
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return _parse_lines(data[:end].splitlines()), offset + end


def append_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """Append records, one JSON object per line, in one write, flushed and fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- status.json

def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's status.json as a dict ({} when missing or unreadable)."""
    try:
        return json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return {}


def slurm_job_id() -> str | None:
    """This process's Slurm job (``ARRAY_TASK`` for an array task), or None outside Slurm."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID") or None


def write_status(run_dir: str | Path, state: str, **fields: Any) -> None:
    """Atomically (re)write RUN_DIR/status.json, keeping fields of the previous record but its error and reason.

    Adds the host, the time and the Slurm job id (``JOB_TASK`` for array jobs).
    """
    run_dir = Path(run_dir)
    rec = {k: v for k, v in read_status(run_dir).items() if k not in ("error", "reason")}
    rec.update(state=state, host=socket.gethostname(), time=time.time(), **fields)
    job = slurm_job_id()
    if job:
        rec["job_id"] = job
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / STATUS, json.dumps(rec, indent=1) + "\n")
