"""The adversarial-loss registry (losses, logged scores, config choices) and the other loss terms,
on hand-computed values."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distgan import losses
from distgan.config import ConfigError, HealthConfig, describe, load_config
from distgan.train.health import HealthMonitor

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2.0)
REAL = torch.tensor([0.0, math.log(3.0)])  # sigmoid: 0.5, 0.75
FAKE = torch.tensor([0.0, -math.log(3.0)])  # sigmoid: 0.5, 0.25


def _means(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: pytest.approx(v.float().mean().item(), abs=1e-6) for k, v in scores.items()}


@pytest.mark.parametrize("name", ["bce", "nonsat"])
def test_bce_losses_and_probabilities(name):
    loss = losses.adversarial(name)
    # D: -log 0.5 - log 0.75 (real) and -log 0.5 - log 0.75 (fake, 1 - 0.25), each averaged over 2
    want_d = (LN2 + math.log(4 / 3)) / 2 * 2
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(want_d, rel=1e-6)
    # G (non-saturating): -log D(G(z)) = -log 0.5 - log 0.25, averaged
    assert loss.g_loss(FAKE).item() == pytest.approx((LN2 + math.log(4.0)) / 2, rel=1e-6)
    # logged: D's probabilities (the names TensorBoard, stats.jsonl and the report read)
    assert _means(loss.scores(REAL, FAKE)) == {"d_real": 0.625, "d_fake": 0.375}
    assert _means(loss.scores(None, FAKE)) == {"d_fake": 0.375}
    assert loss.realness == "d_fake"


def test_hinge_loss_and_critic_scores():
    loss = losses.adversarial("hinge")
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.0])
    # relu(1 - real) = 0, 0.5, 2 -> 2.5/3 ; relu(1 + fake) = 0, 1, 2 -> 3/3
    assert loss.d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert loss.g_loss(fake).item() == pytest.approx(2.0 / 3)  # -mean(fake)
    # no probabilities: mean critic value, share above the boundary 0, share inside the margin
    assert _means(loss.scores(real, fake)) == {
        "d_real_raw": 0.5, "d_real_above": 2 / 3, "d_real_in_margin": 2 / 3,  # 0.5 and -1 are < 1
        "d_fake_raw": -2 / 3, "d_fake_above": 1 / 3, "d_fake_in_margin": 2 / 3}  # 0 and 1 are > -1
    assert set(loss.scores(None, fake)) == {"d_fake_raw", "d_fake_above", "d_fake_in_margin"}
    assert loss.realness == "d_fake_in_margin"


def test_lsgan_loss_logs_its_regression_output():
    loss = losses.adversarial("lsgan")
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])
    # 0.5 * mean((real-1)^2) = 0.5 * 2 = 1 ; 0.5 * mean(fake^2) = 0.5 * 2 = 1
    assert loss.d_loss(real, fake).item() == pytest.approx(2.0)
    assert loss.g_loss(fake).item() == pytest.approx(0.5 * (1 + 1) / 2)
    # targets 1 / 0: the output itself estimates the probability of real, not its sigmoid
    assert _means(loss.scores(real, fake)) == {"d_real": 2.0, "d_fake": 1.0}


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_every_entry_logs_the_score_d_win_reads_in_the_d_phase(name):
    loss = losses.adversarial(name)
    real, fake = torch.randn(8, 3), torch.randn(8, 3)
    scores = loss.scores(real, fake)
    assert loss.realness in scores
    assert set(loss.scores(None, fake)) <= set(scores)  # the G phase logs the fake side only
    assert not any(k.startswith("d_real") for k in loss.scores(None, fake))
    assert HealthMonitor(HealthConfig(), loss=name).realness == loss.realness


def test_patch_logits_average_over_patches():
    patches = torch.tensor([[0.0, 0.0], [math.log(3.0), math.log(3.0)]])
    assert losses.adversarial("bce").g_loss(patches).item() == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)


def test_feature_matching_is_mse_of_batch_means():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean 2, 3
    fake = torch.tensor([[0.0, 0.0], [2.0, 0.0]], requires_grad=True)  # mean 1, 0
    loss = losses.feature_matching(real, fake)
    assert loss.item() == pytest.approx(((2 - 1) ** 2 + (3 - 0) ** 2) / 2)
    loss.backward()  # gradient reaches the fake features only
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_aux_class_loss_and_l1():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    y = torch.tensor([0, 2])
    assert losses.aux_class_loss(logits, y).item() == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2, rel=1e-6)
    assert losses.l1_loss(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.0])).item() == pytest.approx(0.75)


# ----------------------------------------------------------------------------- the registry is the list

def test_unknown_loss_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown train.loss 'nosuch'; available: bce, nonsat, hinge, lsgan"):
        losses.adversarial("nosuch")
    with pytest.raises(ConfigError, match="train.loss.*'nosuch'.*'bce', 'nonsat', 'hinge', 'lsgan'"):
        load_config(overrides=["train.loss=nosuch"])
    line = next(ln for ln in describe().splitlines() if ln.startswith("train.loss "))
    assert all(repr(name) in line for name in losses.LOSSES)


def test_loading_a_config_checks_the_loss_without_importing_torch():
    # distgan.config reads the loss names when it loads a config; launchers load configs without torch
    code = ("import sys; from distgan.config import load_config; "
            "cfg = load_config('configs/debug.yaml', ['train.loss=hinge']); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(cfg.train.loss)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hinge"


# The worked example of docs/extending.md, registered for these tests only: the loss of Arjovsky
# et al., "Wasserstein GAN". Adding it for real is this entry in distgan/losses.py and a test.
def _wasserstein_scores(real, fake):
    out = {"d_fake_raw": fake}
    if real is not None:  # D phase
        out |= {"d_real_raw": real, "d_fake_above_real": (fake > real.mean()).float()}
    return out


WASSERSTEIN = losses.AdversarialLoss(
    d_loss=lambda real, fake: fake.mean() - real.mean(),
    g_loss=lambda fake: -fake.mean(),
    scores=_wasserstein_scores, realness="d_fake_above_real")


def test_the_worked_example_computes_what_the_docs_say():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([0.0, 2.5])
    assert WASSERSTEIN.d_loss(real, fake).item() == pytest.approx(1.25 - 2.0)
    assert WASSERSTEIN.g_loss(fake).item() == pytest.approx(-1.25)
    assert _means(WASSERSTEIN.scores(real, fake)) == {"d_real_raw": 2.0, "d_fake_raw": 1.25,
                                                      "d_fake_above_real": 0.5}  # 2.5 > mean(real) = 2


def test_a_new_entry_is_a_config_choice_and_trains_without_other_edits(debug_cfg, tmp_path, monkeypatch):
    from distgan.train import train

    with pytest.raises(ConfigError, match="'wgan'"):
        debug_cfg("train.loss=wgan")
    monkeypatch.setitem(losses.LOSSES, "wgan", WASSERSTEIN)
    assert "'wgan'" in next(ln for ln in describe().splitlines() if ln.startswith("train.loss "))
    run = tmp_path / "run"
    # d_fake_min=1 makes d_win fire on the entry's own score as soon as a full window exists
    out = train(debug_cfg("train.loss=wgan", "model.spectral_norm=true", "train.steps=4", "log.every=1",
                          "health.window=3", "health.d_fake_min=1.0", "train.ckpt_every=4"), run)
    assert out["completed"]
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert {"d_real_raw", "d_fake_raw", "d_fake_above_real", "d_fake_raw_g"} <= set(rows[-1])
    assert not {"d_real", "d_fake", "d_fake_g"} & set(rows[-1])  # no probabilities where D gives none
    assert "health/d_fake_above_real" in rows[-1]
    assert "d_win (mean d_fake_above_real over window" in (run / "logs" / "rank0.log").read_text()


def test_r1_penalty_is_the_squared_input_gradient_and_its_own_gradient_reaches_the_weights():
    """D(x) = x . w has input gradient w at every x: R1 = ||w||^2, whose gradient is 2w."""
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    real = torch.randn(4, 3, requires_grad=True)
    r1 = losses.r1_penalty(real @ w, real)
    assert r1.item() == pytest.approx(5.25)
    r1.backward()
    assert torch.allclose(w.grad, 2 * w.detach())
