"""Section 3: distgan's synced batch norm against torch's fused CUDA batch-norm kernels.

torch.nn.SyncBatchNorm is built from three CUDA kernels: ``batch_norm_stats``
(per-rank mean and inverse std), ``batch_norm_gather_stats_with_counts``
(combine the all-gathered rows) and ``batch_norm_elemt`` (normalise). distgan's
SyncBatchNorm2d does the same with ``var_mean``, a float64 combination
(:func:`distgan.syncbn.combine_moments`) and elementwise ops, because those
kernels do not exist on the CPU and gloo must work. One process simulates R=2
ranks by splitting the batch (the all-gather itself is the same one tensor per
rank in both designs), so the figures isolate the arithmetic:

- equality of the normalised outputs and of the running statistics;
- forward time of distgan's path vs torch's fused kernels (ratio > 1: torch's
  kernels are faster, the case for using them on CUDA);
- forward+backward time of distgan's SyncBatchNorm2d vs cuDNN's plain
  BatchNorm2d on one rank (the cost of the portable path where nothing syncs);
- on CUDA, SyncBatchNorm2d's two training paths (portable, and torch's fused
  kernels with ``fused_on_nccl``) in a one-rank NCCL group: outputs, gradients
  and running statistics equal, time, and host syncs per forward+backward.
On the CPU only distgan's path runs (torch's kernels raise there).
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from bench.gpu import Plan, Report, sync
from distgan.syncbn import SyncBatchNorm2d, combine_moments

RANKS = 2


def _own(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """distgan's arithmetic: per-chunk var_mean, float64 combination, normalise."""
    rows = []
    for chunk in x.chunk(RANKS):
        var, mean = torch.var_mean(chunk, dim=(0, 2, 3), correction=0)
        n = chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
        rows.append(torch.stack([torch.full_like(mean, float(n), dtype=torch.float64), mean.double(), var.double()]))
    mean, var, _ = combine_moments(torch.stack(rows))
    mean, var = mean.to(x.dtype), var.to(x.dtype)
    return (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + eps), mean, var


def _fused(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.nn.SyncBatchNorm's kernels on the same chunks."""
    stats = [torch.batch_norm_stats(c.contiguous(), eps) for c in x.chunk(RANKS)]
    means = torch.stack([m for m, _ in stats])
    invstds = torch.stack([s for _, s in stats])
    counts = torch.tensor([float(c.shape[0] * c.shape[2] * c.shape[3]) for c in x.chunk(RANKS)], device=x.device)
    rm, rv = torch.zeros(x.shape[1], device=x.device), torch.ones(x.shape[1], device=x.device)
    mean, invstd = torch.batch_norm_gather_stats_with_counts(x, means, invstds, rm, rv, 0.1, eps, counts)
    y = torch.batch_norm_elemt(x.contiguous(), None, None, mean, invstd, eps)
    return y, mean, 1.0 / invstd ** 2 - eps


def _ms(fn, device: str, reps: int) -> float:
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return 1000 * (time.perf_counter() - t) / reps


def run(plan: Plan, rep: Report) -> None:
    dev = plan.device
    # the widest BN of the throughput model's D: 4n channels at res/8 (DCGAN 64x64: 512 x 8 x 8)
    shape = (plan.batch, 4 * plan.width, max(4, plan.res // 8), max(4, plan.res // 8))
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(shape, device=dev, generator=gen) * 3 + 1
    eps, reps = 1e-5, 5 if plan.dry else 200
    y_own, mean_own, var_own = _own(x, eps)
    ref = nn.functional.batch_norm(x.double(), None, None, training=True, eps=eps)
    err_own = float((y_own.double() - ref).abs().max())
    rep.check(f"own synced BN == float64 batch norm, {tuple(shape)}", err_own < 1e-4, err_own, "max abs diff")
    if dev == "cuda":
        y_f, mean_f, var_f = _fused(x, eps)
        err = float((y_own - y_f).abs().max())
        rep.check("own synced BN == torch fused kernels (output)", err < 1e-4, err, "max abs diff")
        err_s = max(float((mean_own - mean_f).abs().max()), float((var_own - var_f).abs().max() / var_f.abs().max()))
        rep.check("own synced BN == torch fused kernels (mean, rel. var)", err_s < 1e-4, err_s, "max diff")
        rep.figure("forward: own arithmetic vs torch fused kernels", _ms(lambda: _own(x, eps), dev, reps), "ms",
                   _ms(lambda: _fused(x, eps), dev, reps), "ratio > 1: the fused kernels are faster")
    else:
        rep.skip("own synced BN vs torch fused kernels", "torch's batch_norm_stats has no CPU kernel")
    # one rank (no process group): SyncBatchNorm2d is plain BN; with the sync math forced it shows
    # what the portable path costs against cuDNN's fused BN, forward and backward
    own = SyncBatchNorm2d(shape[1]).to(dev)
    own._synced = lambda: True  # the synced arithmetic without a group (gather of one = the rank itself)
    import distgan.syncbn as sbn

    gather = sbn.all_gather_differentiable
    sbn.all_gather_differentiable = lambda t, group=None: t.unsqueeze(0)
    try:
        plain = nn.BatchNorm2d(shape[1]).to(dev)
        xg = x.clone().requires_grad_(True)

        def step(m):
            def f():
                m(xg).square().mean().backward()
            return f
        a = own(xg)
        b = plain(xg)
        err = float((a - b).detach().abs().max())
        rep.check("own synced BN (1 rank) == nn.BatchNorm2d", err < 1e-4, err, "max abs diff")
        rep.figure("fwd+bwd: own synced BN vs nn.BatchNorm2d (1 rank)", _ms(step(own), dev, reps), "ms",
                   _ms(step(plain), dev, reps), "ratio > 1: the portable path costs more")
    finally:
        sbn.all_gather_differentiable = gather
    if dev == "cuda":
        _module_paths_over_nccl(rep, x, reps)
    else:
        rep.skip("SyncBatchNorm2d: portable path vs torch kernels over NCCL", "NCCL needs CUDA")


def _module_paths_over_nccl(rep: Report, x: torch.Tensor, reps: int) -> None:
    """SyncBatchNorm2d's two training paths in a one-rank NCCL group (both really gather):
    outputs, gradients and running statistics equal; time and host syncs of forward+backward."""
    import copy
    import os
    import warnings

    import torch.distributed as tdist

    from bench.gpu.distributed import _free_port

    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    tdist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        portable = SyncBatchNorm2d(x.shape[1]).cuda()
        portable._synced = lambda: True  # one rank still goes through the gather
        fused = copy.deepcopy(portable)
        fused.fused_on_nccl = True
        outs = {}
        for name, m in (("portable", portable), ("fused", fused)):
            xg = x.clone().requires_grad_(True)
            y = m(xg)
            y.square().mean().backward()
            outs[name] = (y.detach(), xg.grad, m.weight.grad, m.running_mean.clone(), m.running_var.clone())
        err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                  for a, b in zip(outs["portable"], outs["fused"]))
        rep.check("SyncBatchNorm2d portable == torch kernels (NCCL): out, grads, running", err < 1e-3, err,
                  "max rel diff")
        xg = x.clone().requires_grad_(True)

        def step(m):
            def f():
                m(xg).square().mean().backward()
            return f
        rep.figure("fwd+bwd over NCCL: portable path vs torch kernels", _ms(step(portable), "cuda", reps), "ms",
                   _ms(step(fused), "cuda", reps), "ratio > 1: torch's kernels are faster")
        for name, m in (("portable", portable), ("fused", fused)):
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    step(m)()
            finally:
                torch.cuda.set_sync_debug_mode(0)
            n = sum("synchroniz" in str(w.message) for w in caught)
            rep.figure(f"host syncs per fwd+bwd, {name} path", float(n), "syncs")
    finally:
        tdist.destroy_process_group()
        for k, v in saved.items():  # later sections train in this process as a single rank
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
