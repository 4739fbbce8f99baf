"""How many times a Slurm training job may come back: ``max_requeues`` of the cluster profile.

distgan requeues its own jobs (``scontrol requeue`` after a time-limit checkpoint),
and Slurm requeues them after a preemption; neither goes through submitit's own
timeout counting. Slurm counts every requeue of a job in ``SLURM_RESTART_COUNT``,
so the limit is enforced against that count on both paths:

- at the start of an attempt: an attempt beyond ``max_requeues`` requeues does not
  train (a job that Slurm keeps bringing back, e.g. after repeated preemption or node
  failures, ends here);
- at a checkpointed stop: the job is requeued only while fewer than ``max_requeues``
  requeues have happened.

The count is written into ``RUN_DIR/status.json`` (``requeues``, ``max_requeues``)
and logged (the task's log). Re-running the launch command starts a new job with a
fresh budget and resumes from the latest checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

from distgan.errors import UserError
from distgan.log import get_logger
from distgan.rundir import write_status

log = get_logger("launch")


class RequeueLimitError(UserError):
    """The job came back more often than the profile's ``max_requeues`` allows."""


def requeues_so_far() -> int:
    """Requeues of the current Slurm job before this attempt (0 outside Slurm / first attempt)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def check_at_start(run_dir: str | Path, max_requeues: int, rank: int) -> int:
    """Record this attempt's requeue count; raise RequeueLimitError when it is over the limit."""
    n = requeues_so_far()
    if n > max_requeues:
        msg = (f"job requeued {n} times, more than max_requeues={max_requeues}: not training again. "
               "Re-run the launch command to start a new job that resumes from the latest checkpoint")
        if rank == 0:
            write_status(run_dir, "failed", requeues=n, max_requeues=max_requeues, error=msg)
        log.error(msg)
        raise RequeueLimitError(msg)
    if rank == 0:
        write_status(run_dir, "running", requeues=n, max_requeues=max_requeues)
    if n:
        log.info("attempt after requeue %d of at most %d", n, max_requeues)
    return n


def may_requeue(run_dir: str | Path, max_requeues: int, rank: int, step: int | None) -> bool:
    """True when the job may be requeued once more; records the decision (status.json, log)."""
    n = requeues_so_far()
    if n >= max_requeues:
        msg = (f"requeue limit reached: {n} of max_requeues={max_requeues} requeues used; checkpointed at "
               f"step {step} and not requeued. Re-run the launch command to continue from there")
        if rank == 0:
            write_status(run_dir, "stopped", step=step, requeues=n, max_requeues=max_requeues, error=msg)
        log.info(msg)
        return False
    if rank == 0:
        write_status(run_dir, "stopped", step=step, requeues=n + 1, max_requeues=max_requeues)
    log.info("requeue %d of at most %d", n + 1, max_requeues)
    return True
