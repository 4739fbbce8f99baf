"""Cluster profiles: what a Slurm site needs in every job, kept out of the presets.

    profile = load_profile("local")                     # slurm/profiles/local.yaml
    profile = load_profile("slurm/profiles/x.yaml")     # or a path
    res = resolve_resources(profile, nodes=4, gpus_per_node=8)

A profile is a YAML mapping of the :class:`SlurmResources` fields below; flags
on the command line override it. Unknown keys are errors naming the key and file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distgan.errors import UserError

PROFILE_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"


class ProfileError(UserError, ValueError):
    """A bad cluster profile or resource request (the message names the key)."""


@dataclass
class SlurmResources:
    """One job's resources. Each rank is one Slurm task: one per GPU, or ``procs_per_node`` on CPU."""
    nodes: int = 1                  # number of nodes
    gpus_per_node: int = 0          # GPUs per node (one task each); 0 = CPU job
    procs_per_node: int = 1         # tasks per node when gpus_per_node is 0
    cpus_per_task: int = 1          # CPU cores per task (data-loader workers + 1)
    mem_gb: float = 0               # memory per node in GB (0 = site default)
    time_min: int = 60              # time limit in minutes
    partition: str = ""             # Slurm partition (empty = site default)
    account: str = ""               # account to charge
    qos: str = ""                   # quality of service
    constraint: str = ""            # node features, e.g. "a100"
    exclude: str = ""               # nodes to avoid
    signal_delay_s: int = 90        # warning signal (USR2) this long before the time limit
    preempt_signals: list = field(default_factory=list)  # site preemption notices (e.g. [HUP]): checkpoint, requeue
    max_requeues: int = 3           # requeues after time-outs before giving up
    array_parallelism: int = 16     # sweeps: array tasks running at once
    setup: list = field(default_factory=list)   # shell lines run before srun (module load ...)
    extra: dict = field(default_factory=dict)   # any other sbatch option: {name: value}
    python: str = ""                # interpreter on the nodes (empty = this one)

    @property
    def tasks_per_node(self) -> int:
        return self.gpus_per_node if self.gpus_per_node > 0 else self.procs_per_node

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SlurmResources)}


def profile_path(name: str) -> Path:
    """``local`` -> slurm/profiles/local.yaml; a path (with / or .yaml) is taken as is."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        return Path(name)
    return PROFILE_DIR / f"{name}.yaml"


def load_profile(name: str) -> dict[str, Any]:
    """The profile's settings as a dict (checked against SlurmResources' fields)."""
    path = profile_path(name)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))) or "(none)"
        raise ProfileError(f"cluster profile '{name}' not found at {path}; known profiles: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ProfileError(f"cluster profile {path} must be a mapping of settings, got {type(data).__name__}")
    check_keys(data, str(path))
    return data


def check_keys(data: dict[str, Any], source: str) -> None:
    fields = _fields()
    for k, v in data.items():
        if k not in fields:
            raise ProfileError(f"unknown Slurm setting '{k}' in {source}; known: {', '.join(sorted(fields))}")
        want = type(fields[k].default) if fields[k].default is not dataclasses.MISSING else \
            type(fields[k].default_factory())  # type: ignore[misc]
        ok = isinstance(v, want) or (want is float and isinstance(v, int)) or v is None
        if not ok or isinstance(v, bool):
            raise ProfileError(f"Slurm setting '{k}' in {source}: got {v!r}, expected {want.__name__}")


def resolve_resources(profile: dict[str, Any] | None = None, **flags: Any) -> SlurmResources:
    """Profile settings, then flags that are not None; validated."""
    merged: dict[str, Any] = dict(profile or {})
    merged.update({k: v for k, v in flags.items() if v is not None})
    check_keys(merged, "the command line")
    res = SlurmResources(**{k: v for k, v in merged.items() if v is not None})
    for name in ("nodes", "procs_per_node", "cpus_per_task", "time_min"):
        if getattr(res, name) < 1:
            raise ProfileError(f"Slurm setting '{name}' must be >= 1, got {getattr(res, name)}")
    if res.gpus_per_node < 0:
        raise ProfileError(f"Slurm setting 'gpus_per_node' must be >= 0, got {res.gpus_per_node}")
    check_preempt_signals(res.preempt_signals)
    return res


PREEMPT_SIGNALS = ("HUP", "INT", "USR1", "USR2", "XCPU")


def check_preempt_signals(names: list) -> None:
    """``preempt_signals`` names signals a site sends before preempting a job (SIGTERM is Slurm's own)."""
    for name in names:
        if name == "TERM":
            raise ProfileError("Slurm setting 'preempt_signals': TERM is what Slurm sends on preemption, requeue "
                               "and cancel alike; distgan always checkpoints on it and leaves the requeue to Slurm "
                               "(a cancelled job must not come back). List only the site's own notice signals: "
                               f"{', '.join(PREEMPT_SIGNALS)}")
        if name not in PREEMPT_SIGNALS:
            raise ProfileError(f"Slurm setting 'preempt_signals': got {name!r}, expected names from "
                               f"{', '.join(PREEMPT_SIGNALS)} (without SIG)")


def resource_options(res: SlurmResources) -> dict[str, Any]:
    """The allocation as {submitit parameter name: value}; with '_' -> '-' these are the sbatch
    long options, so submitit jobs and emitted scripts ask Slurm for the same resources."""
    opts: dict[str, Any] = {"nodes": res.nodes, "ntasks_per_node": res.tasks_per_node,
                            "cpus_per_task": res.cpus_per_task, "time": res.time_min}
    if res.gpus_per_node:
        opts["gpus_per_node"] = res.gpus_per_node
    if res.mem_gb:
        opts["mem"] = f"{int(res.mem_gb * 1024)}M"
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        if getattr(res, key):
            opts[key] = getattr(res, key)
    return opts


def sbatch_options(res: SlurmResources, job_name: str) -> dict[str, Any]:
    """The job's sbatch options as {long option name: value} (used by --emit-sbatch)."""
    opts: dict[str, Any] = {"job-name": job_name, "signal": f"USR2@{res.signal_delay_s}"}
    opts.update({k.replace("_", "-"): v for k, v in resource_options(res).items()})
    opts.update({str(k).replace("_", "-"): v for k, v in res.extra.items()})
    return opts
