"""Synced batch norm that runs on CPU (gloo) and CUDA (NCCL), forward and backward.

``model.norm=sync_batch`` (or ``norm_g`` / ``norm_d``) selects it (the norm table in
:mod:`distgan.models.norms` lists it; this module imports nothing of distgan). In training
mode each rank computes its per-channel ``[count, mean, var]``; ONE
differentiable all-gather shares them and every rank combines them with the
parallel-variance formula (Chan et al.), so the statistics are those of the
whole ``R * b`` batch, computed stably (no ``E[x^2] - E[x]^2`` cancellation)
and bitwise the same on every rank. The backward pass of the gather sums the
gradients from all ranks, which is what makes input and parameter gradients
equal to single-process batch norm over the big batch.

Why not ``torch.nn.SyncBatchNorm``: it has no CPU kernel (``batch_norm_stats``
raises on CPU), and we test everything on CPU with gloo.

Collective-count contract: one all-gather per training-mode forward and one
all-reduce in its backward. Every rank runs the same forwards (D on real, D on
fake, G ...) so the counts match on every rank. In eval mode (samples, metrics)
the running statistics are used and nothing is communicated. Running statistics
are updated from the global batch, so they stay equal on every rank.

Without an initialised process group (one process) it is plain batch norm.
"""
from __future__ import annotations

import torch
import torch.distributed as tdist
import torch.nn as nn
from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBN  # the autograd function behind nn.SyncBatchNorm


class _AllGather(torch.autograd.Function):
    """Stack ``x`` from every rank (R, *x.shape); backward sums the incoming grads over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        world = tdist.get_world_size(group)
        wire = _wire_device(x, group)
        out = [torch.empty_like(x, device=wire) for _ in range(world)]
        tdist.all_gather(out, x.contiguous().to(wire), group=group)
        return torch.stack(out).to(x.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        # every rank's output depends on my x through slot[my rank]: sum those grads
        wire = _wire_device(grad, ctx.group)
        summed = grad.contiguous().to(wire, copy=True)
        tdist.all_reduce(summed, group=ctx.group)
        return summed[tdist.get_rank(ctx.group)].to(grad.device), None


def _wire_device(x: torch.Tensor, group) -> torch.device:
    """Where the collective runs: gloo gathers host tensors (its CUDA all-gather support is
    partial), so CUDA statistics cross over the host there; NCCL keeps them on the GPU."""
    if x.is_cuda and tdist.get_backend(group) != "nccl":
        return torch.device("cpu")
    return x.device


def all_gather_differentiable(x: torch.Tensor, group=None) -> torch.Tensor:
    """``torch.stack`` of ``x`` from every rank of ``group``, with gradients flowing back."""
    return _AllGather.apply(x, group)


def combine_moments(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-rank ``(R, 3, C)`` rows of ``[count, mean, biased var]`` -> the whole batch's
    ``(mean, biased var, count)`` per channel (parallel-variance formula, differentiable)."""
    counts, means, vars_ = stats[:, 0], stats[:, 1], stats[:, 2]  # (R, C) each
    total = counts.sum(0)
    mean = (counts * means).sum(0) / total
    var = (counts * (vars_ + (means - mean) ** 2)).sum(0) / total  # biased, as BN normalises
    return mean, var, total


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics span every rank of ``process_group``.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``, so a
    checkpoint trained with ``norm=batch`` loads with ``norm=sync_batch`` and back.
    """

    # With fused_on_nccl, NCCL groups on CUDA use torch's own fused kernels (the autograd
    # function behind torch.nn.SyncBatchNorm: batch_norm_stats, one all-gather, Welford-combined
    # statistics). Off by default: that function reads the gathered counts back to the host in
    # every forward (boolean-mask indexing), one host sync per layer per forward, which the
    # sync-free step (train.sync_free) cannot have; the portable path below syncs nothing. The
    # GPU acceptance run (python -m bench.gpu, section syncbn) checks the two agree and times
    # them, so the default can follow the measurement. Gloo and the CPU always use the portable path.
    fused_on_nccl: bool = False

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def torch_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The training-mode forward through torch's fused CUDA kernels (NCCL group)."""
        m = self.momentum if self.momentum is not None else 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                m = 1.0 / float(self.num_batches_tracked)
        group = self.process_group or tdist.group.WORLD
        track = self.track_running_stats
        return _TorchSyncBN.apply(x, self.weight, self.bias, self.running_mean if track else None,
                                  self.running_var if track else None, self.eps, m, group,
                                  tdist.get_world_size(group))

    def _synced(self) -> bool:
        return self.training and tdist.is_available() and tdist.is_initialized() \
            and tdist.get_world_size(self.process_group) > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"SyncBatchNorm2d expects NCHW input, got shape {tuple(x.shape)}")
        if not self._synced():
            return super().forward(x)
        if self.fused_on_nccl and x.is_cuda and tdist.get_backend(self.process_group) == "nccl":
            return self.torch_kernels(x)
        # statistics in float32 (at least) even under bf16/fp16 autocast
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        n_local = x.shape[0] * x.shape[2] * x.shape[3]
        var_l, mean_l = torch.var_mean(xs, dim=(0, 2, 3), correction=0)
        # the (3, C) statistics travel and combine in float64: counts stay exact past 2^24
        # elements per channel, and the combination adds no rounding of its own
        count = torch.full_like(mean_l, float(n_local), dtype=torch.float64)
        local = torch.stack([count, mean_l.double(), var_l.double()])
        mean, var, total = combine_moments(all_gather_differentiable(local, self.process_group))
        mean, var = mean.to(xs.dtype), var.to(xs.dtype)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (total / (total - 1).clamp(min=1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        shape = (1, -1, 1, 1)
        y = (xs - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

