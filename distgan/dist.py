"""The small distributed API the rest of distgan uses.

Everything that talks to ``torch.distributed`` lives here (and in the synced
norm layer): reductions for logging and metrics, decisions every rank takes
together, buffer sync and the replica check. :func:`rank_world` answers from the
process group; before it exists, :func:`distgan.ranks.launch_ranks` reads what the
launcher set (Slurm's variables are mapped in distgan.launch.env). With one process
every function is a cheap no-op, so the single-process debug mode runs the same
code path.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn as nn

from distgan.syncbn import SyncBatchNorm2d


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def comm_device() -> torch.device:
    """Where tensors must live for this process group's collectives (NCCL: this rank's GPU)."""
    if is_distributed() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ranks (identity with one process); returned on ``values``' device."""
    if not is_distributed():
        return values
    out = values.to(comm_device(), copy=True)
    tdist.all_reduce(out)
    return (out / tdist.get_world_size()).to(values.device)


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one (one tiny all-reduce).

    Used for decisions every rank must take together (stop, skip a step): a
    rank that raised or stopped alone would leave the others hanging in the
    next collective.
    """
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_over_ranks_(t: torch.Tensor) -> torch.Tensor:
    """In-place element-wise max over ranks, left on the device (no host sync on NCCL)."""
    if is_distributed():
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return t


def gather_objects(obj: Any) -> list[Any]:
    """``[obj from rank 0, obj from rank 1, ...]`` on every rank (pickled; small objects only)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default group, (0, 1) without one."""
    if not is_distributed():
        return 0, 1
    return tdist.get_rank(), tdist.get_world_size()


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise float64 sum over ranks (metrics' sufficient statistics)."""
    if not is_distributed():
        return values
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.cpu().numpy()


def all_true(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank (e.g. a cache hit everywhere)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; small objects only)."""
    if not is_distributed():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy every buffer (BN running stats, spectral-norm u/v) from rank ``src`` to all ranks.

    DDP does this at the start of each forward of the wrapped module, but D runs
    unwrapped in the G phase and G unwrapped in the D phase (plain BN then
    updates each rank's running stats from its own batch); calling this at the
    end of a step makes replicas bitwise equal at step boundaries (what
    checkpoints and the replica check see). Buffers are flattened per dtype and
    device: one broadcast per group rather than one per tensor.
    """
    if not is_distributed():
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for b in model.buffers():
        groups.setdefault((b.dtype, b.device), []).append(b)
    for bufs in groups.values():
        flat = torch.cat([b.detach().reshape(-1) for b in bufs])
        tdist.broadcast(flat, src)
        offset = 0
        for b in bufs:
            n = b.numel()
            b.data.copy_(flat[offset:offset + n].view_as(b))
            offset += n


def _digest(t: torch.Tensor) -> int:
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()  # 0-d too
    return int.from_bytes(hashlib.blake2b(data, digest_size=7).digest(), "little")


# Which tensors must be bitwise equal on every rank at the end of a step, before
# broadcast_buffers() copies rank 0's buffers over the others:
#   must match: every parameter (DDP averages the gradients, the optimizers are
#     deterministic), spectral-norm u/v (power iteration on equal weights), synced
#     batch-norm running stats (computed from the global batch), the EMA copy of G;
#   may differ: running_mean/running_var/num_batches_tracked of plain batch norm,
#     which each rank updates from its own batch (made equal by the broadcast).
def local_buffers(model: nn.Module) -> set[str]:
    """State-dict keys of ``model`` that may differ between ranks (plain batch-norm running statistics)."""
    synced = (SyncBatchNorm2d, nn.SyncBatchNorm)
    out = set()
    for prefix, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, synced):
            for key, _ in m.named_buffers(recurse=False):
                out.add(f"{prefix}.{key}" if prefix else key)
    return out


def check_replicas(model: nn.Module, name: str = "model") -> None:
    """Raise RuntimeError naming the first parameter/buffer that differs between ranks.

    Compares everything that must match (see the rule above :func:`local_buffers`),
    skipping plain batch-norm running statistics. Call it before
    :func:`broadcast_buffers`, which would hide a buffer desync. Each tensor is
    hashed bitwise on every rank; the hashes are all-gathered and compared (cheap:
    one small collective per call).
    """
    if not is_distributed():
        return
    skip = local_buffers(model)
    named = [(k, t) for k, t in model.state_dict().items() if k not in skip]
    mine = torch.tensor([_digest(t) for _, t in named], dtype=torch.long, device=comm_device())
    gathered = [torch.empty_like(mine) for _ in range(tdist.get_world_size())]
    tdist.all_gather(gathered, mine)
    gathered = [g.cpu() for g in gathered]
    for r, theirs in enumerate(gathered):
        diff = (theirs != gathered[0]).nonzero()
        if len(diff):
            key = named[int(diff[0])][0]
            raise RuntimeError(f"replicas differ: {name}.{key} on rank {r} != rank 0 "
                               f"({len(diff)} tensors differ)")

