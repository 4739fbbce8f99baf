"""``python -m distgan.metrics`` under torchrun variables joins its group as training does:
2 real ranks give the single-process statistics; a rank that never arrives is named, in bounded time."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distgan.config import load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(argv: list[str], rank: int, world: int, port: int, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-m", "distgan.metrics", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(240)
def test_two_ranks_write_the_single_process_statistics(mnist_shards, tmp_path):
    stats = ["stats", "--shards", str(mnist_shards), "--num", "24"]
    single = subprocess.run([sys.executable, "-m", "distgan.metrics", *stats, "--out", str(tmp_path / "one.npz")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=200,
                            env=dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=""))
    assert single.returncode == 0, single.stderr
    port = _free_port()
    procs = [_rank([*stats, "--out", str(tmp_path / "two.npz")], r, 2, port, tmp_path) for r in range(2)]
    outs = [p.communicate(timeout=200) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert int(two["count"]) == int(one["count"]) == 24
    np.testing.assert_allclose(two["mu"], one["mu"], rtol=1e-6, atol=1e-8)


@pytest.mark.timeout(120)
def test_a_rank_that_never_arrives_is_named_within_the_runs_timeout(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(ROOT / "configs" / "debug.yaml", ["dist.timeout_s=3"]), run / "config.yaml")
    t0 = time.monotonic()
    p = _rank(["fid", "--run", str(run)], 0, 2, _free_port(), tmp_path)  # rank 1 is never started
    _, err = p.communicate(timeout=100)
    assert p.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: rank 0: rendezvous failed (ranks never arrived)"), err
    assert "rank 1" in lines[-1] and "dist.timeout_s" in lines[-1] and "Traceback" not in err
    assert time.monotonic() - t0 < 60  # 3 s of waiting plus start-up, not torch's default of many minutes
