"""What the launch commands, the per-rank worker and the sweep runner share.

    code = EXIT_STOPPED                       # a rank checkpointed on a signal: re-run (or requeue) to resume
    cluster = choose_cluster("auto", nodes=2) # "slurm" or "local", or a LaunchError saying why neither
    cfg = check_run_config(load_config(path))  # refuse what cannot run before anything is written
    print_summary(run_dir, summary)           # where a finished or stopped run's outputs are

Exit codes of a training rank and of the launchers: 0 completed, ``EXIT_FAILED``
failed, :data:`distgan.errors.EXIT_USER_ERROR` a request or input the message
explains, ``EXIT_STOPPED`` stopped after checkpointing (the sbatch script and the
Slurm task requeue on it), :data:`distgan.train.stages.EXIT_HUNG` a distributed
wait that ran out (never requeued), ``EXIT_DEADLINE`` a local launch past its
deadline (as ``timeout`` reports it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from distgan.config import Config, ConfigError
from distgan.errors import UserError

EXIT_FAILED = 1
EXIT_STOPPED = 3
EXIT_DEADLINE = 124


class LaunchError(UserError, ValueError):
    """A launch request that cannot be met (the message says why and what to do)."""


def slurm_available() -> bool:
    """True when sbatch is on PATH and a Slurm controller answers ``scontrol ping``."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "UP" in out.stdout


def choose_cluster(requested: str, nodes: int) -> str:
    """Resolve ``auto``; reject what this machine cannot do."""
    if requested == "auto":
        # inside an allocation (salloc, an sbatch script) we run on what we were given
        inside_job = "SLURM_JOB_ID" in os.environ
        requested = "slurm" if slurm_available() and not inside_job else "local"
    if requested == "local" and nodes > 1:
        raise LaunchError(f"--nodes {nodes} needs Slurm, but this is a local launch (no sbatch on PATH, no "
                          "controller answering, or --cluster local); use --cluster slurm on a Slurm login "
                          "node, or --emit-sbatch FILE to write a script for one")
    return requested


def check_run_config(cfg: Config) -> Config:
    """``cfg`` checked as the config of a run: :meth:`~distgan.config.Config.validate`, its metrics
    and its health signals.

    The names that live above the config are checked by their owners' lists: metric names,
    ``metrics.main`` and the metrics' own settings by the metric registry (a metric that
    compares classes needs a class-conditional model), ``train.stop_on`` by the health
    monitor's signals. Raises :class:`~distgan.config.ConfigError` naming the key; returns ``cfg``.
    """
    cfg.validate()
    if cfg.train.stop_on:
        # the health monitor loads torch: only a config that stops on its signals pays for it here
        from distgan.train.health import SIGNALS  # noqa: PLC0415

        unknown = [s for s in cfg.train.stop_on if s not in SIGNALS]
        if unknown:
            raise ConfigError(f"config key 'train.stop_on': got {cfg.train.stop_on!r}, expected a list of "
                              f"{', '.join(SIGNALS)} ({', '.join(map(repr, unknown))} is no health signal)")
    m = cfg.metrics
    if m.main and not m.names:
        raise ConfigError(f"config key 'metrics.main': got {m.main!r}, expected '' while metrics.names is empty "
                          "(no metric is computed to select the best checkpoint by)")
    if not m.names and not m.final:
        return cfg
    # the registry loads the metric implementations (torch): only a config that names metrics pays for
    # it, so launching one that names none stays light
    from distgan.metrics import registry  # noqa: PLC0415

    try:
        registry.check_config(m)
    except UserError as e:  # its messages name the key and the choices
        raise ConfigError(str(e)) from None
    for key, names in (("metrics.names", m.names), ("metrics.final", m.final)):
        by_class = [n for n in dict.fromkeys(names) if registry.REGISTRY[n].labels]
        if by_class and cfg.model.cond in ("none", "multilabel"):  # G draws no class labels to compare by
            raise ConfigError(f"config key '{key}': got {names!r}, expected no {', '.join(by_class)} with "
                              f"model.cond={cfg.model.cond}: it compares generated and real images class by class, "
                              "so G must be class-conditional")
    return cfg


def exit_code(summary: dict) -> int:
    """A training summary as an exit code: 0 completed or paused at ``train.stop_at``, ``EXIT_STOPPED``
    stopped after checkpointing (by a signal or a health verdict: re-run to resume)."""
    return 0 if summary.get("completed") or summary.get("paused") else EXIT_STOPPED


def print_summary(run_dir: Path, summary: dict) -> None:
    """The command's result: how the run ended and where its outputs are."""
    state = "finished" if summary.get("completed") else "paused" if summary.get("paused") else "stopped"
    print(f"\n{state} at step {summary['step']}. Run directory: {run_dir}")
    if summary.get("paused"):
        print("  (train.stop_at reached: re-run with a larger train.stop_at, or 0, to continue)")
    print(f"  TensorBoard logs: {run_dir / 'tb'}")
    print(f"  sample grids:     {run_dir / 'samples'}")
    print(f"  checkpoints:      {run_dir / 'checkpoints'}")
    print(f"  view with:        tensorboard --logdir {run_dir / 'tb'}")
