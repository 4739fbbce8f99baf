"""Resuming on another world size: a run trained 0 -> 10 steps on 2 ranks, 10 -> 20 on 1 rank and
20 -> 30 on 3 ranks computes what one rank computes straight from 0 to 30.

What makes it so: ``train.global_batch`` (every leg optimises on the same 12 samples per step),
the global data order of :mod:`distgan.data.plan` (lanes; the position counts global batches),
the step noise of :mod:`distgan.train.noise` (drawn for the global batch, each rank keeps its rows),
and synced batch norm (statistics over the global batch). The legs and the straight run differ
only in how sums are split over ranks (gradients all-reduced over 1, 2 or 3 partial sums; BN
moments likewise), which changes float32 rounding, not the computation: the weights agree to
float32 round-off grown over 30 Adam steps (measured: 1.5e-8 for the stream, 2.2e-8 for the
device cache; asserted: 1e-6), and the per-step losses agree to 1e-5 throughout, so no step saw
other data or other noise (either would move a loss by orders of magnitude more).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mp import run_trainer

from distgan.checkpoint import load_file

BASE = ["log.progress=false", "dist.backend=gloo", "model.norm=sync_batch", "model.cond=acgan", "train.ema=true",
        "train.global_batch=12", "train.batch_size=12", "train.steps=30", "train.ckpt_every=10", "log.every=1",
        "log.sample_every=10", "data.shuffle_buffer=50"]


def _losses(run: Path) -> dict[int, tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss_d"], r["loss_g"]) for r in rows if "loss_d" in r}


@pytest.mark.multiproc
@pytest.mark.timeout(600)
@pytest.mark.parametrize("data", ["stream", "device_cache"])
def test_resume_on_2_then_1_then_3_ranks_equals_a_straight_run(mnist_shards, tmp_path, data):
    args = [f"data.shards={mnist_shards}", *BASE,
            *(["data.num_workers=1"] if data == "stream" else ["data.device_cache=true"])]
    straight, legs = tmp_path / "straight", tmp_path / "legs"
    run_trainer(1, straight, args, timeout=280)
    for world, stop_at in ((2, 10), (1, 20), (3, 30)):
        out = run_trainer(world, legs, [*args, f"train.stop_at={stop_at}"], timeout=280)
        assert all(o["step"] == stop_at and o["world_size"] == world for o in out)
    a, b = (load_file(r / "checkpoints" / "step_00000030.pt") for r in (straight, legs))
    assert (a["world_size"], b["world_size"]) == (1, 3)
    assert a["data"]["epoch"] == b["data"]["epoch"] and a["data"].get("batches", a["data"].get("batch_index")) == \
        b["data"].get("batches", b["data"].get("batch_index"))  # the same global position
    worst = max(float((t - b[key][name]).abs().max()) for key in ("G", "D", "ema") for name, t in a[key].items()
                if t.is_floating_point())
    print(f"largest weight difference after 30 steps: {worst:.3g}")
    assert worst < 1e-6, f"weights differ by up to {worst:.3g}"
    la, lb = _losses(straight), _losses(legs)
    assert sorted(lb) == list(range(1, 31))
    assert all(abs(la[s][i] - lb[s][i]) < 1e-5 for s in la for i in (0, 1)), \
        [(s, la[s], lb[s]) for s in la if la[s] != lb[s]][:5]
    log = (legs / "logs" / "rank0.log").read_text()
    assert "global batch 12 = 3 rank(s) x 1 micro-batch(es) x 4" in log


@pytest.mark.multiproc
@pytest.mark.timeout(300)
def test_same_world_size_resume_stays_bitwise(mnist_shards, tmp_path):
    args = [f"data.shards={mnist_shards}", *BASE, "train.steps=8", "train.ckpt_every=4"]
    straight, legs = tmp_path / "straight", tmp_path / "legs"
    run_trainer(2, straight, args, timeout=280)
    run_trainer(2, legs, [*args, "train.stop_at=4"], timeout=280)
    run_trainer(2, legs, args, timeout=280)
    a, b = (load_file(r / "checkpoints" / "step_00000008.pt") for r in (straight, legs))
    for key in ("G", "D", "ema"):
        assert all(torch.equal(t, b[key][name]) for name, t in a[key].items()), key
    assert _losses(straight) == _losses(legs)


def test_a_global_batch_the_world_size_cannot_share_is_refused_before_training(debug_cfg):
    from distgan.config import ConfigError

    tc = debug_cfg("train.global_batch=12", "train.batch_size=4").train
    assert tc.batch_split(1) == (4, 3) and tc.batch_split(2) == (3, 2) and tc.batch_split(3) == (4, 1)
    with pytest.raises(ConfigError, match=r"train.global_batch.*12 samples cannot be shared equally by 5 ranks; "
                                          r"world sizes that can: 1, 2, 3, 4, 6, 12"):
        tc.batch_split(5)
