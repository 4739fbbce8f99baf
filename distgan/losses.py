"""Adversarial losses by name (``train.loss``); feature matching, the AC-GAN class loss, L1, R1.

Each entry of :data:`LOSSES` is an :class:`AdversarialLoss`: what D minimises, what G
minimises, and what D's outputs mean when they are logged. Everything that names
losses reads this table: the choices of ``train.loss`` (config errors, ``--help-config``),
the phase objectives and the health monitor's ``d_win`` signal. Adding a loss is adding
an entry (``docs/extending.md``).

- ``bce``, ``nonsat``: D minimises BCE(D(x), 1) + BCE(D(G(z)), 0), G minimises
  BCE(D(G(z)), 1). Logs ``d_real``, ``d_fake``: mean sigmoid(D), D's probability that its
  input is real; ``d_win`` reads ``d_fake``.
- ``hinge``: D minimises relu(1 - D(x)) + relu(1 + D(G(z))), G minimises -D(G(z)). D's
  output is an unbounded critic value, no probability. Logs ``d_real_raw``,
  ``d_fake_raw`` (mean output), ``d_real_above``, ``d_fake_above`` (share above the
  decision boundary 0) and ``d_real_in_margin``, ``d_fake_in_margin`` (share with
  D(x) < 1, D(G(z)) > -1: the outputs D's loss still pushes); ``d_win`` reads
  ``d_fake_in_margin``.
- ``lsgan``: D minimises (D(x) - 1)^2 / 2 + D(G(z))^2 / 2, G minimises
  (D(G(z)) - 1)^2 / 2. Logs ``d_real``, ``d_fake``: mean output; ``d_win`` reads ``d_fake``.

``bce`` is Viel's Algorithm 1 with the non-saturating G loss of Goodfellow et al.,
"Generative Adversarial Nets" (``nonsat`` names it for readers who know it that way);
the sigmoid is folded into the loss for numerical stability. ``hinge`` is the loss of
Lim & Ye, "Geometric GAN", and Miyato et al., "Spectral Normalization for Generative
Adversarial Networks". ``lsgan`` is Mao et al., "Least Squares Generative Adversarial
Networks", with targets 0 (fake) and 1 (real): its optimal D is
p_data / (p_data + p_G), the same as the BCE discriminator's probability, so its mean
output is logged under the same names. The G phase logs the fake side again, judged by
the updated D, with a ``_g`` suffix (``d_fake_g``, ``d_fake_raw_g``, ...).

D's outputs may be (B,) per image or (B, P) per patch (PatchGAN): every loss and score
is a mean over all entries.

Importing this module does not import torch: :mod:`distgan.config` reads the names of
:data:`LOSSES` when it loads a config, and launchers load configs without torch. The
loss functions work on the tensors they are given; the few that need
``torch.nn.functional`` import it when first called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class AdversarialLoss:
    """One adversarial loss, given D's raw outputs (logits or critic values)."""

    d_loss: Callable[[Tensor, Tensor], Tensor]
    """D's loss from its outputs on the real batch and on the fake batch."""
    g_loss: Callable[[Tensor], Tensor]
    """G's loss from D's outputs on the fake batch."""
    scores: Callable[[Tensor | None, Tensor], dict[str, Tensor]]
    """What D's outputs mean, by the name they are logged under (one value per output; the
    log keeps the mean): ``scores(real, fake)`` in the D phase, ``scores(None, fake)`` in the
    G phase. Probabilities only where D's output is one."""
    realness: str
    """The D-phase score whose mean, in [0, 1], says how real D finds the fakes (a mean
    probability, or the share of fakes D has not yet rejected with confidence). The health
    signal ``d_win`` fires when its mean over a window falls below ``health.d_fake_min``."""


def _bce(logits: Tensor, target: float) -> Tensor:
    import torch  # noqa: PLC0415 - on first call: loading a config imports this module and must not load torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _probabilities(real: Tensor | None, fake: Tensor) -> dict[str, Tensor]:
    """D's output is a logit: sigmoid(D(x)) is its probability that x is real."""
    return ({} if real is None else {"d_real": real.sigmoid()}) | {"d_fake": fake.sigmoid()}


def _regression(real: Tensor | None, fake: Tensor) -> dict[str, Tensor]:
    """D regresses 1 (real) and 0 (fake): its output itself estimates the probability of real."""
    return ({} if real is None else {"d_real": real}) | {"d_fake": fake}


def _hinge_scores(real: Tensor | None, fake: Tensor) -> dict[str, Tensor]:
    """D's output is an unbounded critic value: its mean, the share above the decision boundary 0
    (D's accuracy: ``d_real_above`` and 1 - ``d_fake_above``), and the share inside the margin
    (D(x) < 1, D(G(z)) > -1): the outputs D's loss still pushes; the others it has beaten."""
    out: dict[str, Tensor] = {}
    for side, x, sign in (("real", real, 1.0), ("fake", fake, -1.0)):
        if x is not None:
            out[f"d_{side}_raw"] = x
            out[f"d_{side}_above"] = (x > 0).float()
            out[f"d_{side}_in_margin"] = (sign * x < 1.0).float()
    return out


_NONSATURATING = AdversarialLoss(
    d_loss=lambda real, fake: _bce(real, 1.0) + _bce(fake, 0.0),
    g_loss=lambda fake: _bce(fake, 1.0),
    scores=_probabilities, realness="d_fake")

LOSSES: dict[str, AdversarialLoss] = {
    "bce": _NONSATURATING,
    "nonsat": _NONSATURATING,
    "hinge": AdversarialLoss(
        d_loss=lambda real, fake: (1.0 - real).relu().mean() + (1.0 + fake).relu().mean(),
        g_loss=lambda fake: -fake.mean(),
        # a healthy D keeps the fakes around -1, all past the boundary 0, for many steps (measured on the
        # debug preset): D has won when even its margin holds (almost) no fake, not when the boundary does
        scores=_hinge_scores, realness="d_fake_in_margin"),
    "lsgan": AdversarialLoss(
        d_loss=lambda real, fake: 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean(),
        g_loss=lambda fake: 0.5 * ((fake - 1.0) ** 2).mean(),
        scores=_regression, realness="d_fake"),
}


def adversarial(name: str) -> AdversarialLoss:
    """The entry of ``train.loss = name``; a ValueError naming the registered losses otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown train.loss '{name}'; available: {', '.join(LOSSES)}") from None


def feature_matching(real_feats: Tensor, fake_feats: Tensor) -> Tensor:
    """Viel: MSE between batch-mean D features of real and fake images."""
    import torch.nn.functional as F  # noqa: PLC0415 - on first call, as in _bce

    return F.mse_loss(fake_feats.mean(0), real_feats.detach().mean(0))


def aux_class_loss(class_logits: Tensor, labels: Tensor) -> Tensor:
    """AC-GAN auxiliary classifier loss (cross entropy with the conditioning labels)."""
    import torch.nn.functional as F  # noqa: PLC0415 - on first call, as in _bce

    return F.cross_entropy(class_logits, labels)


def r1_penalty(real_out: Tensor, real: Tensor) -> Tensor:
    """Mean over the batch of the squared norm of D's gradient at the real images, ``E ||grad_x D(x)||^2``
    (Mescheder, Geiger, Nowozin: "Which Training Methods for GANs do actually Converge?", ICML 2018).

    ``real`` must require grad and ``real_out`` be D's raw output on it (per image or per patch: the
    outputs are summed per image first). The gradient keeps its graph, so the penalty's own gradient
    reaches D's weights in the phase's single backward.
    """
    import torch  # noqa: PLC0415 - on first call, as in _bce

    (grad,) = torch.autograd.grad(real_out.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def l1_loss(fake: Tensor, target: Tensor) -> Tensor:
    """pix2pix reconstruction term: mean |G(src) - target|."""
    return (fake - target).abs().mean()
