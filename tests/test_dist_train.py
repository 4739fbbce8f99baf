"""The distributed trainer with real processes (gloo, OMP_NUM_THREADS=1, the tiny debug model).

Every run checks replicas bitwise after every step (``train.check_replicas_every=1``:
a difference fails the run naming the tensor), so each launch is also a replica test.
"""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from mp import ROOT, run_trainer, start_ranks, trainer_cmd, wait_ranks

from distgan.checkpoint import load_file
from distgan.rundir import list_checkpoints

pytestmark = pytest.mark.multiproc
CHECK = ["train.check_replicas_every=1", "log.progress=false"]


def _tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


@pytest.mark.timeout(300)
def test_four_ranks_bn_sn_projection_bf16_accum_ncritic_r1(mnist_shards, tmp_path):
    """4 ranks: plain BN in D, synced BN in G, spectral norm, projection D, bf16 autocast,
    2 accumulation micro-steps (no_sync), 2 D steps per G step, cosine schedule with warm-up, EMA,
    the R1 penalty (a double backward through DDP's D)."""
    run = tmp_path / "run"
    out = run_trainer(4, run, [f"data.shards={mnist_shards}", *CHECK, "train.steps=4", "train.batch_size=8",
                               "model.cond=projection", "model.norm_d=batch", "model.norm_g=sync_batch",
                               "model.spectral_norm=true", "train.precision=bf16", "train.grad_accum=2",
                               "train.n_critic=2", "train.schedule=cosine", "train.warmup_steps=1",
                               "train.lr_min_g=1e-5", "train.lr_min_d=1e-5", "train.ema=true", "train.r1_gamma=1",
                               "log.every=2", "train.ckpt_every=4"], timeout=280)
    assert all(o["completed"] and o["step"] == 4 and o["world_size"] == 4 for o in out)
    ck = load_file(run / "checkpoints" / "step_00000004.pt")
    assert ck["world_size"] == 4 and len(ck["rng"]) == 4
    assert len({bytes(r["torch"].numpy()) for r in ck["rng"]}) == 4  # each rank's own noise stream, all kept
    assert "ema" in ck and any(k.endswith("._u") for k in ck["D"])  # spectral-norm u saved (checked every step)
    tags = _tags(run)
    assert {"time_data", "time_d", "time_g", "time_step", "grad_norm_d", "grad_norm_g", "lr_d", "lr_g",
            "images_per_s", "loss_d", "loss_g", "d_real", "d_fake", "loss_d_r1"} <= tags
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    hp = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert hp["train.precision"].string_value == "bf16" and hp["dist.world_size"].number_value == 4
    last = _rows(run)[-1]
    assert last["lr_g"] == pytest.approx(1e-5) and last["lr_d"] == pytest.approx(1e-5)  # cosine reached lr_min
    # n_critic=2 and grad_accum=2: D's Adam stepped 2 x 4 times, G's 4 times (one step per accumulated batch)
    assert {int(s["step"]) for s in ck["opt_d"]["state"].values()} == {8}
    assert {int(s["step"]) for s in ck["opt_g"]["state"].values()} == {4}


@pytest.fixture(scope="module")
def straight_and_resumed(mnist_shards, tmp_path_factory):
    """2 ranks, synced BN + AC-GAN + EMA + lazy R1 every 3 steps: a straight run to 8 steps, and a run
    resumed from its step 4."""
    base = tmp_path_factory.mktemp("resume")
    args = [f"data.shards={mnist_shards}", *CHECK, "model.norm=sync_batch", "model.cond=acgan", "train.ema=true",
            "dist.backend=gloo", "train.r1_gamma=1", "train.r1_every=3",
            "train.steps=8", "train.ckpt_every=4", "train.keep_ckpts=3", "log.every=1", "log.sample_every=4"]
    straight = base / "straight"
    run_trainer(2, straight, args)
    # the resumed run starts from exactly what a run stopped at step 4 leaves behind
    resumed = base / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(straight / "checkpoints" / "step_00000004.pt", resumed / "checkpoints")
    (resumed / "checkpoints" / "latest").write_text("step_00000004.pt\n")
    out = run_trainer(2, resumed, args)
    return straight, resumed, out


@pytest.mark.timeout(300)
def test_resumed_run_equals_straight_run(straight_and_resumed):
    straight, resumed, out = straight_and_resumed
    assert all(o["completed"] and o["step"] == 8 for o in out)
    assert "resumed from step 4" in (resumed / "logs" / "rank0.log").read_text()
    a, b = (load_file(r / "checkpoints" / "step_00000008.pt") for r in (straight, resumed))
    for key in ("G", "D", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    for key in ("opt_d", "opt_g"):
        for pid, st in a[key]["state"].items():
            assert all(torch.equal(v, b[key]["state"][pid][k]) for k, v in st.items())
    loss_a = {r["step"]: (r["loss_d"], r["loss_g"], r["d_real"]) for r in _rows(straight)}
    loss_b = {r["step"]: (r["loss_d"], r["loss_g"], r["d_real"]) for r in _rows(resumed)}
    assert sorted(loss_b) == [5, 6, 7, 8]
    assert all(loss_a[s] == loss_b[s] for s in loss_b)  # bitwise: same data, noise and reductions


@pytest.mark.timeout(300)
def test_sync_bn_acgan_replicas_and_samples(straight_and_resumed):
    straight, _, _ = straight_and_resumed
    ck = load_file(straight / "checkpoints" / "step_00000008.pt")
    assert ck["world_size"] == 2 and ck["step"] == 8
    assert any(k.endswith("running_var") for k in ck["D"])  # BN stats checkpointed (and replica-checked)
    assert (straight / "samples" / "step_00000008.png").is_file()
    assert "loss_d_aux" in _rows(straight)[-1]
    assert [s for s, _ in list_checkpoints(straight)] == [4, 8]


@pytest.mark.timeout(300)
def test_lazy_r1_is_a_phase_every_k_steps_on_ds_optimizer(straight_and_resumed):
    """train.r1_every=3 over 8 steps: the D_r1 phase ran at steps 3 and 6 (D's Adam stepped 8 + 2 times),
    through DDP with an AC-GAN head it does not use, and its state is D's (no entries of its own)."""
    straight, _, _ = straight_and_resumed
    ck = load_file(straight / "checkpoints" / "step_00000008.pt")
    assert {int(s["step"]) for s in ck["opt_d"]["state"].values()} == {10}
    assert {int(s["step"]) for s in ck["opt_g"]["state"].values()} == {8}
    assert not [k for k in ck if "r1" in k]
    r1_rows = {r["step"]: r for r in _rows(straight) if "loss_d_r1" in r}
    assert sorted(r1_rows) == [3, 6] and all(r["loss_d_r1"] > 0 and "time_d_r1" in r for r in r1_rows.values())


@pytest.mark.timeout(300)
def test_sigterm_on_one_rank_checkpoints_and_exits_cleanly(mnist_shards, tmp_path):
    run, logs = tmp_path / "run", tmp_path / "logs"
    cmd = trainer_cmd(ROOT / "configs" / "debug.yaml", run,
                      [f"data.shards={mnist_shards}", "dist.expect_world_size=2", "log.progress=false",
                       "train.steps=100000", "train.ckpt_every=100000", "log.every=1"], logs)
    procs = start_ranks(cmd, 2, logs)
    deadline = time.monotonic() + 200
    while not ((run / "stats.jsonl").is_file() and (run / "stats.jsonl").read_text().count("\n") >= 2):
        assert all(p.poll() is None for p in procs), (logs / "rank0.err").read_text()[-2000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)  # polling for progress, not standing in for synchronisation
    procs[1].send_signal(signal.SIGTERM)  # Slurm preemption reaching one task first
    wait_ranks(procs, logs, timeout=120)
    ckpts = list_checkpoints(run)
    assert len(ckpts) == 1
    step = ckpts[0][0]
    assert 2 <= step < 100000
    assert load_file(ckpts[0][1])["step"] == step
    assert f"stop requested: checkpointed at step {step}" in (run / "logs" / "rank0.log").read_text()
    for r in (0, 1):
        summary = json.loads((logs / f"result{r}.json").read_text())
        assert summary["step"] == step and not summary["completed"]
