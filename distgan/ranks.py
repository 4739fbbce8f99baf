"""This process's place in a launch: rank, world size and local rank, as its launcher set them.

    r = launch_ranks()          # Ranks(rank=1, world=4, local_rank=1); Ranks(0, 1, 0) when not launched
    owner = r.rank == 0

Every launcher starts its processes with the torchrun variables RANK, WORLD_SIZE and
LOCAL_RANK: the local launcher and torchrun set them, and in a Slurm job step
:func:`distgan.launch.env.export_slurm_dist_env` derives them from SLURM_*. Before the
process group exists (the run-directory lock, the rendezvous, a rank's log file and
console) this is where they are read; once it exists, :func:`distgan.dist.rank_world`
answers from the group. Torch-free, so the launchers use it as well.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from distgan.errors import UserError


class LaunchEnvError(UserError, ValueError):
    """A launcher variable holds something other than an integer."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise LaunchEnvError(f"{name}={env[name]!r} is not an integer") from None


def launch_ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """This process's rank, world size and local rank from the launcher's variables (default: this process's)."""
    env = os.environ if environ is None else environ
    return Ranks(_int(env, "RANK", 0), _int(env, "WORLD_SIZE", 1), _int(env, "LOCAL_RANK", 0))
