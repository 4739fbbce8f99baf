"""The few collectives the metrics need (sum, min, gather, broadcast of small objects).

Kept in one place so evaluation code never calls ``torch.distributed`` itself;
with one process every function is a cheap identity. NCCL groups get their
tensors on the current CUDA device, gloo groups on the CPU.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from distgan.dist import is_distributed


def distributed() -> bool:
    return is_distributed()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default group, (0, 1) without one."""
    if not distributed():
        return 0, 1
    return tdist.get_rank(), tdist.get_world_size()


def _device() -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise float64 sum over ranks."""
    if not distributed():
        return values
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.cpu().numpy()


def all_true(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank (e.g. a cache hit everywhere)."""
    if not distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (pickled; keep it modest in size)."""
    if not distributed():
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not distributed():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if distributed():
        tdist.barrier()
