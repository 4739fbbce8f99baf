"""Exponential moving average of G's weights (buffers are copied, not averaged)."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, start: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.start = decay, start

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = 0.0 if step < self.start else self.decay
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, sd: dict, ctx: Any = None) -> None:
        """Restore the averaged weights (the same on every world size: ``ctx`` changes nothing)."""
        self.model.load_state_dict(sd)
