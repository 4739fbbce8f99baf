"""train.engine=deepspeed (ZeRO 1 and 2) for G and D with 2 real CPU processes, replicas checked every step.

DeepSpeed compiles a CPU communication op on first use (~1 min); TORCH_EXTENSIONS_DIR
points at ~/.cache/distgan/torch_extensions (the trainer's default too), so later runs reuse it.
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from mp import run_trainer

from distgan.checkpoint import load_file, shard_dir
from distgan.rundir import list_checkpoints

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.multiproc
EXT = {"TORCH_EXTENSIONS_DIR": os.path.expanduser("~/.cache/distgan/torch_extensions")}


def _args(shards, *more):
    return [f"data.shards={shards}", "train.engine=deepspeed", "train.check_replicas_every=1",
            "log.progress=false", "log.every=1", *more]


@pytest.mark.timeout(420)
def test_zero1_run_with_accumulation_checks_replicas(mnist_shards, tmp_path):
    run = tmp_path / "run"
    out = run_trainer(2, run, _args(mnist_shards, "train.zero_stage=1", "train.steps=3", "train.grad_accum=2",
                                    "model.norm=sync_batch", "train.ckpt_every=3"), timeout=400, env=EXT)
    assert all(o["completed"] and o["step"] == 3 for o in out)
    ck = load_file(run / "checkpoints" / "step_00000003.pt")
    assert ck["engine"] == "deepspeed" and ck["opt_d"] == {"zero_shards": "step_00000003.zero"}
    shards = sorted(p.name for p in shard_dir(run, 3).iterdir())
    assert shards == ["rank00000.pt", "rank00001.pt"]
    # resumed on another world size, the ZeRO partitions cannot be re-sharded: one message, no traceback
    import subprocess
    import sys

    from distgan.rundir import read_status

    out = subprocess.run([sys.executable, "-m", "distgan.launch", "--cluster", "local", "--config",
                          str(run / "config.yaml"), "--run-dir", str(run), "train.steps=5",
                          "dist.expect_world_size=1"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **EXT, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    msg = "holds ZeRO optimizer partitions for 2 ranks, and this run has 1. Resume with 2 processes"
    assert msg in out.stderr and msg in read_status(run)["error"]


@pytest.mark.timeout(420)
def test_zero2_resume_equals_straight_run(mnist_shards, tmp_path):
    """ZeRO-2: stop at step 2, resume to 4 from the sharded optimizer state; equal to the straight run."""
    args = _args(mnist_shards, "train.zero_stage=2", "train.steps=4", "train.ckpt_every=2")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_trainer(2, straight, args, timeout=400, env=EXT)
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(straight / "checkpoints" / "step_00000002.pt", resumed / "checkpoints")
    shutil.copytree(shard_dir(straight, 2), shard_dir(resumed, 2))
    (resumed / "checkpoints" / "latest").write_text("step_00000002.pt\n")
    run_trainer(2, resumed, args, timeout=400, env=EXT)
    assert [s for s, _ in list_checkpoints(resumed)] == [2, 4]
    a, b = (load_file(r / "checkpoints" / "step_00000004.pt") for r in (straight, resumed))
    for key in ("G", "D"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after a ZeRO-2 resume"
    for r in (0, 1):
        sa, sb = (load_file(shard_dir(x, 4) / f"rank{r:05d}.pt") for x in (straight, resumed))
        for key in ("d", "g"):
            fa, fb = sa[key]["single_partition_of_fp32_groups"], sb[key]["single_partition_of_fp32_groups"]
            assert all(torch.equal(x, y) for x, y in zip(fa, fb))
