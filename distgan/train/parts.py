"""The parts of a training run that own state, and what each is told when a run resumes.

    parts = run_parts(cfg, models, phases, ema, loader, rank)   # name -> part, in load order
    ckpt = Checkpointer(run_dir, parts, header(cfg), rank=rank, world=world, barrier=...)

A part has ``state_dict()`` and ``load_state_dict(state, ctx)``; ``ctx`` (a
:class:`ResumeContext`) says what changed since the save: world size, engine,
config. Its ``scope`` says whose state the checkpoint keeps:

- ``replicated`` (the default): every rank holds the same state; rank 0's is saved.
- ``gathered``: each rank's own state, saved as a list in rank order (RNG streams).
- ``sharded``: each rank writes its own state into a per-rank file under the
  part's ``shard_key`` (ZeRO optimizer partitions).

A part may also have ``fresh(ctx)``, called when there is no checkpoint to
resume from. :func:`run_parts` is where a training checkpoint's contents are
defined; its names are the entries of the file (see :mod:`distgan.checkpoint`).

The health monitor is a part: its window of log records and the steps it last
warned at continue, so a resumed run warns where an uninterrupted one would. Two
stateful pieces keep their state in the run directory's records instead, on purpose:

- the metrics hook's best value is rebuilt from ``metrics.jsonl`` (the records before
  the resumed step, and that step's own). Step N's metrics are computed after step
  N's checkpoint is written, so that checkpoint cannot hold them; the records can.
- the run logger's position in ``metrics.jsonl`` (the records it forwards to
  trackers) starts at the file's end on every attempt: a checkpoint's older position
  would forward again the records the previous attempt already sent.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from distgan.checkpoint import CheckpointError
from distgan.config import Config, config_hash
from distgan.log import get_logger
from distgan.train.engine import load_zero_shard, zero_shard
from distgan.train.modules import GanModules
from distgan.train.seeds import rank_seed, reseed, rng_state, seed_all, set_rng_state

log = get_logger("train")

REPLICATED, GATHERED, SHARDED = "replicated", "gathered", "sharded"


@dataclass(frozen=True)
class ResumeContext:
    """What a part needs to know about the checkpoint it is restored from, against the run now."""

    run_dir: Path
    step: int
    rank: int
    world_size: int
    saved_world_size: int
    engine: str
    saved_engine: str

    @property
    def world_changed(self) -> bool:
        return self.saved_world_size != self.world_size


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, ctx: ResumeContext) -> None: ...


class TorchState:
    """A torch object that keeps its own state (a module, an optimizer, a loss scaler): saved and loaded as is."""

    def __init__(self, obj: Any):
        self.obj = obj

    def state_dict(self) -> dict[str, Any]:
        return self.obj.state_dict()

    def load_state_dict(self, state: dict[str, Any], ctx: ResumeContext) -> None:
        self.obj.load_state_dict(state)


class ZeroOptimizerState:
    """This rank's ZeRO partition of a DeepSpeed engine's optimizer (needs the saving world size)."""

    scope = SHARDED

    def __init__(self, engine: Any, shard_key: str):
        self.engine, self.shard_key = engine, shard_key

    def state_dict(self) -> dict[str, Any]:
        return zero_shard(self.engine)

    def load_state_dict(self, state: dict[str, Any], ctx: ResumeContext) -> None:
        if ctx.world_changed:
            raise CheckpointError(
                f"the checkpoint of step {ctx.step} in {ctx.run_dir} holds ZeRO optimizer partitions for "
                f"{ctx.saved_world_size} ranks, and this run has {ctx.world_size}. Resume with "
                f"{ctx.saved_world_size} processes (--procs-per-node / --nodes), or run once more with "
                "train.engine=deepspeed on that many to a checkpoint and continue with train.engine=accelerate "
                "(which keeps the whole optimizer state in the checkpoint)")
        load_zero_shard(self.engine, state)


class SchedulerState(TorchState):
    """A learning-rate schedule's position; the configured base rate wins over the saved one."""

    def __init__(self, sched: Any, base_lr: float):
        super().__init__(sched)
        self.base_lr = base_lr

    def load_state_dict(self, state: dict[str, Any], ctx: ResumeContext) -> None:
        self.obj.load_state_dict(state)
        self.obj.base_lrs = [self.base_lr] * len(self.obj.base_lrs)  # a changed train.lr_* applies


class RngStreams:
    """This rank's python, numpy, torch (and CUDA) RNG streams.

    A fresh run seeds every rank from ``train.seed`` (:func:`~distgan.train.seeds.rank_seed`);
    a resume at the saving world size continues each rank's own stream; at another world
    size the saved streams cannot all continue, so every rank starts a fresh one, distinct
    per rank and resume step (:func:`~distgan.train.seeds.reseed`).
    """

    scope = GATHERED

    def __init__(self, seed: int, rank: int):
        self.seed, self.rank = seed, rank

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def fresh(self, ctx: ResumeContext) -> None:
        seed_all(rank_seed(self.seed, self.rank))

    def load_state_dict(self, state: list[dict[str, Any]], ctx: ResumeContext) -> None:
        if not ctx.world_changed:
            set_rng_state(state[self.rank])
            return
        log.info(f"note: checkpoint has world size {ctx.saved_world_size}, now {ctx.world_size}: new RNG streams")
        seed_all(reseed(self.seed, self.rank, ctx.step))


def header(cfg: Config) -> dict[str, Any]:
    """The fields a training checkpoint records besides its parts (step and world size are added on save)."""
    return {"config_hash": config_hash(cfg), "engine": cfg.train.engine}


def run_parts(cfg: Config, models: GanModules, phases: Sequence[Any], ema: Any, loader: Any,
              rank: int, health: Any = None) -> dict[str, Any]:
    """A training run's parts, by the names they have in a checkpoint file, in the order they are restored.

    ``phases`` are the D and G phases (their optimizer, schedule and loss scaler; a phase that
    shares another's, lazy regularisation, adds nothing);
    ``ema`` may be None (then a checkpoint has no ``ema`` entry); ``loader`` is the
    stream loader or the device cache (the data position); ``health`` the health monitor
    (its windows), when the run has one.
    """
    tc = cfg.train
    parts: dict[str, Any] = {"G": TorchState(models.G_raw), "D": TorchState(models.D_raw)}
    for ph in phases:
        if ph.shares is not None:
            continue
        key = ph.name.lower()  # "d", "g": the entry suffixes in the file
        parts[f"opt_{key}"] = ZeroOptimizerState(ph.model, key) if models.is_deepspeed else TorchState(ph.opt)
        parts[f"sched_{key}"] = SchedulerState(ph.sched, tc.lr_d if key == "d" else tc.lr_g)
        parts[f"scaler_{key}"] = TorchState(ph.scaler)
    if ema is not None:
        parts["ema"] = ema
    parts["data"] = loader  # ranks run in lockstep: rank 0's position stands for all
    parts["rng"] = RngStreams(tc.seed, rank)
    if health is not None:
        parts["health"] = health  # every rank observes the same averaged values: rank 0's window stands for all
    return parts
