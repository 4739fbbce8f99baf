"""Normalisation layers looked up by name, so the trainer can swap in synced versions.

``make_norm("batch", 64)`` -> BatchNorm2d; ``"none"`` -> Identity; ``"sync_batch"`` ->
the synced batch norm of :mod:`distgan.syncbn` (statistics over every rank; plain batch
norm with one process). :class:`CategoricalNorm` is the conditional (categorical) batch
norm of Bordon et al.: one normalisation without its own affine parameters, then a
scale and shift chosen by the category (class, or combination of attributes).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from distgan.syncbn import SyncBatchNorm2d

NormFactory = Callable[[int], nn.Module]
NORMS: dict[str, NormFactory] = {
    "batch": lambda c: nn.BatchNorm2d(c),
    "none": lambda c: nn.Identity(),
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "sync_batch": lambda c: SyncBatchNorm2d(c),
}


def make_norm(name: str, channels: int, affine: bool = True) -> nn.Module:
    """A 2-d normalisation layer for ``channels`` feature maps.

    ``affine=False`` drops the layer's own scale/shift (``weight``/``bias`` set to
    None, which every torch norm and the synced BN treat as "no affine"), for use
    inside :class:`CategoricalNorm`.
    """
    if name not in NORMS:
        raise ValueError(f"unknown norm '{name}'; available: {', '.join(sorted(NORMS))}")
    m = NORMS[name](channels)
    if not affine and isinstance(getattr(m, "weight", None), nn.Parameter):
        m.register_parameter("weight", None)
        m.register_parameter("bias", None)
        if hasattr(m, "affine"):
            m.affine = False
    return m


class CategoricalNorm(nn.Module):
    """Norm ``name`` without affine, then per-category gamma/beta (de Vries et al.; Bordon et al.).

    ``forward(h, cat)``: ``cat`` is a long (B,) category index or float (B, K)
    category weights (soft labels mix the categories' parameters linearly).
    ``gamma``/``beta`` are (K, C) embeddings: K sets of BN parameters.
    """

    def __init__(self, name: str, channels: int, num_categories: int):
        super().__init__()
        if name == "none":
            raise ValueError("conditional batch norm needs a real norm (model.norm_g=batch, sync_batch or "
                             "instance), got 'none'")
        self.norm = make_norm(name, channels, affine=False)
        self.num_categories = num_categories
        self.gamma = nn.Embedding(num_categories, channels)
        self.beta = nn.Embedding(num_categories, channels)
        self.reset_affine()

    def reset_affine(self, std: float = 0.0) -> None:
        """gamma ~ N(1, std), beta = 0: starts as the plain norm (init schemes call this)."""
        nn.init.normal_(self.gamma.weight, 1.0, std)
        nn.init.zeros_(self.beta.weight)

    def forward(self, h: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        if cat.dtype in (torch.long, torch.int32, torch.int64):
            g, b = self.gamma(cat), self.beta(cat)
        else:
            g, b = cat.to(h.dtype) @ self.gamma.weight, cat.to(h.dtype) @ self.beta.weight
        shape = (h.shape[0], -1) + (1,) * (h.dim() - 2)
        return h * g.view(shape) + b.view(shape)
