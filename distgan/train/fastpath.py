"""Speed switches, each a config flag whose result matches the plain path to tolerance.

- ``model.channels_last``: NHWC memory format for G, D and their inputs (faster
  convolutions with cuDNN on tensor cores; neutral-to-positive on CPU).
- ``train.compile``: ``torch.compile`` of G and D (fuses the elementwise ops
  around each conv; first steps pay the compile time).
- ``train.fused_adam``: the fused Adam kernel (CUDA and CPU).
- ``train.tf32``: TF32 matmuls/convs on Ampere+ GPUs (no effect on CPU).
Pinned memory + non-blocking copies live in the data loader / loop, and the
GPU-resident data set in :mod:`distgan.data.device_cache`.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


def setup_backends(tf32: bool) -> None:
    """Process-wide backend flags (TF32); call once per rank before building models."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if torch.cuda.is_available():
        # fixed shapes every step: autotune once; not when the user asked for deterministic
        # algorithms (autotuning may pick a different algorithm, and so other bits, per process)
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()


def to_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """Put 4-d weights in channels_last layout when asked (in place; returns the model)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def format_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Match an image batch's layout to the models' (no-op for non-4-d tensors)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def make_adam(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], fast: bool,
              device: torch.device) -> torch.optim.Adam:
    """Adam; with ``fast`` the fused kernel (CUDA and CPU), which also lets a non-finite
    step be skipped on the device (``found_inf``, see ``train.sync_free``).

    Without ``fast``: on CUDA torch's own default (the multi-tensor ``foreach``
    kernels, a few launches per step instead of several per parameter); on CPU
    the per-parameter loop, which measured faster than ``foreach`` there for
    these small convolutional models.
    """
    if fast:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    return torch.optim.Adam(params, lr=lr, betas=betas, foreach=False)


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` (the module's state_dict keys are unchanged on the
    original object, which is what checkpoints save)."""
    return torch.compile(model, dynamic=False)
