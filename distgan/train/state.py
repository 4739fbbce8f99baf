"""Full-state checkpoints in ``RUN_DIR/checkpoints/``: atomic, verified, resumable.

Files are ``step_00000100.pt`` plus a ``latest`` text file naming the newest
one (and ``best`` when a metric picks one). Each file holds only tensors and
plain Python data, loaded with ``weights_only=True``: no pickled code. A file
whose load fails (truncated, corrupt) is skipped with a warning and the
previous checkpoint is used.
"""
from __future__ import annotations

import io
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distgan.fsutil import atomic_open, atomic_write_text

_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This rank's RNG states (python, numpy, torch, CUDA) as tensors and plain data (weights_only-loadable)."""
    py = random.getstate()
    np_st = np.random.get_state()
    st = {"python": list(py[1]), "python_pos": py[2],
          "numpy": torch.from_numpy(np_st[1].astype(np.int64)), "numpy_pos": int(np_st[2]),
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate((3, tuple(st["python"]), st["python_pos"]))
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def ckpt_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


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


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as the step-``step`` checkpoint, point ``latest`` at it, prune old ones."""
    path = ckpt_path(run_dir, step)
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_open(path, "wb") as f:
        f.write(buf.getbuffer())
    atomic_write_text(ckpt_dir(run_dir) / "latest", path.name + "\n")
    protected = {_read_pointer(run_dir, "best")}
    for s, p in list_checkpoints(run_dir)[:-keep]:
        if p.name not in protected:
            p.unlink(missing_ok=True)
            _remove_shards(shard_dir(run_dir, s))
    return path


# ---- ZeRO optimizer shards: one file per rank beside the step checkpoint. They are
# written (and waited for) before rank 0 writes the step file and moves ``latest``,
# so ``latest`` never names a step whose shards are incomplete.

def shard_dir(run_dir: str | Path, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step_{step:08d}.zero"


def save_shard(run_dir: str | Path, step: int, rank: int, state: dict[str, Any]) -> Path:
    """Write this rank's optimizer partition for step ``step`` atomically."""
    path = shard_dir(run_dir, step) / f"rank{rank:05d}.pt"
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_open(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


def load_shard(run_dir: str | Path, step: int, rank: int, key: str, state: dict[str, Any],
               world_size: int) -> dict[str, Any]:
    """This rank's ``key`` ("d"/"g") optimizer partition of the step-``step`` checkpoint."""
    saved_world = int(state.get("world_size", 0))
    if saved_world != world_size:
        raise RuntimeError(f"checkpoint step {step} holds ZeRO optimizer shards for {saved_world} ranks; "
                           f"this run has {world_size}. Resume with the same number of processes")
    path = shard_dir(run_dir, step) / f"rank{rank:05d}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"ZeRO optimizer shard {path} is missing (checkpoint step {step})")
    return load_file(path)[key]


def _remove_shards(d: Path) -> None:
    if d.is_dir():
        for f in d.iterdir():
            f.unlink(missing_ok=True)
        d.rmdir()


def mark_best(run_dir: str | Path, step: int) -> None:
    """Point ``checkpoints/best`` at the step-``step`` checkpoint (kept from pruning)."""
    atomic_write_text(ckpt_dir(run_dir) / "best", ckpt_path(run_dir, step).name + "\n")


def _read_pointer(run_dir: str | Path, name: str) -> str | None:
    p = ckpt_dir(run_dir) / name
    return p.read_text().strip() if p.is_file() else None


def resolve_checkpoint(run_dir: str | Path, which: str | int = "latest") -> Path:
    """Path of checkpoint ``latest``, ``best`` or a step number; clear error listing what exists."""
    available = list_checkpoints(run_dir)
    names = ", ".join(["latest"] + (["best"] if _read_pointer(run_dir, "best") else [])
                      + [str(s) for s, _ in available]) if available else "none"
    if str(which) in ("latest", "best"):
        name = _read_pointer(run_dir, str(which))
        if name and (ckpt_dir(run_dir) / name).is_file():
            return ckpt_dir(run_dir) / name
        if which == "latest" and available:
            return available[-1][1]
    else:
        try:
            p = ckpt_path(run_dir, int(which))
        except ValueError:
            p = None
        if p is not None and p.is_file():
            return p
    raise FileNotFoundError(f"checkpoint '{which}' not found in {ckpt_dir(run_dir)}; available: {names}")


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint file with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Newest loadable checkpoint (falling back past corrupt ones, with a warning), or None."""
    candidates = [p for _, p in reversed(list_checkpoints(run_dir))]
    latest = _read_pointer(run_dir, "latest")
    if latest:  # the pointer wins when it names a file; the glob order is the fallback
        candidates.sort(key=lambda p: p.name != latest)
    for p in candidates:
        try:
            return load_file(p, map_location)
        except Exception as e:  # truncated zip, bad pickle, ...: fall back to the previous one
            warnings.warn(f"checkpoint {p} is unreadable ({type(e).__name__}: {e}); "
                          "falling back to the previous checkpoint", stacklevel=2)
    return None
