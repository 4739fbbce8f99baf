"""The adversarial, feature-matching, AC and L1 losses on hand-computed values."""
import math

import pytest
import torch

from distgan import losses

LN2 = math.log(2.0)
REAL = torch.tensor([0.0, math.log(3.0)])  # sigmoid: 0.5, 0.75
FAKE = torch.tensor([0.0, -math.log(3.0)])  # sigmoid: 0.5, 0.25


@pytest.mark.parametrize("name", ["bce", "nonsat"])
def test_bce_losses(name):
    # D: -log 0.5 - log 0.75 (real) and -log 0.5 - log 0.75 (fake, 1 - 0.25), each averaged over 2
    want_d = (LN2 + math.log(4 / 3)) / 2 * 2
    assert losses.d_loss(name, REAL, FAKE).item() == pytest.approx(want_d, rel=1e-6)
    # G (non-saturating): -log D(G(z)) = -log 0.5 - log 0.25, averaged
    assert losses.g_loss(name, FAKE).item() == pytest.approx((LN2 + math.log(4.0)) / 2, rel=1e-6)


def test_hinge_loss():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.0])
    # relu(1 - real) = 0, 0.5, 2 -> 2.5/3 ; relu(1 + fake) = 0, 1, 2 -> 3/3
    assert losses.d_loss("hinge", real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert losses.g_loss("hinge", fake).item() == pytest.approx(2.0 / 3)  # -mean(fake)


def test_lsgan_loss():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])
    # 0.5 * mean((real-1)^2) = 0.5 * 2 = 1 ; 0.5 * mean(fake^2) = 0.5 * 2 = 1
    assert losses.d_loss("lsgan", real, fake).item() == pytest.approx(2.0)
    assert losses.g_loss("lsgan", fake).item() == pytest.approx(0.5 * (1 + 1) / 2)


def test_patch_logits_average_over_patches():
    patches = torch.tensor([[0.0, 0.0], [math.log(3.0), math.log(3.0)]])
    assert losses.g_loss("bce", patches).item() == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)


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


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="unknown train.loss 'wgan'.*hinge"):
        losses.d_loss("wgan", REAL, FAKE)
    with pytest.raises(ValueError, match="available"):
        losses.g_loss("wgan", FAKE)
