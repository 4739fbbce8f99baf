"""Learning-rate schedules: constant or cosine (Viel: lr -> lr_min), with linear warm-up."""
from __future__ import annotations

import math

import torch


def lr_factor(step: int, total: int, kind: str, lr: float, lr_min: float, warmup: int = 0) -> float:
    """Multiplier of the base ``lr`` at ``step`` (0-based) of ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or lr == 0:
        return 1.0
    if kind == "cosine":
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return (lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))) / lr
    raise ValueError(f"unknown train.schedule '{kind}'; available: constant, cosine")


def make_scheduler(opt: torch.optim.Optimizer, total: int, kind: str, lr: float, lr_min: float,
                   warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, kind, lr, lr_min, warmup))
