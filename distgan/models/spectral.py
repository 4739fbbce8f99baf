"""Spectral normalisation (Miyato et al., "Spectral Normalization for Generative Adversarial Networks").

Built on ``torch.nn.utils.parametrizations.spectral_norm``: the hook-based
``torch.nn.utils.spectral_norm`` is slated for deprecation. The two store the
same tensors under different names, so checkpoints written with the hook
version (``weight_orig``, ``weight_u``, ``weight_v``) still load: each
normalised layer renames those keys as its state is loaded. The parameter
order of a layer is the same in both (bias, then the raw weight), so saved
optimizer states line up too.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch.nn.utils import parametrizations, parametrize

# hook-version key -> parametrization key, relative to the layer's prefix
OLD_KEYS = {"weight_orig": "parametrizations.weight.original",
            "weight_u": "parametrizations.weight.0._u",
            "weight_v": "parametrizations.weight.0._v"}


def spectral_norm(layer: nn.Module) -> nn.Module:
    """Normalise ``layer.weight`` by its largest singular value (one power iteration per training forward)."""
    layer = parametrizations.spectral_norm(layer)
    layer.register_load_state_dict_pre_hook(_rename_old_keys)
    return layer


def raw_weight(layer: nn.Module) -> Any:
    """The trainable weight of a layer: the un-normalised original when spectral norm is on."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return getattr(layer, "weight", None)


def _rename_old_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    for old, new in OLD_KEYS.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)
