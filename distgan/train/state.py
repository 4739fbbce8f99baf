"""Save and restore a mapping of parts that own their state: the run's checkpointer.

    ckpt = Checkpointer(run_dir, run_parts(...), header(cfg), rank=rank, world=world, barrier=...,
                        keep=cfg.train.keep_ckpts, restart_if_unreadable=..., total_steps=cfg.train.steps)
    step = ckpt.resume()    # every rank: the newest readable checkpoint (or step 0), every part restored
    ckpt.save(step)         # every rank together: sharded parts by their ranks, then rank 0 the step file

The checkpointer knows parts, not GANs: each part has ``state_dict()``,
``load_state_dict(state, ctx)`` and a ``scope`` (:mod:`distgan.train.parts`
defines the protocol and a training run's parts), the checkpoint's file layout is
:mod:`distgan.checkpoint`'s. Restoring tells every part what changed since the
save (:class:`~distgan.train.parts.ResumeContext`: world size, engine); a part
that cannot follow a change refuses with a message that says what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from distgan import dist
from distgan.checkpoint import CheckpointError, load_latest, load_shard, save_checkpoint, save_shard, shard_dir
from distgan.log import get_logger
from distgan.rundir import ckpt_path
from distgan.train import stages
from distgan.train.parts import GATHERED, REPLICATED, SHARDED, ResumeContext

log = get_logger("train")


def _scope(part: Any) -> str:
    return getattr(part, "scope", REPLICATED)


class Checkpointer:
    """Save and resume one run's parts; every method is called on all ranks together.

    ``header`` holds the fields recorded beside the parts (the config hash and the
    engine); step and world size are added on save. ``total_steps`` is for the log line. Loading falls back past
    unreadable files; saving keeps the newest ``keep`` step files (and ``best``).
    """

    def __init__(self, run_dir: str | Path, parts: Mapping[str, Any], header: Mapping[str, Any], *, rank: int,
                 world: int, barrier: Callable[[], None], keep: int = 3, restart_if_unreadable: bool = False,
                 total_steps: int | None = None):
        self.run_dir, self.parts, self.header = Path(run_dir), dict(parts), dict(header)
        self.rank, self.world, self.barrier = rank, world, barrier
        self.keep, self.restart_if_unreadable, self.total_steps = keep, restart_if_unreadable, total_steps

    def has(self, step: int) -> bool:
        """Whether the step-``step`` checkpoint exists, decided by rank 0 for all ranks (a collective)."""
        exists = ckpt_path(self.run_dir, step).is_file() if self.rank == 0 else None
        return bool(dist.broadcast_object(exists))

    def save(self, step: int) -> None:
        """Checkpoint ``step``: every rank's share of sharded parts, then the step file by rank 0."""
        stages.enter(f"checkpoint at step {step}")
        gathered = {name: dist.gather_objects(p.state_dict()) for name, p in self.parts.items()
                    if _scope(p) == GATHERED}
        sharded = {p.shard_key: p.state_dict() for p in self.parts.values() if _scope(p) == SHARDED}
        if sharded:  # each rank writes its share before rank 0 publishes the step
            save_shard(self.run_dir, step, self.rank, sharded)
            self.barrier()
        if self.rank == 0:
            st: dict[str, Any] = {"step": step, **self.header, "world_size": self.world}
            for name, p in self.parts.items():
                scope = _scope(p)
                st[name] = (gathered[name] if scope == GATHERED else
                            {"zero_shards": shard_dir(self.run_dir, step).name} if scope == SHARDED else
                            p.state_dict())
            save_checkpoint(self.run_dir, step, st, keep=self.keep)
        self.barrier()

    def resume(self) -> int:
        """Restore every part from the newest readable checkpoint; the step to continue from (0: none).

        An unusable checkpoint set stops the run unless ``restart_if_unreadable``
        says start over. A checkpoint of the other engine is refused (its
        optimizer states are in that engine's format). Parts the file lacks (an
        EMA turned on since) keep their fresh state.
        """
        state = load_latest(self.run_dir, map_location="cpu", restart_if_unreadable=self.restart_if_unreadable)
        if state is None:
            ctx = self._context(0, self.world, self.header.get("engine", ""))
            for p in self.parts.values():
                if hasattr(p, "fresh"):
                    p.fresh(ctx)
            return 0
        if state.get("config_hash") != self.header.get("config_hash"):
            log.info("note: config differs from the checkpoint's; continuing with the new config")
        saved_engine = state.get("engine", "accelerate")
        if saved_engine != self.header.get("engine"):
            raise CheckpointError(
                f"the checkpoint in {self.run_dir} was written with train.engine={saved_engine} (optimizer states "
                f"in its format); resume with that engine, not {self.header.get('engine')}")
        step = int(state["step"])
        ctx = self._context(step, int(state.get("world_size", 0)), saved_engine)
        shares = None
        for name, p in self.parts.items():
            if name not in state:
                continue
            if _scope(p) == SHARDED:
                if shares is None:
                    shares = load_shard(self.run_dir, step, self.rank) if not ctx.world_changed else {}
                p.load_state_dict(shares.get(p.shard_key), ctx)
            else:
                p.load_state_dict(state[name], ctx)
        log.info(f"resumed from step {step} of {self.total_steps}")
        return step

    def _context(self, step: int, saved_world: int, saved_engine: str) -> ResumeContext:
        return ResumeContext(run_dir=self.run_dir, step=step, rank=self.rank, world_size=self.world,
                             saved_world_size=saved_world, engine=str(self.header.get("engine", "")),
                             saved_engine=saved_engine)
