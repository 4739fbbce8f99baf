"""What each phase minimises: the D and G objectives for every model family.

``d_loss_fn(models, batch, settings)`` and ``g_loss_fn(...)`` build the phase
loss from the batch (``real`` images, ``label`` / ``attrs`` / ``src`` where the
data has them), fresh noise and labels, and report their statistics: the loss,
and the scores of ``train.loss``'s entry in :data:`distgan.losses.LOSSES` (an
adversarial loss is added there, not here). Adding a conditioning mode or another
objective term happens here; the optimisation mechanics (autocast, scaling, DDP,
stepping) stay in ``phases.py``.

With ``train.reuse_fakes`` the D phase draws its fakes through the prepared G
with the graph kept and hands them to the G phase in the batch (``FAKES_KEY``);
the G phase judges them with the updated D and backpropagates through that
graph: one G forward per step (pytorch/examples' DCGAN), the same update as
the default path given the same noise in both phases.

The losses read the models from :class:`~distgan.train.modules.GanModules`
(built by ``engine.wrap_models``, or ``engine.gan_models`` around plain
modules); the loop builds the rest with helpers of this module:

    settings = loss_settings(cfg)
    prep = BatchPrep.for_run(cfg, manifest, info)
    batch = phase_batch(raw_loader_batch, device, prep)   # every D repeat
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from distgan import losses
from distgan.data import normalize
from distgan.data.pipeline import in_order
from distgan.models import select_attributes
from distgan.modelspec import arch_spec
from distgan.train import stats
from distgan.train.modules import GanModules
from distgan.train.noise import NOISE_KEY


@dataclass
class LossSettings:
    loss: str = "bce"
    feature_matching: bool = False
    aux_weight: float = 1.0
    conditional: bool = False
    acgan: bool = False
    l1_weight: float = 100.0  # pix2pix: loss_G = cGAN + lambda * L1
    paired: bool = False
    reuse_fakes: bool = False  # D keeps its fakes' graph through G; the G phase reuses them
    r1_gamma: float = 0.0  # D's loss adds r1_gamma / 2 x E||grad_x D(x)||^2 on the real batch
    r1_every: int = 1  # > 1: the penalty is a phase of its own (r1_loss_fn) every r1_every steps, not a D-loss term


# the batch key under which the D phase hands its fakes (and their labels) to the G phase
FAKES_KEY = "_fakes"


def loss_settings(cfg: Any) -> LossSettings:
    """LossSettings from a full Config (train.* loss fields, model.cond / arch)."""
    tc, mc = cfg.train, cfg.model
    acgan = (mc.cond_d or ("acgan" if mc.cond == "acgan" else "")) == "acgan"
    return LossSettings(tc.loss, tc.feature_matching, tc.aux_weight, mc.cond != "none" or bool(mc.cond_d),
                        acgan, tc.l1_weight, arch_spec(mc.arch).paired, tc.reuse_fakes, tc.r1_gamma,
                        tc.r1_every)


# ----------------------------------------------------------------------------- batches

@dataclass
class BatchPrep:
    """How a raw loader batch becomes a phase batch: pixel normalisation, attribute columns."""
    normalize: str = "minmax"
    mean: Sequence[float] = ()
    std: Sequence[float] = ()
    attr_index: list[int] | None = None  # columns of the shards' attributes to condition on

    @classmethod
    def for_run(cls, cfg: Any, manifest: Any, info: Any) -> "BatchPrep":
        idx = None
        if cfg.model.cond == "multilabel":
            idx = select_attributes(list(info.attributes), list(manifest.attributes))
        return cls(cfg.data.normalize, list(manifest.mean), list(manifest.std), idx)


def phase_batch(raw: dict, device: torch.device, prep: BatchPrep) -> dict:
    """``{"real", "label"?, "attrs"?, "src"?}`` on ``device``, images normalised like the data."""
    def img(x: torch.Tensor) -> torch.Tensor:
        return normalize(x.to(device, non_blocking=True), prep.normalize, prep.mean, prep.std)

    batch = {"real": img(raw["image"])}
    if "label" in raw:
        batch["label"] = raw["label"].to(device, non_blocking=True)
    if "attrs" in raw and prep.attr_index is not None:
        batch["attrs"] = raw["attrs"][:, prep.attr_index].to(device, non_blocking=True)
    if "src" in raw:
        batch["src"] = img(raw["src"])
    return batch


def real_condition(m: GanModules, batch: dict) -> torch.Tensor | None:
    """The real batch's y: class labels, the chosen attributes, or None."""
    if m.space.kind == "attrs":
        if "attrs" not in batch:
            raise ValueError("model.cond=multilabel but the batch carries no attributes: the shards have "
                             "none, or data.attributes was not resolved (use BatchPrep.for_run)")
        return batch["attrs"]
    if m.space.kind == "classes":
        if "label" not in batch:
            raise ValueError("this model is class-conditional but the shards carry no labels")
        return batch["label"]
    return None


def sample_latent(n: int, m: GanModules, device: torch.device,
                  real_y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise z ~ N(0, I) and labels for G.

    Classes: y ~ U{0..c-1} (Viel's Algorithm 3). Attributes: the real batch's
    attribute vectors in a random order, so fake and real share the attribute
    distribution (an imbalanced attribute such as Black_Hair cannot mark fakes).
    """
    z = torch.randn(n, m.z_dim, device=device)
    if m.space.kind == "attrs" and real_y is not None:
        return z, real_y[torch.randperm(real_y.shape[0], device=real_y.device)[:n]]
    y = torch.randint(0, m.num_classes, (n,), device=device) if m.num_classes else None
    return z, y


def batch_latent(batch: dict, m: GanModules, real_y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The micro-batch's noise and fake labels: the step's global noise when the loop attached it
    (:mod:`distgan.train.noise`), otherwise a fresh draw (:func:`sample_latent`)."""
    real = batch["real"]
    given = batch.get(NOISE_KEY)
    if given is None:
        return sample_latent(real.shape[0], m, real.device, real_y)
    z, y = given
    if m.space.kind == "attrs" and real_y is not None:
        y = real_y[torch.randperm(real_y.shape[0], device=real_y.device)]
    return z, y


def _adv(out: Any) -> torch.Tensor:
    """The logits the adversarial loss sees: per patch for PatchGAN, per image otherwise."""
    return out.patch_logits if out.patch_logits is not None else out.logits


# ----------------------------------------------------------------------------- the phase losses

def _r1_term(out_real: Any, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma / 2`` x the R1 penalty of D's output on ``real`` (which requires grad); logs the penalty."""
    r1 = losses.r1_penalty(_adv(out_real), real)
    stats.report("loss_d_r1", r1)
    return 0.5 * gamma * r1


def d_loss_fn(m: GanModules, batch: dict, s: LossSettings) -> torch.Tensor:
    real = batch["real"]
    if m.paired:  # pix2pix: D judges (target, source) against (G(source), source)
        y_real = y_fake = batch["src"]
        with torch.no_grad():
            fake = m.G_raw(y_real)
    else:
        y_real = real_condition(m, batch)
        z, y_fake = batch_latent(batch, m, y_real)
        if s.reuse_fakes:  # through the prepared G with its graph kept: the G phase backpropagates it
            fake = m.G(z, y_fake)
            batch[FAKES_KEY] = (fake, y_fake)
            fake = fake.detach()
        else:
            with torch.no_grad():  # G is not trained here; unwrapped to skip DDP bookkeeping
                fake = m.G_raw(z, y_fake)
    r1_here = s.r1_gamma > 0 and s.r1_every == 1
    if r1_here:  # the penalty differentiates D's output with respect to the real images
        real = real.detach().requires_grad_(True)
    out_real = m.D(real, y_real)
    out_fake = m.D(fake, y_fake)
    adversarial = losses.adversarial(s.loss)
    loss = adversarial.d_loss(_adv(out_real), _adv(out_fake))
    if r1_here:
        loss = loss + _r1_term(out_real, real, s.r1_gamma)
    if s.acgan:  # Viel's Algorithm 4: class loss on real and on fake
        aux = losses.aux_class_loss(out_real.class_logits, y_real) + \
            losses.aux_class_loss(out_fake.class_logits, y_fake)
        stats.report("loss_d_aux", aux)
        stats.report("acc_d_real", (out_real.class_logits.argmax(1) == y_real).float())
        loss = loss + s.aux_weight * aux
    stats.report("loss_d", loss)
    for name, value in adversarial.scores(_adv(out_real), _adv(out_fake)).items():
        stats.report(name, value)
    return loss


def g_loss_fn(m: GanModules, batch: dict, s: LossSettings) -> torch.Tensor:
    real = batch["real"]
    if m.paired:
        y_fake = batch["src"]
        fake = m.G(y_fake)
    elif FAKES_KEY in batch:  # train.reuse_fakes: the D phase's fakes, now judged by the updated D
        fake, y_fake = batch.pop(FAKES_KEY)  # popped: the graph is freed after this backward
    else:
        z, y_fake = batch_latent(batch, m, real_condition(m, batch))
        fake = m.G(z, y_fake)
    out_fake = m.D_raw(fake, y_fake)
    adversarial = losses.adversarial(s.loss)
    if s.feature_matching:  # Viel's Algorithm 2
        with torch.no_grad():
            real_feats = m.D_raw(real, batch["src"] if m.paired else real_condition(m, batch)).features
        loss = losses.feature_matching(real_feats, out_fake.features)
    else:
        loss = adversarial.g_loss(_adv(out_fake))
    if s.acgan:
        aux = losses.aux_class_loss(out_fake.class_logits, y_fake)
        stats.report("loss_g_aux", aux)
        loss = loss + s.aux_weight * aux
    if m.paired and s.l1_weight > 0:  # pix2pix: cGAN + lambda * L1 to the target
        l1 = losses.l1_loss(fake, real)
        stats.report("loss_g_l1", l1)
        loss = loss + s.l1_weight * l1
    stats.report("loss_g", loss)
    for name, value in adversarial.scores(None, _adv(out_fake)).items():  # the fakes as the updated D sees them
        stats.report(f"{name}_g", value)
    return loss


def r1_loss_fn(m: GanModules, batch: dict, s: LossSettings) -> torch.Tensor:
    """Lazy R1 (``train.r1_every > 1``): the penalty alone on the step's real batch, weighted
    ``r1_every`` times, so that applied every ``r1_every`` steps it weighs what it would every step
    (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020)."""
    real = batch["real"].detach().requires_grad_(True)
    y = batch["src"] if m.paired else real_condition(m, batch)
    out = m.D(real, y)
    loss = _r1_term(out, real, s.r1_gamma * s.r1_every)
    if out.class_logits is not None:  # D's class head takes no part here; DDP expects a gradient for it
        loss = loss + 0.0 * out.class_logits.sum()
    return loss


# ----------------------------------------------------------------------------- sample grids

@torch.no_grad()
def fixed_sources(shards: str, spec: Any, num: int, prep: BatchPrep) -> torch.Tensor:
    """The first ``num`` source images of the shard set (rank-independent), normalised:
    the fixed inputs of a pix2pix run's sample grids."""
    out = []
    for raw in in_order(shards, spec.resolution, spec.batch_size):
        out.append(phase_batch(raw, torch.device("cpu"), prep)["src"])
        if sum(len(x) for x in out) >= num:
            break
    return torch.cat(out)[:num]
