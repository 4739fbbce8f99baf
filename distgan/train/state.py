"""Full-state checkpoints in ``RUN_DIR/checkpoints/``: atomic, verified, resumable.

    ckpt = Checkpointer(run_dir, cfg, models, phases, ema, loader, rank=rank, world=world, barrier=...)
    step = ckpt.resume()    # every rank: the newest readable checkpoint (or step 0), RNG streams seeded
    ckpt.save(step)         # every rank together: rank 0 writes the file, ZeRO ranks their shards

:class:`Checkpointer` is the one owner of what a checkpoint holds: G and D,
both optimizers (or their ZeRO shards), schedules, loss scalers, EMA, the data
position and every rank's RNG state (it is at the end of this module); the
functions before it write and read the files.

Files are ``step_00000100.pt`` plus a ``latest`` text file naming the newest
one (and ``best`` when a metric picks one). Each file holds only tensors and
plain Python data, loaded with ``weights_only=True``: no pickled code.

Resuming never loses a run's history silently. A file whose load fails
(truncated, corrupt) is skipped with a warning and the previous checkpoint is
used; but when checkpoints exist and none loads, or ``latest`` names a file
that is gone, :func:`load_latest` raises :class:`CheckpointError` naming every
file and its failure. Starting again from step 0 (or from the newest readable
file when ``latest`` is dangling) is an explicit choice: ``train.restart_if_unreadable=true``.
A failed checkpoint write (disk full, quota, I/O error) raises
:class:`CheckpointError` naming the file, the cause and the newest intact step.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from distgan import dist
from distgan.config import Config, config_hash
from distgan.errors import UserError, describe_os_error, load_failure
from distgan.fsutil import atomic_open, atomic_write_text
from distgan.log import get_logger
from distgan.rundir import ckpt_dir, ckpt_path, list_checkpoints, read_pointer
from distgan.train import stages
from distgan.train.engine import GanModules, load_zero_shard, zero_shard

if TYPE_CHECKING:  # annotations only: phases.py and ema.py need not be imported to save or load
    from distgan.train.ema import EMA
    from distgan.train.phases import Phase

log = get_logger("train")

RESTART_KEY = "train.restart_if_unreadable"


class CheckpointError(UserError):
    """A run's checkpoints cannot be used or written; the message names the files and what to do."""


# ---- seeds. G and D are initialised from ``train.seed`` itself on every rank (identical
# replicas); the training noise then comes from one seed per rank derived below. The
# strides are primes far apart, so the derived seeds of nearby runs, ranks and resume
# steps do not coincide. Changing a value changes every run's noise: resumed runs would
# no longer continue bitwise.
RANK_STRIDE = 7919  # seed s, rank r -> s * 7919 + r: distinct per rank, reproducible per run
RESEED_STRIDE = 1_000_003  # resume at another world size: the rank seed * 1_000_003 + step
DIVERSITY_OFFSET = 4242  # the health monitor's own noise generator: seed + 4242


def rank_seed(seed: int, rank: int) -> int:
    """Seed of this rank's training RNG streams on a fresh run: other noise per rank, the same per run."""
    return seed * RANK_STRIDE + rank


def reseed(seed: int, rank: int, step: int) -> int:
    """Seed for a run resumed at ``step`` with another world size: the saved per-rank streams
    cannot all continue, so every rank starts a fresh stream, distinct per rank and resume step."""
    return rank_seed(seed, rank) * RESEED_STRIDE + step


def diversity_seed(seed: int) -> int:
    """Seed of the private generator behind the health monitor's diversity check (kept apart
    from the training streams, so turning the check on or off leaves training bitwise the same)."""
    return seed + DIVERSITY_OFFSET


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

    Only rank 0 writes into the checkpoint directory itself (ZeRO shards go to
    subdirectories), one write at a time, so no temp file there is in use now.
    """
    for p in d.glob(".*.tmp") if d.is_dir() else []:
        p.unlink(missing_ok=True)


def _write_bytes(path: Path, buf: io.BytesIO) -> None:
    with atomic_open(path, "wb") as f:
        f.write(buf.getbuffer())


def _write_or_explain(run_dir: str | Path, path: Path, write: Any, target: Path | None = None) -> None:
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
    _write_or_explain(run_dir, path, lambda: _write_bytes(path, buf))
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


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint file with ``weights_only=True``; CheckpointError naming the file when it fails.

    A file whose pickle would build anything but tensors and plain data (e.g.
    call a function) is refused by the weights-only unpickler before anything runs.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, refused global, missing file, ...
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({load_failure(e)})") from e


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


class Checkpointer:
    """Save and resume one run's full training state; every method is called on all ranks together.

    Rank 0 writes the step file (models, optimizers, schedules, scalers, EMA,
    data position, every rank's RNG state); with ZeRO each rank first writes
    its optimizer partition. Loading falls back past unreadable files and
    pruning keeps ``train.keep_ckpts`` (see :func:`save_checkpoint`,
    :func:`load_latest`).
    """

    def __init__(self, run_dir: str | Path, cfg: Config, models: GanModules, phases: Sequence[Phase],
                 ema: EMA | None, loader: Any, *, rank: int, world: int, barrier: Callable[[], None]):
        self.run_dir, self.cfg, self.models, self.phases = Path(run_dir), cfg, models, list(phases)
        self.ema, self.loader, self.rank, self.world, self.barrier = ema, loader, rank, world, barrier

    def _phase_keys(self) -> list[tuple[Phase, str]]:
        return [(ph, ph.name.lower()) for ph in self.phases]  # "d", "g": the key suffixes in the file

    def has(self, step: int) -> bool:
        """Whether the step-``step`` checkpoint exists, decided by rank 0 for all ranks (a collective)."""
        exists = ckpt_path(self.run_dir, step).is_file() if self.rank == 0 else None
        return bool(dist.broadcast_object(exists))

    def save(self, step: int) -> None:
        """Checkpoint ``step``: ZeRO shards by their ranks, then the full state by rank 0."""
        stages.enter(f"checkpoint at step {step}")
        rngs = dist.gather_objects(rng_state())
        m, tc = self.models, self.cfg.train
        if m.is_deepspeed:  # each rank writes its partition before rank 0 publishes the step
            save_shard(self.run_dir, step, self.rank, {"d": zero_shard(m.D), "g": zero_shard(m.G)})
            self.barrier()
        if self.rank == 0:
            st: dict[str, Any] = {"step": step, "G": m.G_raw.state_dict(), "D": m.D_raw.state_dict(),
                                  "config_hash": config_hash(self.cfg), "rng": rngs, "world_size": self.world,
                                  "engine": tc.engine}
            for ph, key in self._phase_keys():
                st[f"opt_{key}"] = {"zero_shards": shard_dir(self.run_dir, step).name} if m.is_deepspeed \
                    else ph.opt.state_dict()
                st[f"sched_{key}"] = ph.sched.state_dict()
                st[f"scaler_{key}"] = ph.scaler.state_dict()
            if self.ema is not None:
                st["ema"] = self.ema.state_dict()
            st["data"] = self.loader.state_dict()  # ranks run in lockstep: rank 0's position
            save_checkpoint(self.run_dir, step, st, keep=tc.keep_ckpts)
        self.barrier()

    def resume(self) -> int:
        """Load the newest readable checkpoint and seed this rank's RNG; the step to continue from (0: none).

        An unusable checkpoint set stops the run unless ``train.restart_if_unreadable``
        says start over. A checkpoint of the other engine is refused (its optimizer
        states are in that engine's format); one of another world size loads, but
        its ranks' RNG streams cannot continue, so every rank gets a fresh one.
        """
        tc = self.cfg.train
        state = load_latest(self.run_dir, map_location="cpu", restart_if_unreadable=tc.restart_if_unreadable)
        if state is None:
            seed_all(rank_seed(tc.seed, self.rank))
            return 0
        if state["config_hash"] != config_hash(self.cfg):
            log.info("note: config differs from the checkpoint's; continuing with the new config")
        if state.get("engine", "accelerate") != tc.engine:
            raise ValueError(f"the checkpoint in {self.run_dir} was written with train.engine={state.get('engine')} "
                             f"(optimizer states in its format); resume with that engine, not {tc.engine}")
        step = int(state["step"])
        self.models.G_raw.load_state_dict(state["G"])
        self.models.D_raw.load_state_dict(state["D"])
        for ph, key in self._phase_keys():
            if self.models.is_deepspeed:
                load_zero_shard(ph.model, load_shard(self.run_dir, step, self.rank, key, state, self.world))
            else:
                ph.opt.load_state_dict(state[f"opt_{key}"])
            ph.sched.load_state_dict(state[f"sched_{key}"])
            ph.sched.base_lrs = [tc.lr_d if key == "d" else tc.lr_g] * len(ph.sched.base_lrs)  # config wins
            ph.scaler.load_state_dict(state[f"scaler_{key}"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        if "data" in state:  # continue the same sample order mid-epoch
            self.loader.load_state_dict(state["data"])
        if int(state.get("world_size", 0)) == self.world:
            set_rng_state(state["rng"][self.rank])
        else:
            log.info(f"note: checkpoint has world size {state.get('world_size')}, now {self.world}: new RNG streams")
            seed_all(reseed(tc.seed, self.rank, step))
        log.info(f"resumed from step {step} of {tc.steps}")
        return step
