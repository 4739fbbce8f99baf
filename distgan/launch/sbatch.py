"""A plain sbatch script for sites that do not allow submitit.

    python -m distgan.launch --config configs/dogs_dcgan.yaml --nodes 4 --gpus-per-node 8 \\
        --profile mysite --emit-sbatch train.sbatch
    sbatch train.sbatch

The script runs one ``srun`` step with one task per rank; each task runs
``python -m distgan.launch.worker RUN_DIR``, which derives RANK/WORLD_SIZE/
MASTER_ADDR/MASTER_PORT from SLURM_* the same way a submitit job does.
``--signal=USR1@S`` makes every rank checkpoint S seconds before the time limit
and exit with ``EXIT_STOPPED``; the script then requeues the job (``--requeue``) and the
next attempt resumes from the checkpoint. The profile's ``preempt_signals`` are in
the run's ``dist.stop_signals`` (the launcher puts them there), so a site's own
preemption notice ends the ranks the same way and is requeued the same way.
Preemption by SIGTERM works alike with Slurm doing the requeue.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from distgan.fsutil import atomic_write_text
from distgan.launch.common import EXIT_STOPPED
from distgan.launch.env import PORT_BASE, PORT_SPAN
from distgan.launch.profiles import SlurmResources, sbatch_options
from distgan.rundir import logs_dir


def sbatch_script(run_dir: str | Path, res: SlurmResources, job_name: str, python: str = "") -> str:
    """The text of the sbatch script that trains the run in ``run_dir``."""
    run_dir = Path(run_dir).resolve()
    python = python or res.python or sys.executable
    opts = sbatch_options(res, job_name)
    opts["signal"] = f"USR1@{res.signal_delay_s}"  # straight to the ranks: the trainer's stop request
    opts["output"] = str(logs_dir(run_dir) / "slurm" / "%j.out")
    opts["open-mode"] = "append"  # requeued attempts add to the same log
    lines = ["#!/bin/bash", f"# distgan training job for {run_dir} (written by python -m distgan.launch)"]
    lines += [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={v}" for k, v in opts.items() if v is not False]
    lines += ["#SBATCH --requeue", ""]
    lines += ["set -u", *[str(s) for s in res.setup],
              f"mkdir -p {shlex.quote(str(run_dir / 'logs' / 'slurm'))}",
              'export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$SLURM_CPUS_PER_TASK}',
              "export PYTHONUNBUFFERED=1",
              "# every task derives the same rendezvous: first host of the job, a port from the job id",
              'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              f"export MASTER_PORT=$(({PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN}))",  # as env.job_port
              'echo "[sbatch] job $SLURM_JOB_ID: $SLURM_NNODES node(s), $SLURM_NTASKS rank(s), '
              'master $MASTER_ADDR:$MASTER_PORT, restart ${SLURM_RESTART_COUNT:-0}"',
              f"srun --kill-on-bad-exit=1 {shlex.quote(python)} -u -m distgan.launch.worker "
              f"{shlex.quote(str(run_dir))}",
              "rc=$?",
              f"if [ $rc -eq {EXIT_STOPPED} ]; then",
              f'  if [ "${{SLURM_RESTART_COUNT:-0}}" -ge {res.max_requeues} ]; then',
              '    echo "[sbatch] requeue limit reached: ${SLURM_RESTART_COUNT:-0} of '
              f'max_requeues={res.max_requeues} '
              'used; not requeueing (re-submit to continue from the checkpoint)"',
              "  else",
              '    echo "[sbatch] checkpointed before the time limit: requeue $(( ${SLURM_RESTART_COUNT:-0} + 1 )) '
              f'of at most {res.max_requeues}: $SLURM_JOB_ID"',
              '    scontrol requeue "$SLURM_JOB_ID"',
              "  fi",
              "fi",
              "exit $rc", ""]
    return "\n".join(lines)


def write_sbatch(path: str | Path, run_dir: str | Path, res: SlurmResources, job_name: str) -> Path:
    """Write the script to ``path`` (executable) and return the path."""
    path = Path(path)
    (logs_dir(run_dir) / "slurm").mkdir(parents=True, exist_ok=True)  # sbatch opens --output first
    atomic_write_text(path, sbatch_script(run_dir, res, job_name))
    path.chmod(0o755)
    return path
