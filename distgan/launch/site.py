"""What a Slurm site gives a launch without flags: its default profile and its GPUs.

    name = default_profile()            # $DISTGAN_SLURM_PROFILE, else slurm/profiles/default.yaml, else None
    found = discover_gpus("gpu")        # GPUs per node of a partition, from Slurm's GRES (sinfo)
    warning = cpu_job_warning(cfg, res, "configs/dogs_dcgan.yaml", found)

``python -m distgan.launch --nodes 4 --config configs/dogs_dcgan.yaml`` on a
GPU cluster's login node, with no ``--profile``, must still ask for the GPUs:
the site's default profile decides when there is one; otherwise the nodes'
generic resources (``sinfo -o %G``, e.g. ``gpu:a100:8(S:0-1)``) of the chosen
partition (or the cluster's default one) give the GPUs per node, one rank
each. A preset shaped for GPUs that would still run as a CPU job is named in a
warning before anything is submitted.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from distgan.launch.profiles import PROFILE_DIR

PROFILE_ENV = "DISTGAN_SLURM_PROFILE"


def default_profile() -> str | None:
    """The site's default profile: ``$DISTGAN_SLURM_PROFILE`` (a name or path), else
    ``slurm/profiles/default.yaml`` when it exists, else None."""
    name = os.environ.get(PROFILE_ENV, "").strip()
    if name:
        return name
    return "default" if (PROFILE_DIR / "default.yaml").is_file() else None


def gres_gpus(gres: str) -> int:
    """GPUs in one node's GRES string: ``gpu:4`` -> 4, ``gpu:a100:8(S:0-1),tmpdisk:100`` -> 8,
    ``gpu:a100:2,gpu:v100:2`` -> 4, ``(null)`` -> 0."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres):
        parts = re.sub(r"\(.*?\)", "", item).strip().split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


@dataclass
class GpuDiscovery:
    """GPUs per node as Slurm reports them (0 when no Slurm or no GPU GRES)."""
    gpus_per_node: int = 0
    partition: str = ""  # the partition looked at ("" = none found)
    others: dict[str, int] = field(default_factory=dict)  # other partitions that have GPUs


def discover_gpus(partition: str = "", run: Any = subprocess.run) -> GpuDiscovery:
    """GPUs per node of ``partition`` (or the default partition) from ``sinfo``.

    Nodes of one partition can differ; the smallest GPU count among its nodes
    is taken, so every node of the job can give one rank per GPU.
    """
    if shutil.which("sinfo") is None and run is subprocess.run:
        return GpuDiscovery()
    try:
        out = run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return GpuDiscovery()
    if out.returncode != 0:
        return GpuDiscovery()
    per_part: dict[str, int] = {}
    default = ""
    for line in out.stdout.splitlines():
        if "|" not in line:
            continue
        part, gres = line.split("|", 1)
        if part.endswith("*"):
            part = part[:-1]
            default = part
        n = gres_gpus(gres)
        per_part[part] = min(per_part.get(part, n), n)
    chosen = partition or default
    others = {p: n for p, n in per_part.items() if n and p != chosen}
    return GpuDiscovery(per_part.get(chosen, 0), chosen if chosen in per_part else "", others)


def gpu_shaped(cfg: Any) -> str:
    """Why this config wants GPUs ('' when it is fine on CPUs)."""
    if cfg.train.precision == "fp16":
        return "train.precision=fp16 (CUDA only)"
    if cfg.data.resolution >= 64:
        return f"{cfg.data.resolution}x{cfg.data.resolution} images, model width {cfg.model.width}"
    return ""


def cpu_job_warning(cfg: Any, res: Any, config_name: str, found: GpuDiscovery | None) -> str:
    """A warning when a GPU-shaped config is about to be submitted as a CPU-only job ('' otherwise)."""
    why = gpu_shaped(cfg)
    if res.gpus_per_node or not why:
        return ""
    hint = ""
    if found is not None and found.others:
        hint = " Partitions with GPUs here: " + ", ".join(f"{p} ({n} per node)" for p, n in found.others.items()) \
            + "; pass --partition NAME."
    return (f"{config_name} is shaped for GPUs ({why}) but this job requests no GPUs: it would "
            f"train on {res.tasks_per_node} CPU task(s) per node. Pass --gpus-per-node G, a --profile with "
            f"gpus_per_node, or set {PROFILE_ENV} / slurm/profiles/default.yaml for this site.{hint}")
