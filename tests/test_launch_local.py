"""Local multi-process launches with real processes on gloo: world size, failure handling."""
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from distgan.checkpoint import load_file
from distgan.launch.local import launch_local
from distgan.rundir import read_status, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.multiproc


def _launch(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "distgan.launch", "--config", str(ROOT / "configs/debug.yaml"),
                           "--cluster", "local", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(300)
def test_two_local_cpu_ranks_train_with_world_size_two(mnist_shards, tmp_path):
    run = tmp_path / "run"
    out = _launch("--procs-per-node", "2", "--run-dir", str(run), f"data.shards={mnist_shards}",
                  "train.steps=6", "train.ckpt_every=6", "log.every=3", "log.progress=false")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished at step 6" in out.stdout  # rank 0's output is streamed
    st = read_status(run)
    assert st["state"] == "completed" and st["world_size"] == 2 and st["step"] == 6
    ckpt = load_file(resolve_checkpoint(run, "latest"))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2  # both ranks were in one group
    assert (run / "logs" / "rank1.out").is_file() and (run / "logs" / "rank1.log").is_file()


@pytest.mark.timeout(300)
def test_ranks_that_do_not_form_the_expected_world_fail_the_launch(mnist_shards, tmp_path):
    run = tmp_path / "run"
    out = _launch("--procs-per-node", "2", "--run-dir", str(run), f"data.shards={mnist_shards}",
                  "dist.expect_world_size=3", "train.steps=2", "log.progress=false")
    assert out.returncode != 0
    assert "exited with code" in out.stderr
    st = read_status(run)
    assert st["state"] == "failed" and re.search(r"expect\w*[ _]world[ _]size\W*3", st["error"]), st


@pytest.mark.timeout(120)
def test_a_failing_rank_stops_the_others_and_sets_the_exit_code(tmp_path):
    # rank 1 joins the group, then fails; rank 0 would wait for an hour: the launcher must end it
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        import torch.distributed as dist
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        open(r"{tmp_path}/pid%d" % rank, "w").write(str(os.getpid()))
        if rank == 1:
            sys.exit(7)
        time.sleep(3600)
    """))
    t0 = time.monotonic()
    code = launch_local(tmp_path / "run", procs=2, grace_s=3, stream=False,
                        command=[sys.executable, str(script)])
    assert code == 7
    assert time.monotonic() - t0 < 60
    pid0 = int((tmp_path / "pid0").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid0, 0)  # rank 0 is gone, not orphaned


@pytest.mark.timeout(300)
def test_one_local_process_goes_the_workers_way(mnist_shards, tmp_path):
    # the same path as every rank of a bigger launch: status.json, the run's lock, the summary
    run = tmp_path / "run"
    out = _launch("--run-dir", str(run), f"data.shards={mnist_shards}", "train.steps=4", "train.ckpt_every=4",
                  "log.progress=false")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished at step 4" in out.stdout
    st = read_status(run)
    assert st["state"] == "completed" and st["step"] == 4 and st["world_size"] == 1, st
    assert (run / "train.lock").read_bytes() == b""  # held while training, released cleanly
    # the compute a run has cost, summed over its attempts (what sweeps report)
    first = st["train_seconds"]
    assert 0 < first == st["rank_seconds"]
    out = _launch("--run-dir", str(run), f"data.shards={mnist_shards}", "train.steps=6", "train.ckpt_every=2",
                  "log.progress=false")
    assert out.returncode == 0, out.stdout + out.stderr
    assert read_status(run)["train_seconds"] > first
