"""``train.stop_at``: a run paused at a budget and continued later trains exactly as one that never paused.

This is what a sweep that promotes cells between rounds relies on: the budget a round
grants is separate from the schedule's horizon (``train.steps``), so the cosine
schedule, the EMA warm-up and the data order are those of an uninterrupted run.
"""
from __future__ import annotations

import logging

import pytest
import torch

from distgan.checkpoint import read_checkpoint
from distgan.config import ConfigError
from distgan.rundir import read_status
from distgan.train import train


def _same(a, b, where: str = "") -> list[str]:
    if isinstance(a, torch.Tensor):
        return [] if isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b) else [where]
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [where]
        return [w for k in a for w in _same(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [where]
        return [w for i, (x, y) in enumerate(zip(a, b)) for w in _same(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def test_a_run_paused_at_rung_budgets_ends_bitwise_equal_to_a_straight_run(debug_cfg, tmp_path, caplog):
    common = ("train.steps=12", "train.schedule=cosine", "train.ema=true", "train.ema_start=5",
              "train.ckpt_every=100", "log.every=2", "log.sample_every=100", "metrics.names=[]")
    straight = tmp_path / "straight"
    assert train(debug_cfg(*common), straight)["completed"]

    rungs = tmp_path / "rungs"
    first = train(debug_cfg(*common, "train.stop_at=4"), rungs)  # rung 1: 4 of the 12 steps
    assert first == {**first, "step": 4, "completed": False, "paused": True}
    assert read_checkpoint(rungs).step == 4
    with caplog.at_level(logging.INFO, logger="distgan"):
        second = train(debug_cfg(*common, "train.stop_at=8"), rungs)  # promoted: continues to 8
    assert second["step"] == 8 and second["paused"] and "resumed from step 4 of 12" in caplog.text
    assert train(debug_cfg(*common), rungs)["completed"]  # the last rung: the full horizon

    a, b = read_checkpoint(straight).state, read_checkpoint(rungs).state
    parts = set(a) - {"config_hash"}  # the budgets differ, so the configs do
    assert {"G", "D", "ema", "opt_d", "opt_g", "sched_d", "sched_g", "data", "rng"} <= parts
    assert [w for k in sorted(parts) for w in _same(a[k], b[k], k)] == []
    assert a["sched_g"]["last_epoch"] == 12


def test_paused_is_what_the_worker_records(debug_cfg, tmp_path, monkeypatch):
    from distgan.config import save_config
    from distgan.launch.worker import run_rank
    from distgan.rundir import config_path

    run = tmp_path / "run"
    run.mkdir()
    save_config(debug_cfg("train.steps=6", "train.stop_at=3"), config_path(run))
    monkeypatch.delenv("RANK", raising=False)
    assert run_rank(run)["paused"]
    st = read_status(run)
    assert st["state"] == "paused" and st["step"] == 3 and st["total_steps"] == 6


def test_a_budget_beyond_the_horizon_is_refused(debug_cfg):
    with pytest.raises(ConfigError, match=r"'train.stop_at': got 30, expected at most train.steps=20"):
        debug_cfg("train.steps=20", "train.stop_at=30")


def test_a_run_stopped_by_its_health_says_so_for_the_sweeps(debug_cfg, tmp_path, monkeypatch):
    # halving ranks such a run last: the reason in status.json is how it knows the run diverged
    from distgan.config import save_config
    from distgan.launch.worker import run_rank
    from distgan.rundir import config_path

    run = tmp_path / "run"
    run.mkdir()
    save_config(debug_cfg("train.steps=20", "log.every=1", "health.window=3", "health.d_fake_min=1.0",
                          "train.stop_on=[d_win]"), config_path(run))
    monkeypatch.delenv("RANK", raising=False)
    assert not run_rank(run)["completed"]
    st = read_status(run)
    assert st["state"] == "stopped" and st["step"] == 3 and st["reason"] == "health signal in train.stop_on"
