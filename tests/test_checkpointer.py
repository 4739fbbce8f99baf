"""The checkpointer saves and restores parts, whatever they are; the parts decide what a change means."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distgan.checkpoint import CheckpointError, load_file, read_checkpoint, shard_dir
from distgan.train.parts import GATHERED, SHARDED, ResumeContext, ZeroOptimizerState
from distgan.train.state import Checkpointer


class Counter:
    """A replicated part: a number and a tensor."""

    def __init__(self, n: int = 0):
        self.n, self.t, self.ctx = n, torch.full((3,), float(n)), None

    def state_dict(self) -> dict:
        return {"n": self.n, "t": self.t.clone()}

    def load_state_dict(self, state: dict, ctx: ResumeContext) -> None:
        self.n, self.t, self.ctx = state["n"], state["t"], ctx


class PerRank(Counter):
    scope = GATHERED

    def load_state_dict(self, state: list, ctx: ResumeContext) -> None:
        super().load_state_dict(state[ctx.rank], ctx)

    def fresh(self, ctx: ResumeContext) -> None:
        self.n = -1


class Share(Counter):
    scope = SHARDED
    shard_key = "mine"


def _checkpointer(run: Path, parts: dict, world: int = 1) -> Checkpointer:
    return Checkpointer(run, parts, {"engine": "toy", "config_hash": "h"}, rank=0, world=world,
                        barrier=lambda: None, keep=2, total_steps=10)


def test_parts_of_every_scope_round_trip_and_learn_what_changed(tmp_path):
    saved = {"a": Counter(3), "b": PerRank(4), "c": Share(5)}
    _checkpointer(tmp_path, saved).save(7)
    state = load_file(tmp_path / "checkpoints" / "step_00000007.pt")
    assert {k: state[k] for k in ("step", "world_size", "engine", "config_hash")} == \
        {"step": 7, "world_size": 1, "engine": "toy", "config_hash": "h"}
    assert state["a"]["n"] == 3 and [s["n"] for s in state["b"]] == [4]  # gathered: one entry per rank
    assert state["c"] == {"zero_shards": shard_dir(tmp_path, 7).name}  # sharded: a per-rank file
    share = load_file(shard_dir(tmp_path, 7) / "rank00000.pt")
    assert list(share) == ["mine"] and share["mine"]["n"] == 5 and torch.equal(share["mine"]["t"], torch.full((3,), 5.))

    fresh = {"a": Counter(), "b": PerRank(), "c": Share(), "new": Counter(9)}
    assert _checkpointer(tmp_path, fresh).resume() == 7
    assert (fresh["a"].n, fresh["b"].n, fresh["c"].n) == (3, 4, 5) and torch.equal(fresh["a"].t, torch.full((3,), 3.))
    assert fresh["new"].n == 9 and fresh["new"].ctx is None  # a part the file lacks keeps its own state
    ctx = fresh["a"].ctx
    assert (ctx.step, ctx.world_size, ctx.saved_world_size, ctx.world_changed) == (7, 1, 1, False)
    assert read_checkpoint(tmp_path).part("a")["n"] == 3


def test_no_checkpoint_makes_fresh_parts_fresh(tmp_path):
    parts = {"b": PerRank(4), "a": Counter(2)}
    assert _checkpointer(tmp_path, parts).resume() == 0
    assert parts["b"].n == -1 and parts["a"].n == 2


def test_a_checkpoint_of_another_engine_is_refused(tmp_path):
    _checkpointer(tmp_path, {"a": Counter(1)}).save(1)
    other = Checkpointer(tmp_path, {"a": Counter()}, {"engine": "deepspeed", "config_hash": "h"}, rank=0, world=1,
                         barrier=lambda: None)
    with pytest.raises(CheckpointError, match="written with train.engine=toy.*not deepspeed"):
        other.resume()


def test_zero_partitions_of_another_world_size_are_refused_with_what_to_do(tmp_path):
    ctx = ResumeContext(run_dir=tmp_path, step=10, rank=0, world_size=1, saved_world_size=2, engine="deepspeed",
                        saved_engine="deepspeed")
    with pytest.raises(CheckpointError) as e:
        ZeroOptimizerState(engine=None, shard_key="d").load_state_dict(None, ctx)
    msg = str(e.value)
    assert "partitions for 2 ranks, and this run has 1" in msg and "Resume with 2 processes" in msg
    assert "train.engine=accelerate" in msg
