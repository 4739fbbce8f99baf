"""Mixed precision in one place: autocast context and one loss scaler per optimizer.

fp16 needs a GradScaler; each phase (D, G) owns its own, so no scaler is ever
stepped twice in one iteration. bf16 needs none. On CPU fp16 autocast is not
supported, so it is refused with a clear error rather than silently ignored: by
each rank, and before training by the preflight (:func:`device_problem`). The
config cannot refuse it when it is loaded: that happens where a job is launched,
often a login node without the GPUs its ranks will get.
"""
from __future__ import annotations

import contextlib

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_problem(mode: str, device: torch.device) -> str:
    """Why ``train.precision=mode`` cannot train on ``device`` ('' when it can)."""
    if mode == "fp16" and device.type != "cuda":
        return "train.precision=fp16 needs a CUDA device (on CPU use bf16 or fp32)"
    return ""


class Precision:
    def __init__(self, mode: str, device: torch.device):
        if mode not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"train.precision must be fp32, bf16 or fp16, got '{mode}'")
        problem = device_problem(mode, device)
        if problem:
            raise ValueError(problem)
        self.mode, self.device = mode, device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mode == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.mode])

    def make_scaler(self) -> torch.amp.GradScaler:
        """A scaler for one optimizer (a disabled pass-through unless fp16)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.mode == "fp16")
