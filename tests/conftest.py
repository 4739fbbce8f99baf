"""Shared fixtures: real embedded-MNIST shards written once per session, a debug config."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_shards(tmp_path_factory) -> Path:
    """The 5,000 embedded MNIST digits in 10 shards of 500."""
    from distgan.shards import write_shards

    out = tmp_path_factory.mktemp("shards") / "mnist"
    write_shards("mnist-embedded", None, out, shard_size=500, progress=False)
    return out


@pytest.fixture
def debug_cfg(mnist_shards):
    """The CPU debug preset pointed at the session's shards, factory taking overrides."""
    from distgan.config import load_config

    def make(*overrides: str):
        return load_config(ROOT / "configs" / "debug.yaml",
                           [f"data.shards={mnist_shards}", "log.progress=false", *overrides])
    return make


@pytest.fixture(scope="session")
def debug_run(mnist_shards, tmp_path_factory) -> Path:
    """A 20-step debug run (16x16, z 16, 10 digit classes; checkpoints at 10 and 20), trained once
    per session. Read-only: tests that change a run copy it first."""
    from distgan.config import load_config
    from distgan.train import train

    cfg = load_config(ROOT / "configs" / "debug.yaml", [f"data.shards={mnist_shards}", "log.progress=false"])
    run_dir = tmp_path_factory.mktemp("debug_run") / "run"
    train(cfg, run_dir)
    return run_dir
