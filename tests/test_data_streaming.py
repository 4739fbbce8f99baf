"""Streaming guarantees with real rank processes: exactly-once epochs, equal steps, refusal, resume.

Ranks are separate OS processes (rank/world are explicit, so no process
group is needed for the split); DataLoader workers are real worker processes.
Sample keys are collected per batch and compared across ranks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from distgan.data import DataSpec, build_loader
from distgan.shards import ShardError
from distgan.shards.writer import ShardWriter

ROOT = Path(__file__).resolve().parents[1]
EVEN = [6] * 8  # 48 samples: divides evenly over 1, 2, 4 ranks x 0, 1, 2 workers with batch 3
UNEVEN = [2, 11, 5, 17, 3, 8, 13, 1, 7, 9, 4, 6]  # 86 samples, deliberately uneven
LOPSIDED = [24, 3, 3]  # with 2 workers: 8 batches of 3 on worker 0, 2 on worker 1


def make_shards(out: Path, sizes: list[int]) -> Path:
    """Tiny 4x4 shards with exactly the given sample counts; key s00017 holds pixel value 17."""
    w = ShardWriter(out, shard_size=10**9)
    n = 0
    for size in sizes:
        for _ in range(size):
            w.add(f"s{n:05d}", np.full((4, 4, 1), n % 256, np.uint8), label=n % 10)
            n += 1
        w.flush()
    w.finish(source="test", height=4, width=4, channels=1, classes=[str(i) for i in range(10)])
    return out


@pytest.fixture(scope="module")
def even(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("even"), EVEN)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("uneven"), UNEVEN)


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("lopsided"), LOPSIDED)


RANK_SCRIPT = r'''
import json, sys
from distgan.data import DataSpec, build_loader
rank, world, even, uneven, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
cases = [("even", w, False) for w in (0, 1, 2)] + [("uneven", w, r) for w in (0, 2) for r in (False, True)]
result = {}
for name, workers, resampled in cases:
    spec = DataSpec(resolution=4, batch_size=3, shuffle_buffer=5, resampled=resampled, num_workers=workers,
                    epoch_samples=60 if resampled else 0)
    loader = build_loader(even if name == "even" else uneven, spec, rank, world, seed=7, epochs=2)
    epochs = {}
    for batch in loader:
        assert len(batch["key"]) == 3 and batch["image"].shape == (3, 1, 4, 4)
        # the pixel value names the sample: images arrive with their own keys
        assert [int(k[1:]) % 256 for k in batch["key"]] == batch["image"][:, 0, 0, 0].tolist()
        epochs.setdefault(loader.epoch, []).append(batch["key"])
    result[f"{name}-w{workers}-r{int(resampled)}"] = epochs
json.dump(result, open(out, "w"))
'''


@pytest.fixture(scope="module")
def rank_runs(even, uneven, tmp_path_factory) -> dict[int, list[dict]]:
    """Per world size 1, 2, 4: each rank's batches (keys) per epoch per case, from real processes."""
    tmp = tmp_path_factory.mktemp("ranks")
    script = tmp / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = {}
    for world in (1, 2, 4):
        for rank in range(world):
            out = tmp / f"w{world}r{rank}.json"
            procs[(world, rank)] = (subprocess.Popen([sys.executable, str(script), str(rank), str(world), str(even),
                                                      str(uneven), str(out)], env=env, stderr=subprocess.PIPE), out)
    results: dict[int, list[dict]] = {1: [], 2: [], 4: []}
    for (world, rank), (p, out) in sorted(procs.items()):
        _, err = p.communicate(timeout=150)
        assert p.returncode == 0, f"rank {rank} of {world} failed:\n{err.decode()[-3000:]}"
        results[world].append(json.loads(out.read_text()))
    return results


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_sample_exactly_once_per_epoch(rank_runs, world, workers):
    ranks = rank_runs[world]
    everything = {f"s{i:05d}" for i in range(sum(EVEN))}
    orders = []
    for epoch in ("0", "1"):
        per_rank = [[k for b in r[f"even-w{workers}-r0"][epoch] for k in b] for r in ranks]
        seen = Counter(k for keys in per_rank for k in keys)
        assert set(seen) == everything and set(seen.values()) == {1}, f"epoch {epoch}: duplicates or gaps"
        assert len({len(keys) for keys in per_rank}) == 1  # equal share, equal steps
        orders.append(per_rank[0])
    assert orders[0] != orders[1]  # the order is reshuffled every epoch


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("case", ["uneven-w0-r0", "uneven-w2-r0", "uneven-w0-r1", "uneven-w2-r1"])
def test_equal_steps_on_every_rank_with_uneven_shards(rank_runs, world, case):
    ranks = rank_runs[world]
    for epoch in ("0", "1"):
        steps = [len(r[case][epoch]) for r in ranks]
        assert len(set(steps)) == 1 and steps[0] > 0, f"{case} epoch {epoch}: steps per rank {steps}"
        if case.endswith("r1"):  # resampled: data.epoch_samples=60 over all ranks, batch 3
            assert steps[0] == 60 // world // 3
        else:  # exact mode: no sample twice in an epoch, even though longer ranks were cut
            keys = [k for r in ranks for b in r[case][epoch] for k in b]
            assert len(keys) == len(set(keys)) and len(keys) > 0.6 * sum(UNEVEN)
    if world > 1 and case.endswith("r1"):  # ranks draw different streams
        assert ranks[0][case]["0"] != ranks[1][case]["0"]


def test_world_size_must_divide_the_lanes(even):
    spec = DataSpec(resolution=4, batch_size=4, resampled=False, lanes=4)  # a global batch of 12 on 3 ranks
    with pytest.raises(ShardError, match=r"4 lanes, which 3 ranks cannot share equally; world sizes that can: 1, 2, 4"):
        build_loader(even, spec, rank=1, world=3)
    # one lane per shard: 8 ranks x 2 workers (one busy: a worker per lane at most) read 8 shards exactly once
    spec = DataSpec(resolution=4, batch_size=3, resampled=False, num_workers=2, shuffle_buffer=0)
    loaders = [build_loader(even, spec, r, 8, seed=1, epochs=1) for r in range(8)]
    keys = [k for batches in zip(*loaders) for b in batches for k in b["key"]]
    assert sorted(keys) == [f"s{i:05d}" for i in range(sum(EVEN))]


def test_resuming_on_a_world_size_the_saved_lanes_cannot_share_is_refused(uneven):
    spec = DataSpec(resolution=4, batch_size=6, shuffle_buffer=7, lanes=4)  # 2 ranks x 6, in 4 lanes
    pos = build_loader(uneven, spec, 0, 2, seed=5).state_dict()
    assert (pos["lanes"], pos["global_batch"]) == (4, 12)
    with pytest.raises(ShardError, match=r"saved with 2 rank\(s\) on 3: the stream has 4 lanes, which 3 ranks "
                                         r"cannot share equally; world sizes that can: 1, 2, 4"):
        build_loader(uneven, DataSpec(resolution=4, batch_size=4, shuffle_buffer=7), 0, 3, seed=5, position=pos)


def _global_sequence(shards: Path, resampled: bool, plan: list[tuple[int, int, int]]) -> list[list[str]]:
    """Global batches (keys, rank 0 first) read in legs of (world, workers, global batches), each leg
    resuming from the position the previous leg's rank 0 saved (every rank saves the same one)."""
    out, pos = [], None
    for world, workers, n in plan:
        spec = DataSpec(resolution=4, batch_size=12 // world, shuffle_buffer=7, resampled=resampled,
                        num_workers=workers, epoch_samples=60)
        loaders = [build_loader(shards, spec, r, world, seed=5, epochs=None, position=pos) for r in range(world)]
        for _ in range(n):
            out.append([k for ld in loaders for k in next(ld)["key"]])
        assert len({json.dumps(ld.state_dict()["batches"]) for ld in loaders}) == 1  # one global position
        pos = json.loads(json.dumps(loaders[0].state_dict()))
        for ld in loaders:
            ld.close()
    return out


@pytest.mark.timeout(200)
@pytest.mark.parametrize("resampled", [False, True])
def test_global_order_is_independent_of_world_size_workers_and_resumes(uneven, resampled):
    """A stream read on 2 ranks, resumed on 1 and then on 3 (with and without worker processes), is the
    stream one rank reads straight through: the same samples in the same global order, across epochs."""
    straight = _global_sequence(uneven, resampled, [(1, 0, 15)])
    assert _global_sequence(uneven, resampled, [(2, 2, 4), (1, 0, 5), (3, 1, 6)]) == straight
    assert _global_sequence(uneven, resampled, [(4, 0, 3), (6, 2, 12)]) == straight
    per_epoch = build_loader(uneven, DataSpec(resolution=4, batch_size=12, resampled=resampled, epoch_samples=60),
                             epochs=None).steps_per_epoch(0)
    assert per_epoch < 15  # the legs cross an epoch boundary
    if not resampled:  # exact mode: no sample twice within an epoch
        first = [k for b in straight[:per_epoch] for k in b]
        assert len(first) == len(set(first)) > sum(UNEVEN) - 12


@pytest.mark.parametrize("workers,resampled,shards", [(0, False, "uneven"), (2, False, "lopsided"),
                                                      (2, True, "uneven")])
def test_resumed_stream_continues_the_same_order(request, workers, resampled, shards):
    uneven = request.getfixturevalue(shards)
    spec = DataSpec(resolution=4, batch_size=3, shuffle_buffer=7, resampled=resampled, num_workers=workers)
    ref = build_loader(uneven, spec, seed=3, epochs=None)
    per_epoch = ref.steps_per_epoch(0)
    uninterrupted = [next(ref)["key"] for _ in range(per_epoch + 6)]
    # late in epoch 0 (one worker already exhausted in the lopsided case) and inside epoch 1
    for k in (per_epoch - 2, per_epoch + 1):
        first = build_loader(uneven, spec, seed=3, epochs=None)
        assert [next(first)["key"] for _ in range(k)] == uninterrupted[:k]
        pos = first.state_dict()
        assert (pos["epoch"], pos["batches"], pos["samples"]) == ((0, k, 3 * k) if k < per_epoch else
                                                                   (1, k - per_epoch, 3 * (k - per_epoch)))
        resumed = build_loader(uneven, spec, seed=3, epochs=None, position=json.loads(json.dumps(pos)))
        assert [next(resumed)["key"] for _ in range(len(uninterrupted) - k)] == uninterrupted[k:]
    # a different seed is a different stream; a changed layout restarts the saved epoch
    assert [next(build_loader(uneven, spec, seed=4, epochs=None))["key"] for _ in range(1)] != uninterrupted[:1]
    changed = build_loader(uneven, DataSpec(resolution=4, batch_size=2, shuffle_buffer=7, resampled=resampled,
                                            num_workers=workers), seed=3, epochs=None, position=pos)
    assert (changed.epoch, changed.batches) == (pos["epoch"], 0)


def test_loader_workers_leave_the_global_rng_alone(uneven):
    # the training step draws its noise from torch's global RNG: a loader that drew its workers'
    # seed from it at every epoch start would shift the noise of a resumed run (which opens its
    # epoch at another step than an uninterrupted one), and resume would no longer be bitwise
    import torch

    spec = DataSpec(resolution=4, batch_size=3, shuffle_buffer=7, resampled=True, num_workers=2)
    loader = build_loader(uneven, spec, seed=3, epochs=None)
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    for _ in range(loader.steps_per_epoch(0) + 2):  # two epoch starts: two DataLoaders forked
        next(loader)
    loader.close()
    assert torch.equal(torch.rand(4), expected)
