"""The one holder of a run's four modules: G and D as the phases optimise them and as plain modules.

    models.G, models.D          # what phases optimise (DDP modules / DeepSpeed engines, maybe compiled)
    models.G_raw, models.D_raw  # the plain modules (samples, EMA, checkpoints, frozen use)
    models.engine               # the phase engine: backward / no-sync / step (distgan.train.phases)

The phase losses in :mod:`distgan.train.objectives` read the label space and
pairing from it too. It sits below the engines, the phases and the objectives,
which all use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch.nn as nn

from distgan.models import label_space
from distgan.models.labels import LabelSpace
from distgan.modelspec import arch_spec


class PhaseEngine(Protocol):
    """Backward, no-sync, optimizer step and zero-grad of a phase (:mod:`distgan.train.phases` has both)."""

    name: str


@dataclass
class GanModules:
    """G and D as the phases optimise them and as plain modules, with what the objectives need to know."""

    G: nn.Module  # as prepared: DDP-wrapped or a DeepSpeed engine when distributed, maybe compiled
    D: nn.Module
    G_raw: nn.Module  # the plain modules behind the wrappers (samples, EMA, checkpoints, frozen use)
    D_raw: nn.Module
    z_dim: int
    num_classes: int  # categories for sampling and grids: classes, or 2^A attribute combinations
    space: LabelSpace = field(default_factory=lambda: LabelSpace("none"))
    paired: bool = False  # pix2pix: G translates batch["src"]
    engine: PhaseEngine | None = None  # None: the plain PyTorch engine (distgan.train.phases.TorchEngine)

    @property
    def is_deepspeed(self) -> bool:
        return getattr(self.engine, "name", "") == "deepspeed"


def gan_models(G: nn.Module, D: nn.Module, G_raw: nn.Module, D_raw: nn.Module, mc: Any, info: Any,
               engine: PhaseEngine | None = None) -> GanModules:
    """GanModules for the model config ``mc`` and DataInfo ``info`` (label space, pairing)."""
    space = label_space(mc, info)
    return GanModules(G, D, G_raw, D_raw, mc.z_dim, space.num_categories, space, arch_spec(mc.arch).paired,
                      engine)
