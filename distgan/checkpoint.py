"""The checkpoint format, its files, and the one reader every command uses.

    ckpt = read_checkpoint(run_dir, "latest")      # or "best", or a step number
    ckpt.step, ckpt.header["world_size"]           # what the file says of itself
    weights, ema = generator_weights(ckpt)         # G's weights, EMA ones when the run kept them
    state = load_latest(run_dir)                   # resume: the newest loadable file, or None

A checkpoint is one file per step, ``RUN_DIR/checkpoints/step_00000100.pt``,
holding a mapping written with ``torch.save`` and read with
``weights_only=True`` (tensors and plain data only: no pickled code):

- a header: ``step``, ``world_size``, ``engine``, ``config_hash``;
- one entry per *part* of the run, each what that part's ``state_dict()``
  returned (:mod:`distgan.train.parts` lists a training run's parts: ``G``,
  ``D``, ``ema``, ``opt_d``/``opt_g``, ``sched_*``, ``scaler_*``, ``data``, ``rng``).

Parts whose state is split over the ranks (ZeRO optimizer partitions) are
written by each rank into ``step_00000100.zero/rank00000.pt`` before rank 0
writes the step file, whose entry then names that folder. ``latest`` (and
``best``, when a metric picks one) are text files naming a step file.

Resuming never loses a run's history silently. A file whose load fails
(truncated, corrupt) is skipped with a warning and the previous checkpoint is
used; but when checkpoints exist and none loads, or ``latest`` names a file
that is gone, :func:`load_latest` raises :class:`CheckpointError` naming every
file and its failure. Starting again from step 0 (or from the newest readable
file when ``latest`` is dangling) is an explicit choice: ``train.restart_if_unreadable=true``.
A failed write (disk full, quota, I/O error) raises :class:`CheckpointError`
naming the file, the cause and the newest intact step.

This module knows nothing of training (no model, optimizer or GAN concept): it
stores and finds mappings. Readers (sampling, export, metrics) import it
without the training stack.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from distgan.errors import UserError, describe_os_error, load_failure
from distgan.fsutil import atomic_open, atomic_write_text
from distgan.log import get_logger
from distgan.rundir import (
    available_checkpoints,
    ckpt_dir,
    ckpt_path,
    list_checkpoints,
    read_pointer,
    resolve_checkpoint,
)

log = get_logger("train")

RESTART_KEY = "train.restart_if_unreadable"
HEADER = ("step", "world_size", "engine", "config_hash")  # the fields that are not parts


class CheckpointError(UserError):
    """A run's checkpoints cannot be used or written; the message names the files and what to do."""


@dataclass
class Checkpoint:
    """One loaded checkpoint file: its header and its parts' states."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    @property
    def header(self) -> dict[str, Any]:
        return {k: self.state[k] for k in HEADER if k in self.state}

    @property
    def parts(self) -> dict[str, Any]:
        return {k: v for k, v in self.state.items() if k not in HEADER}

    def has(self, part: str) -> bool:
        return part in self.state and part not in HEADER

    def part(self, name: str) -> Any:
        """The saved state of part ``name``; CheckpointError naming the file and the parts it has."""
        if not self.has(name):
            raise CheckpointError(f"checkpoint {self.path} holds no '{name}' (it holds: "
                                  f"{', '.join(sorted(self.parts)) or 'nothing'})")
        return self.state[name]


# ----------------------------------------------------------------------------- reading

def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint file with ``weights_only=True``; CheckpointError naming the file when it fails.

    A file whose pickle would build anything but tensors and plain data (e.g.
    call a function) is refused by the weights-only unpickler before anything runs.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, refused global, missing file, ...
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({load_failure(e)})") from e


def read_checkpoint(run_dir: str | Path, which: str | int = "latest",
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """The checkpoint ``which`` (``latest``, ``best`` or a step) of ``run_dir``, loaded.

    Raises :class:`~distgan.rundir.CheckpointNotFound` for a name that resolves to
    no file and :class:`CheckpointError` (naming the others) for a file that does not load.
    """
    path = resolve_checkpoint(run_dir, which)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated / corrupt file: name it, suggest another
        raise CheckpointError(f"checkpoint {path} is unreadable ({load_failure(e)}); pick another with "
                              f"--checkpoint (available: {', '.join(available_checkpoints(run_dir))})") from e
    return Checkpoint(path, state)


def generator_weights(ckpt: Checkpoint, ema: bool | None = None) -> tuple[dict[str, torch.Tensor], bool]:
    """G's weights from ``ckpt`` and whether they are the EMA copy.

    ``ema`` None takes the EMA weights when the run kept them, True requires
    them, False takes the raw G.
    """
    use_ema = ckpt.has("ema") if ema is None else bool(ema)
    if use_ema and not ckpt.has("ema"):
        raise CheckpointError(f"checkpoint {ckpt.path} holds no EMA weights (train.ema was off); "
                              "load with ema=False / --no-ema")
    return ckpt.part("ema" if use_ema else "G"), use_ema


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu",
                restart_if_unreadable: bool = False) -> dict[str, Any] | None:
    """Newest loadable checkpoint (falling back past corrupt ones, with a warning), or None when there is none.

    Raises :class:`CheckpointError` when checkpoints exist but none loads, or
    when ``latest`` names a missing file, unless ``restart_if_unreadable``:
    then the newest readable file is used, or None (start over) when none loads.
    """
    candidates = [p for _, p in reversed(list_checkpoints(run_dir))]
    latest = read_pointer(run_dir, "latest")
    if latest and not (ckpt_dir(run_dir) / latest).is_file():
        present = ", ".join(p.name for p in reversed(candidates)) or "no step files"
        if not restart_if_unreadable:
            raise CheckpointError(
                f"{ckpt_dir(run_dir) / 'latest'} names {latest}, which does not exist (present: {present}). "
                "Restore the file, or re-run with "
                f"{RESTART_KEY}=true to resume from the newest readable checkpoint (or start over without one)")
        log.warning(f"checkpoint {latest} named by 'latest' is missing; {RESTART_KEY}=true: "
                    "using the newest readable checkpoint")
    if latest:  # the pointer wins when it names a file; the glob order is the fallback
        candidates.sort(key=lambda p: p.name != latest)
    failures = []
    for p in candidates:
        try:
            return torch.load(p, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, refused pickle, ...: fall back to the previous one
            failures.append(f"{p} ({load_failure(e)})")
            log.warning(f"checkpoint {p} is unreadable ({load_failure(e)}); "
                        "falling back to the previous checkpoint")
    if failures and not restart_if_unreadable:
        raise CheckpointError(
            f"none of the {len(failures)} checkpoint(s) in {ckpt_dir(run_dir)} can be loaded, so the run cannot "
            "resume: " + "; ".join(failures) + ". Nothing was changed. Restore them (e.g. after a file-system "
            f"fault), or re-run with {RESTART_KEY}=true to start again from step 0 (this overwrites and prunes "
            "these files)")
    return None


# ----------------------------------------------------------------------------- writing

def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as the step-``step`` checkpoint, point ``latest`` at it, prune old ones."""
    path = ckpt_path(run_dir, step)
    _remove_stale_temps(ckpt_dir(run_dir))
    buf = io.BytesIO()
    torch.save(state, buf)
    _write_or_explain(run_dir, path, lambda: _write_bytes(path, buf))
    _write_or_explain(run_dir, path, lambda: atomic_write_text(ckpt_dir(run_dir) / "latest", path.name + "\n"),
                      target=ckpt_dir(run_dir) / "latest")
    protected = {read_pointer(run_dir, "best")}
    for s, p in list_checkpoints(run_dir)[:-keep]:
        if p.name not in protected:
            p.unlink(missing_ok=True)
            _remove_shards(shard_dir(run_dir, s))
    return path


def _remove_stale_temps(d: Path) -> None:
    """Delete temp files that a killed write left behind (each as big as a checkpoint).

    Only rank 0 writes into the checkpoint directory itself (per-rank shards go to
    subdirectories), one write at a time, so no temp file there is in use now.
    """
    for p in d.glob(".*.tmp") if d.is_dir() else []:
        p.unlink(missing_ok=True)


def _write_bytes(path: Path, buf: io.BytesIO) -> None:
    with atomic_open(path, "wb") as f:
        f.write(buf.getbuffer())


def _write_or_explain(run_dir: str | Path, path: Path, write: Callable[[], Any], target: Path | None = None) -> None:
    """Run ``write``; turn an OSError into a CheckpointError naming the file, the cause and the newest intact step."""
    try:
        write()
    except OSError as e:
        latest = read_pointer(run_dir, "latest")
        others = [p.name for _, p in list_checkpoints(run_dir) if p.name != path.name]
        if latest in others:
            intact = f"'latest' still names {latest}, the newest intact checkpoint"
        else:
            intact = f"the newest intact checkpoint is {others[-1]}" if others else "no earlier checkpoint exists"
        raise CheckpointError(f"writing checkpoint file {target or path} failed: {describe_os_error(e)}; "
                              f"nothing was replaced: {intact}. Free space (or fix the file system) and re-run "
                              "the same command to resume from there") from e


# ---- per-rank shards: one file per rank beside the step checkpoint. They are written (and
# waited for) before rank 0 writes the step file and moves ``latest``, so ``latest`` never
# names a step whose shards are incomplete.

def shard_dir(run_dir: str | Path, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step_{step:08d}.zero"


def save_shard(run_dir: str | Path, step: int, rank: int, state: dict[str, Any]) -> Path:
    """Write this rank's share of the step-``step`` checkpoint atomically."""
    path = shard_dir(run_dir, step) / f"rank{rank:05d}.pt"
    buf = io.BytesIO()
    torch.save(state, buf)
    _write_or_explain(run_dir, path, lambda: _write_bytes(path, buf))
    return path


def load_shard(run_dir: str | Path, step: int, rank: int) -> dict[str, Any]:
    """This rank's share of the step-``step`` checkpoint (what :func:`save_shard` wrote)."""
    path = shard_dir(run_dir, step) / f"rank{rank:05d}.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint shard {path} is missing (checkpoint step {step})")
    return load_file(path)


def _remove_shards(d: Path) -> None:
    if d.is_dir():
        for f in d.iterdir():
            f.unlink(missing_ok=True)
        d.rmdir()
