"""The torch.distributed environment of one rank, from wherever it was started.

Accelerate (and ``torch.distributed`` with ``env://``) reads RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; distgan reads the first
three through :func:`distgan.ranks.launch_ranks`. The local launcher
sets them itself; inside a Slurm job step (submitit or a plain ``srun`` from an
emitted sbatch script) they are derived here from SLURM_* variables:

    rank = SLURM_PROCID, world = SLURM_NTASKS, local rank = SLURM_LOCALID,
    master = the first host of SLURM_JOB_NODELIST, port = derived from the job id

so every task of a job computes the same master address and port without talking.
"""
from __future__ import annotations

import os
import re
import socket

from distgan.hostlist import expand_hostlist

__all__ = ["PORT_BASE", "PORT_SPAN", "expand_hostlist", "export_slurm_dist_env", "free_port", "job_port",
           "slurm_dist_env"]

PORT_BASE, PORT_SPAN = 20000, 20000  # job ports: PORT_BASE + job id % PORT_SPAN (sbatch scripts derive the same)


def free_port() -> int:
    """A TCP port that is free right now on this host (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_port(job_id: str) -> int:
    """A rendezvous port every task of one Slurm job agrees on (array tasks differ)."""
    digits = re.sub(r"\D", "", job_id) or "0"
    return PORT_BASE + int(digits) % PORT_SPAN


def slurm_dist_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The torch.distributed variables for this Slurm task (empty when not in a job step)."""
    e = os.environ if environ is None else environ
    if "SLURM_PROCID" not in e or "SLURM_NTASKS" not in e:
        return {}
    world = int(e["SLURM_NTASKS"])
    nodes = int(e.get("SLURM_JOB_NUM_NODES", e.get("SLURM_NNODES", "1")))
    # an array task has its own SLURM_JOB_ID, so concurrent array tasks get different ports
    job_id = e.get("SLURM_JOB_ID", "0")
    nodelist = e.get("SLURM_JOB_NODELIST", e.get("SLURM_NODELIST", ""))
    master = e.get("MASTER_ADDR") or (expand_hostlist(nodelist)[0] if nodelist else "127.0.0.1")
    return {"RANK": e["SLURM_PROCID"], "WORLD_SIZE": str(world),
            "LOCAL_RANK": e.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(max(1, world // max(1, nodes))),
            "MASTER_ADDR": master, "MASTER_PORT": e.get("MASTER_PORT") or str(job_port(job_id))}


def export_slurm_dist_env() -> dict[str, str]:
    """Set the torch.distributed variables from SLURM_* in os.environ; returns what was set.

    Variables already set by a launcher (RANK/WORLD_SIZE from torchrun, say) win.
    A one-task job sets nothing: a single process needs no process group.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return {}
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return {}
    env = slurm_dist_env()
    os.environ.update(env)
    return env

