"""The small distributed API the rest of distgan uses.

Everything that talks to ``torch.distributed`` lives here (and in the synced
norm layer): environment detection (torchrun / Accelerate, Slurm, or explicit),
reductions for logging, buffer sync and the replica check. With one process
every function is a cheap no-op, so the single-process debug mode runs the same
code path.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn as nn


@dataclass
class DistEnv:
    """Where this process stands: rank, world size, local rank, node count."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    num_nodes: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_os(environ: dict[str, str] | None = None) -> DistEnv:
    """Read rank/world from torchrun/Accelerate (RANK, WORLD_SIZE, LOCAL_RANK) or Slurm (SLURM_*)."""
    e = os.environ if environ is None else environ
    if "RANK" in e and "WORLD_SIZE" in e:
        world = int(e["WORLD_SIZE"])
        local_world = int(e.get("LOCAL_WORLD_SIZE", world))
        return DistEnv(int(e["RANK"]), world, int(e.get("LOCAL_RANK", 0)), max(1, world // max(1, local_world)))
    if "SLURM_PROCID" in e and "SLURM_NTASKS" in e:
        return DistEnv(int(e["SLURM_PROCID"]), int(e["SLURM_NTASKS"]), int(e.get("SLURM_LOCALID", 0)),
                       int(e.get("SLURM_NNODES", 1)))
    return DistEnv()


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ranks (identity with one process)."""
    if not is_distributed():
        return values
    out = values.clone()
    tdist.all_reduce(out)
    return out / tdist.get_world_size()


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy every buffer (BN running stats, spectral-norm u/v) from rank ``src`` to all ranks.

    DDP does this at the start of each forward; calling it at the end of a step
    makes replicas equal at step boundaries too (what checkpoints and the
    replica check see).
    """
    if not is_distributed():
        return
    for b in model.buffers():
        tdist.broadcast(b.data, src)


def _digest(t: torch.Tensor) -> int:
    data = t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=7).digest(), "little")


def check_replicas(model: nn.Module, name: str = "model") -> None:
    """Raise RuntimeError naming the first parameter/buffer that differs between ranks.

    Each tensor is hashed bitwise on every rank; the hashes are all-gathered and
    compared (cheap: one small collective per call).
    """
    if not is_distributed():
        return
    named = list(model.state_dict().items())
    mine = torch.tensor([_digest(t) for _, t in named], dtype=torch.long)
    gathered = [torch.empty_like(mine) for _ in range(tdist.get_world_size())]
    tdist.all_gather(gathered, mine)
    for r, theirs in enumerate(gathered):
        diff = (theirs != gathered[0]).nonzero()
        if len(diff):
            key = named[int(diff[0])][0]
            raise RuntimeError(f"replicas differ: {name}.{key} on rank {r} != rank 0 "
                               f"({len(diff)} tensors differ)")
