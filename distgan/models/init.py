"""Weight initialisation schemes (``model.init``; ``dcgan``: conv/linear weights N(0, std), norm gains N(1, std)).

``dcgan`` is Radford et al.'s N(0, 0.02) (``model.init_std``); ``xavier`` and
``orthogonal`` are the usual alternatives; ``default`` keeps torch's own init.
Norm gains and conditional-BN gains start near 1 under every scheme but
``default``; embeddings that multiply the noise keep their own unit-variance init.
"""
from __future__ import annotations

import torch.nn as nn

from distgan.models.norms import CategoricalNorm
from distgan.models.spectral import raw_weight

SCHEMES = ("dcgan", "default", "xavier", "orthogonal")
_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)


def init_weights(model: nn.Module, scheme: str = "dcgan", std: float = 0.02) -> None:
    """Initialise conv/linear/embedding/norm weights of ``model`` in place."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown model.init '{scheme}'; available: {', '.join(SCHEMES)}")
    if scheme == "default":
        return
    for m in model.modules():
        w = raw_weight(m)  # spectral norm: initialise the raw weight, not the normalised view
        if isinstance(m, _WEIGHTED) and w is not None:
            if scheme == "dcgan":
                nn.init.normal_(w, 0.0, std)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(w)
            else:
                nn.init.orthogonal_(w)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    # second pass: layers with their own init, overwritten by the generic pass above
    for m in model.modules():
        if isinstance(m, CategoricalNorm):
            m.reset_affine(std)
        elif hasattr(m, "reset_for_init"):
            m.reset_for_init(std)
