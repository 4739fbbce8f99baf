"""Trainer behaviour in one process: non-finite losses, precision, schedules, EMA, world-size checks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from distgan.checkpoint import load_file
from distgan.rundir import list_checkpoints
from distgan.train import train
from distgan.train.phases import NonFiniteLoss


@pytest.mark.timeout(120)
def test_nonfinite_loss_stops_naming_phase_and_step_and_skip_option(debug_cfg, tmp_path):
    run = tmp_path / "run"
    train(debug_cfg("train.steps=4", "train.ckpt_every=4"), run)
    good = load_file(run / "checkpoints" / "step_00000004.pt")
    # an absurd learning rate (the config wins on resume) blows the weights up within a step
    blow = ("train.steps=8", "train.ckpt_every=100", "train.lr_d=1e38", "train.lr_g=1e38")
    with pytest.raises(NonFiniteLoss, match=r"non-finite (D|G) loss .* in phase (D|G) of step [56] "):
        train(debug_cfg(*blow), run)
    assert [s for s, _ in list_checkpoints(run)] == [4]  # nothing new, nothing corrupt
    again = load_file(run / "checkpoints" / "step_00000004.pt")
    assert all(torch.equal(v, again["G"][k]) for k, v in good["G"].items())
    out = train(debug_cfg(*blow, "train.skip_nonfinite=true", "log.every=1"), run)
    assert out["completed"] and out["step"] == 8
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    skipped = [r for r in rows if r["step"] > 4 and (r.get("skipped_D", 0) or r.get("skipped_G", 0))]
    assert skipped  # steps were skipped and counted rather than stopping the run


def test_bf16_autocast_really_runs_in_bf16_and_fp16_is_refused_on_cpu():
    from distgan.config import ModelConfig
    from distgan.models import DataInfo, build_models
    from distgan.train.precision import Precision

    G, D = build_models(ModelConfig(cond="none", width=4, z_dim=4), DataInfo(channels=1, resolution=8))
    with Precision("bf16", torch.device("cpu")).autocast():
        out = D(G(torch.randn(2, 4)))
    assert out.logits.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))


@pytest.mark.timeout(120)
def test_bf16_run_and_ema_saved_used_and_restored(debug_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = ("train.precision=bf16", "train.ema=true", "train.ema_decay=0.5", "train.ckpt_every=2")
    train(debug_cfg("train.steps=2", *cfg), run)
    ck = load_file(run / "checkpoints" / "step_00000002.pt")
    assert ck["ema"].keys() == ck["G"].keys()
    assert any(not torch.equal(ck["ema"][k], ck["G"][k]) for k in ck["G"] if ck["G"][k].is_floating_point())
    out = train(debug_cfg("train.steps=3", *cfg), run)
    assert out["completed"]
    ck3 = load_file(run / "checkpoints" / "step_00000003.pt")
    # EMA continued from the restored average: ema3 = 0.5 ema2 + 0.5 G3 for every weight
    k = next(k for k in ck3["G"] if k.endswith("weight") and ck3["G"][k].dim() == 4)
    assert torch.allclose(ck3["ema"][k], 0.5 * ck["ema"][k] + 0.5 * ck3["G"][k], atol=1e-6)
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss_d"]) for r in rows)


def test_expected_world_size_mismatch_is_an_error(debug_cfg, tmp_path):
    with pytest.raises(RuntimeError, match="expect_world_size=2 but this process joined a group of 1"):
        train(debug_cfg("dist.expect_world_size=2"), tmp_path / "run")


def test_schedules_cosine_warmup_constant():
    from distgan.train.schedule import lr_factor

    assert lr_factor(0, 100, "cosine", 1e-3, 1e-5, warmup=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, "cosine", 1e-3, 1e-5, warmup=10) == pytest.approx(1.0)
    assert lr_factor(10, 100, "cosine", 1e-3, 1e-5, warmup=10) == pytest.approx(1.0)
    assert lr_factor(100, 100, "cosine", 1e-3, 1e-5, warmup=10) * 1e-3 == pytest.approx(1e-5)
    assert lr_factor(55, 100, "cosine", 1e-3, 0.0, warmup=10) == pytest.approx(0.5)
    assert lr_factor(50, 100, "constant", 1e-3, 0.0) == 1.0
    with pytest.raises(ValueError, match="unknown train.schedule 'linear'"):
        lr_factor(0, 10, "linear", 1e-3, 0.0)


@pytest.mark.timeout(120)
def test_device_cache_and_channels_last_switches_train_and_resume(debug_cfg, tmp_path):
    run = tmp_path / "run"
    opts = ("data.device_cache=true", "model.channels_last=true", "train.fused_adam=true", "train.ckpt_every=2")
    train(debug_cfg("train.steps=2", *opts), run)
    ck = load_file(run / "checkpoints" / "step_00000002.pt")
    # the in-memory stream's global position is checkpointed
    assert ck["data"] == {"epoch": 0, "batch_index": 2, "global_batch": 16, "world": 1}
    out = train(debug_cfg("train.steps=4", *opts), run)
    assert out["completed"] and load_file(run / "checkpoints" / "step_00000004.pt")["data"]["batch_index"] == 4


@pytest.mark.timeout(120)
def test_health_signal_in_stop_on_checkpoints_and_stops(debug_cfg, tmp_path):
    run = tmp_path / "run"
    # d_fake_min=1 makes "D wins" fire as soon as a full window of 3 logged steps exists
    out = train(debug_cfg("train.steps=20", "log.every=1", "health.window=3", "health.d_fake_min=1.0",
                          "train.stop_on=[d_win]"), run)
    assert not out["completed"] and out["step"] == 3
    text = (run / "logs" / "rank0.log").read_text()
    assert "health warning at step 3: d_win" in text and "health signal in train.stop_on" in text
    assert [s for s, _ in list_checkpoints(run)] == [3]
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert "health/d_fake" in rows[-1]


@pytest.mark.timeout(180)
def test_a_resumed_run_warns_where_an_uninterrupted_one_does(debug_cfg, tmp_path):
    """The health monitor is a checkpoint part: its window continues across a resume (a fresh
    window would stay silent for the first health.window logged steps)."""
    import re

    opts = ("train.steps=8", "log.every=1", "health.window=3", "health.d_fake_min=1.0", "train.ckpt_every=4")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(debug_cfg(*opts), straight)
    train(debug_cfg(*opts, "train.stop_at=4"), resumed)
    assert load_file(resumed / "checkpoints" / "step_00000004.pt")["health"]["last_warned"]["d_win"] == 3
    train(debug_cfg(*opts), resumed)

    def warned(run) -> list[int]:
        return [int(s) for s in re.findall(r"health warning at step (\d+): d_win", (run / "logs" / "rank0.log")
                                           .read_text())]
    assert warned(straight) == [3, 6]
    assert [s for s in warned(resumed) if s > 4] == [6]  # from a fresh window it would come at step 7


def test_one_loss_scaler_per_optimizer_each_stepped_once_and_backing_off_alone():
    """The fp16 mechanics (GradScaler per phase), exercised with CPU scalers on fp32 compute."""
    from distgan.config import ModelConfig
    from distgan.models import DataInfo, build_models
    from distgan.train.engine import gan_models
    from distgan.train.objectives import LossSettings, d_loss_fn, g_loss_fn
    from distgan.train.phases import Phase, run_phase
    from distgan.train.precision import Precision
    from distgan.train.schedule import make_scheduler

    torch.manual_seed(0)
    mc = ModelConfig(cond="none", norm="none", width=4, z_dim=4)
    info = DataInfo(channels=1, resolution=8)
    G, D = build_models(mc, info)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    scaler = lambda: torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)  # noqa: E731
    d = Phase(name="D", model=D, opt=opt_d, sched=make_scheduler(opt_d, 10, "constant", 1e-3, 0), scaler=scaler(),
              loss_fn=d_loss_fn, others=[G])
    g = Phase(name="G", model=G, opt=opt_g, sched=make_scheduler(opt_g, 10, "constant", 1e-3, 0), scaler=scaler(),
              loss_fn=g_loss_fn, others=[D], new_batch=False)
    m, prec = gan_models(G, D, G, D, mc, info), Precision("fp32", torch.device("cpu"))
    batch = {"real": torch.rand(4, 1, 8, 8) * 2 - 1}
    for ph in (d, g):
        run_phase(ph, m, batch, LossSettings(), prec, 0)
    assert d.scaler.get_scale() == g.scaler.get_scale() == 2048.0  # each grew once: stepped once per iteration
    g.scaler.update(float("inf"))  # G's scaled gradients overflow next time: only G's step is skipped
    g_before = [p.detach().clone() for p in G.parameters()]
    d_before = [p.detach().clone() for p in D.parameters()]
    for ph in (d, g):
        run_phase(ph, m, batch, LossSettings(), prec, 1)
    assert all(torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert d.scaler.get_scale() == 4096.0  # D's scaler never saw G's overflow
    g.scaler.update(1024.0)
    run_phase(g, m, batch, LossSettings(), prec, 2)
    assert g.scaler.get_scale() == 2048.0 and not all(torch.equal(a, b) for a, b in zip(g_before, G.parameters()))


@pytest.mark.timeout(120)
def test_sync_free_steps_match_and_skip_nonfinite_updates_on_device(debug_cfg, tmp_path):
    common = ("train.steps=6", "train.ckpt_every=6", "train.fused_adam=true")
    train(debug_cfg(*common), tmp_path / "plain")
    train(debug_cfg(*common, "train.sync_free=true"), tmp_path / "free")
    a = load_file(tmp_path / "plain" / "checkpoints" / "step_00000006.pt")
    b = load_file(tmp_path / "free" / "checkpoints" / "step_00000006.pt")
    assert all(torch.equal(v, b["G"][k]) for k, v in a["G"].items())  # same math, no per-step readback
    assert all(torch.equal(v, b["D"][k]) for k, v in a["D"].items())
    # blow the weights up: the failure is found at the next log interval, names the phase and the
    # first bad step, and nothing is saved from the bad steps
    run = tmp_path / "free"
    blow = ("train.steps=12", "train.ckpt_every=100", "log.every=3", "train.fused_adam=true",
            "train.sync_free=true", "train.lr_d=1e38", "train.lr_g=1e38")
    with pytest.raises(NonFiniteLoss,
                       match=r"non-finite (D|G) loss in phase (D|G) of step (7|8|9) .*skipped on the device"):
        train(debug_cfg(*blow), run)
    assert [s for s, _ in list_checkpoints(run)] == [6]
    out = train(debug_cfg(*blow, "train.skip_nonfinite=true"), run)
    assert out["completed"] and out["step"] == 12
    last = load_file(run / "checkpoints" / "step_00000012.pt")
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert any(r.get("skipped_D", 0) or r.get("skipped_G", 0) for r in rows if r["step"] > 6)
    # the kernel skipped the bad updates: every weight is still finite
    assert all(torch.isfinite(v).all() for v in last["G"].values() if v.is_floating_point())


def test_sync_free_needs_fused_adam(debug_cfg, tmp_path):
    with pytest.raises(ValueError, match="sync_free=true needs train.fused_adam=true"):
        train(debug_cfg("train.steps=2", "train.sync_free=true"), tmp_path / "run")
