"""Training-health monitors: detectors on synthetic signals, and real runs (healthy vs broken)."""
import math

import pytest
import torch

from distgan.config import HealthConfig
from distgan.train.health import HealthMonitor, batch_diversity, mean_pairwise_distance


def _feed(mon, rows, every=10):
    out = []
    for i, row in enumerate(rows, start=1):
        out += mon.observe(i * every, row)
    return out


def test_mean_pairwise_distance_matches_hand_value():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    # pairs: (0,1)=5, (0,2)=0, (1,2)=5 -> ordered mean = 2*(5+0+5)/6
    assert mean_pairwise_distance(x) == pytest.approx(10 / 3)
    same = torch.ones(5, 1, 4, 4)
    labels = torch.tensor([0, 0, 1, 1, 1])
    assert batch_diversity(same, labels) == 0.0


def test_healthy_signals_stay_quiet():
    mon = HealthMonitor(HealthConfig(window=50))
    rows = [{"d_fake": 0.35 + 0.05 * math.sin(i), "grad_norm_g": 1.0 + 0.2 * math.cos(i),
             "loss_g": 1.2 + 0.2 * math.sin(i)} for i in range(30)]
    assert _feed(mon, rows) == []


def test_d_win_and_vanishing_grad_fire_with_step_signal_threshold():
    mon = HealthMonitor(HealthConfig(window=50))
    rows = [{"d_fake": 0.4, "grad_norm_g": 2.0, "loss_g": 1.0}] * 6
    rows += [{"d_fake": 0.001, "grad_norm_g": 1e-5, "loss_g": 7.0}] * 10
    warnings = _feed(mon, rows)
    signals = {w.signal for w in warnings}
    assert {"d_win", "vanishing_grad"} <= signals
    w = next(w for w in warnings if w.signal == "d_win")
    assert w.threshold == 0.02 and w.value < 0.02 and w.step > 60
    assert "d_win" in w.message() and f"step {w.step}" in w.message() and "threshold 0.02" in w.message()
    # one warning per signal per window, not one per log line
    assert sum(1 for x in warnings if x.signal == "d_win") <= math.ceil(10 * 10 / 50)


def test_d_win_reads_the_score_of_the_runs_loss():
    # hinge's D gives no probability: d_win reads the share of fakes D has not pushed past its margin
    rows = [{"d_fake_in_margin": 0.4, "d_fake": 0.4}] * 6 + [{"d_fake_in_margin": 0.0, "d_fake": 0.5}] * 10
    mon = HealthMonitor(HealthConfig(window=50), loss="hinge")
    w = next(w for w in _feed(mon, rows) if w.signal == "d_win")
    assert w.value == 0.0 and w.threshold == 0.02 and w.step > 60
    assert "mean d_fake_in_margin over window" in w.message() and "d_fake_in_margin" in mon.values
    # a low d_fake is a bce run's signal, not a hinge run's
    low_probability = [{"d_fake": 0.001, "d_fake_in_margin": 0.5}] * 16
    assert _feed(HealthMonitor(HealthConfig(window=50), loss="hinge"), low_probability) == []
    assert {w.signal for w in _feed(HealthMonitor(HealthConfig(window=50)), low_probability)} == {"d_win"}
    with pytest.raises(ValueError, match="unknown train.loss 'nosuch'; available: bce"):
        HealthMonitor(HealthConfig(), loss="nosuch")


def test_oscillation_needs_swings_and_no_metric_progress():
    rows = [{"loss_g": 0.1 if i % 2 else 5.0} for i in range(12)]
    assert any(w.signal == "oscillation" for w in _feed(HealthMonitor(HealthConfig(window=50)), rows))
    mon = HealthMonitor(HealthConfig(window=50))
    out = []
    for i, row in enumerate(rows, start=1):
        mon.observe_metric(i * 10, 100.0 - i)  # the main metric keeps improving
        out += mon.observe(i * 10, row)
    assert not any(w.signal == "oscillation" for w in out)


def test_mode_collapse_on_constant_generator():
    mon = HealthMonitor(HealthConfig(window=10, diversity_ratio=0.2))
    real = torch.rand(32, 1, 8, 8) * 2 - 1
    labels = torch.arange(4).repeat(8)

    class Constant(torch.nn.Module):
        def forward(self, z, y):
            return torch.zeros(len(z), 1, 8, 8) + y.float().view(-1, 1, 1, 1) / 10

    warnings = mon.check_diversity(100, Constant(), real, labels, torch.randn(32, 4))
    assert [w.signal for w in warnings] == ["mode_collapse"]
    assert warnings[0].value == 0.0
    assert mon.check_diversity(200, Constant(), real, labels, torch.randn(32, 4))  # next window: again
    early = HealthMonitor(HealthConfig(window=50))
    assert early.check_diversity(40, Constant(), real, labels, torch.randn(32, 4)) == []  # before a full window


def test_unknown_stop_signal_is_an_error():
    with pytest.raises(ValueError, match="train.stop_on.*'collapse'.*mode_collapse"):
        HealthMonitor(HealthConfig(), ["collapse"])


# ----------------------------------------------------------------------------- real runs

def _run(debug_cfg, tmp_path, *overrides):
    from distgan.train import train

    run = tmp_path / "run"
    # checks from step 50 (the default window) on: an untrained G's first blobs are not "collapse"
    train(debug_cfg("train.steps=100", "log.every=5", "log.sample_every=20", "train.ckpt_every=100",
                    *overrides), run)
    return (run / "logs" / "rank0.log").read_text()


def test_healthy_debug_run_stays_quiet(debug_cfg, tmp_path):
    log = _run(debug_cfg, tmp_path)
    assert "health warning" not in log


def test_discriminator_win_is_reported(debug_cfg, tmp_path):
    # a huge D learning rate lets D reject every fake: D(G(z)) -> 0 (Bordon et al.'s failure sign)
    log = _run(debug_cfg, tmp_path, "train.lr_d=0.05", "train.lr_g=1e-6")
    assert "d_win" in log
    line = next(ln for ln in log.splitlines() if "d_win" in ln)
    assert "threshold 0.02" in line and "health warning at step" in line


def test_generator_fed_constant_noise_is_reported_as_mode_collapse(debug_cfg, tmp_path, monkeypatch):
    from distgan.models import dcgan

    original = dcgan.DCGANGenerator.forward
    monkeypatch.setattr(dcgan.DCGANGenerator, "forward", lambda self, z, y=None: original(self, z * 0, y))
    log = _run(debug_cfg, tmp_path)
    assert "mode_collapse" in log
    assert "d_win" not in log  # the matching warning, not every warning


def test_hinge_discriminator_win_is_reported_and_a_healthy_hinge_run_is_not(debug_cfg, tmp_path):
    # a healthy hinge D keeps the fakes near -1, all past its boundary 0: the margin is what it must empty
    assert "health warning" not in _run(debug_cfg, tmp_path / "healthy", "train.loss=hinge")
    log = _run(debug_cfg, tmp_path / "won", "train.loss=hinge", "train.lr_d=0.05", "train.lr_g=1e-6")
    line = next(ln for ln in log.splitlines() if "d_win" in ln)
    assert "mean d_fake_in_margin over window" in line and "threshold 0.02" in line
