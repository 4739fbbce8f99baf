"""Distributed extraction: 2 real gloo processes give the same statistics and records as 1."""
from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.nn as nn

RES = 16


class TinyG(nn.Module):
    """A fixed, deterministic conditional generator (independent of distgan.models)."""

    def __init__(self, z_dim: int = 8, classes: int = 10):
        super().__init__()
        torch.manual_seed(123)
        self.classes = classes
        self.fc = nn.Linear(z_dim + classes, RES * RES)

    def forward(self, z, y):
        h = torch.cat([z, nn.functional.one_hot(y, self.classes).float()], 1)
        return torch.tanh(self.fc(h)).view(-1, 1, RES, RES)


def _features(index: np.ndarray) -> np.ndarray:
    """One deterministic feature row per global sample index."""
    return np.stack([np.random.default_rng(int(i)).normal(size=5) + 0.1 * int(i) for i in index])


def _work(shards: str, cache: str, out: str) -> dict:
    """What every rank runs: sufficient statistics of indexed features + a full evaluation."""
    from distgan import dist
    from distgan.config import MetricsConfig
    from distgan.metrics.evaluate import Evaluator
    from distgan.metrics.frechet import FeatureStats
    from distgan.metrics.generate import Conditioning

    rank, world = dist.rank_world()
    st = FeatureStats(5, keep=True)
    mine = np.arange(101)[rank::world]  # uneven split on purpose
    for chunk in np.array_split(mine, 3):
        st.add(_features(chunk), index=chunk)
    st.all_reduce()
    mc = MetricsConfig(names=["classifier", "kid"], kid_features="classifier", num_fake=150, batch_size=32,
                       num_real=400, kid_subsets=4, cache_dir=cache)
    ev = Evaluator(mc, shards, RES, Conditioning("class", num_classes=10), z_dim=8, seed=3)
    records = ev.evaluate(TinyG(), step=1)
    result = {"count": st.count, "mu": st.mu.tolist(), "sigma": st.sigma.tolist(),
              "features": st.features().tolist(),
              "records": {r["name"]: r["value"] for r in records},
              "num_real": {r["name"]: r["provenance"]["num_real"] for r in records}}
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump(result, f)
    return result


def _worker(rank: int, world: int, port: int, shards: str, cache: str, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _work(shards, cache, out)
    finally:
        tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_gloo_ranks_equal_one_process(mnist_shards, tmp_path_factory, tmp_path):
    import torch.multiprocessing as mp

    from distgan.metrics.classifier import classifier_for

    shared = tmp_path_factory.getbasetemp() / "metrics_cache"
    shared.mkdir(exist_ok=True)
    clf = classifier_for(mnist_shards, RES, cache_dir=str(shared))  # train (or reuse) before the ranks start
    caches = {}
    for run in ("single", "dist"):  # fresh caches holding only the classifier: real stats are computed by each
        caches[run] = tmp_path / f"cache_{run}"
        caches[run].mkdir()
        shutil.copy(shared / f"{clf.key}.pt", caches[run])
    single = _work(str(mnist_shards), str(caches["single"]), str(tmp_path / "single"))
    mp.spawn(_worker, args=(2, _free_port(), str(mnist_shards), str(caches["dist"]), str(tmp_path / "dist")),
             nprocs=2, join=True)
    assert len(list(caches["dist"].glob("*.npz"))) == 1  # the real statistics, written once (by rank 0)
    ranks = [json.loads((tmp_path / f"dist.rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank holds the same result
    d = ranks[0]
    assert d["count"] == single["count"] == 101
    np.testing.assert_allclose(d["mu"], single["mu"], rtol=1e-12)
    np.testing.assert_allclose(d["sigma"], single["sigma"], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(d["features"], single["features"])  # gathered in global sample order
    assert d["num_real"] == single["num_real"]
    assert set(d["records"]) == {"classifier_fd", "classifier_acc", "kid"}
    for name, v in single["records"].items():
        assert d["records"][name] == pytest.approx(v, rel=1e-6, abs=1e-9), name


_TRAIN = """
import sys
from distgan.config import load_config
from distgan.train import train
cfg = load_config(sys.argv[1], sys.argv[3:])
train(cfg, sys.argv[2])
"""


@pytest.mark.timeout(300)
def test_training_hook_on_two_ranks(mnist_shards, tmp_path_factory, tmp_path):
    """The loop's metrics block on 2 gloo ranks: one set of records (rank 0), best checkpoint, no hang."""
    import subprocess
    import sys
    from pathlib import Path

    from distgan.metrics.classifier import classifier_for
    from distgan.rundir import METRICS, read_jsonl, resolve_checkpoint

    root = Path(__file__).resolve().parents[1]
    cache = tmp_path_factory.getbasetemp() / "metrics_cache"
    cache.mkdir(exist_ok=True)
    classifier_for(mnist_shards, RES, cache_dir=str(cache))
    run_dir = tmp_path / "run"
    args = [sys.executable, "-c", _TRAIN, str(root / "configs" / "debug.yaml"), str(run_dir),
            f"data.shards={mnist_shards}", "log.progress=false", "train.steps=4", "train.ckpt_every=3",
            "dist.expect_world_size=2", "metrics.names=[classifier]", "metrics.every=2", "metrics.num_fake=64",
            "metrics.num_real=300", f"metrics.cache_dir={cache}"]
    port = _free_port()
    procs = []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=str(root))
        procs.append(subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(tmp_path / f"rank{r}.err", "w")))
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    errs = "\n".join((tmp_path / f"rank{r}.err").read_text()[-2000:] for r in range(2))
    assert codes == [0, 0], errs
    recs = read_jsonl(run_dir / METRICS)
    assert [(r["step"], r["name"]) for r in recs] == [(2, "classifier_fd"), (2, "classifier_acc"),
                                                      (4, "classifier_fd"), (4, "classifier_acc")]
    assert resolve_checkpoint(run_dir, "best").is_file()
