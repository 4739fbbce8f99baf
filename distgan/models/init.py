"""Weight initialisation schemes (DCGAN: conv weights N(0, std), norm gains N(1, std))."""
from __future__ import annotations

import torch.nn as nn


def init_weights(model: nn.Module, scheme: str = "dcgan", std: float = 0.02) -> None:
    """Initialise conv/linear/norm weights of ``model`` in place."""
    if scheme == "default":
        return
    for m in model.modules():
        w = getattr(m, "weight_orig", getattr(m, "weight", None))  # spectral norm keeps weight_orig
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)) and w is not None:
            if scheme == "dcgan":
                nn.init.normal_(w, 0.0, std)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(w)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(w)
            else:
                raise ValueError(f"unknown model.init '{scheme}'")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
