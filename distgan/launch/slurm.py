"""Training runs as Slurm jobs, through submitit.

    job = submit_run(run_dir, resources, job_name="debug")   # one task per rank
    follow(job)                                              # --wait: stream rank 0, final state

Each task of the job runs :class:`TrainTask`, which turns SLURM_* into the
torch.distributed environment (:mod:`distgan.launch.env`) and trains its rank
(:func:`distgan.launch.worker.run_rank`).

Time limits and preemption. The job is submitted with ``--signal=USR2@S``
(S = ``signal_delay_s``): S seconds before the limit every task gets SIGUSR2.
TrainTask turns that into the trainer's stop request (SIGUSR1): all ranks
checkpoint at the next step boundary and return, then rank 0 requeues the job
(``scontrol requeue``). The profile's ``preempt_signals`` (a site's own
preemption notice, e.g. SIGHUP) are handled the same way. A preemption or
``scontrol requeue`` sends SIGTERM instead: the trainer checkpoints the same
way and Slurm requeues the job itself. Either way the job starts again from the
same pickled TrainTask and resumes from the latest checkpoint, so the step count
continues. Both kinds of requeue count against the profile's ``max_requeues``
(:mod:`distgan.launch.requeue`).
TrainTask is a :class:`submitit.helpers.Checkpointable`: a USR2 that arrives
before training started takes submitit's own path (resubmit as is).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import submitit

from distgan.errors import UserError
from distgan.launch.common import EXIT_FAILED, EXIT_STOPPED
from distgan.launch.profiles import SlurmResources, resource_options
from distgan.launch.requeue import check_at_start, may_requeue
from distgan.launch.worker import run_rank
from distgan.log import get_logger, setup_console
from distgan.ranks import launch_ranks
from distgan.rundir import logs_dir

log = get_logger("launch")

T = TypeVar("T")


def _placeholder(signum: int, frame: Any) -> None:
    """SIGUSR1 before the trainer installs its handler: ignore (the default would kill us)."""


class TrainTask(submitit.helpers.Checkpointable):
    """One Slurm task = one rank of the run in ``run_dir`` (picklable, requeue-safe)."""

    def __init__(self, run_dir: str, max_requeues: int = 3, preempt_signals: list[str] | None = None) -> None:
        self.run_dir = str(run_dir)
        self.max_requeues = max_requeues
        self.preempt_signals = list(preempt_signals or [])

    def _notices(self) -> list[str]:
        """The signals that mean "checkpoint, then requeue": the time-limit warning and the site's notices."""
        return ["USR2", *[s for s in getattr(self, "preempt_signals", []) if s != "USR2"]]

    def _training(self) -> bool:
        """Whether the trainer has taken SIGUSR1 over (it installs its stop handler when training starts)."""
        return signal.getsignal(signal.SIGUSR1) not in (_placeholder, self._on_time_limit)

    def _on_time_limit(self, signum: int, frame: Any) -> None:
        self._requeue_wanted = True
        if not self._training():
            # training has not started: nothing to save, let submitit resubmit us now
            env = submitit.JobEnvironment()
            log.info("time limit before training started: requeueing %s", env.job_id)
            if may_requeue(self.run_dir, getattr(self, "max_requeues", 3), env.global_rank, None):
                if env.global_rank == 0:
                    requeue(env.job_id)
                _wait_for_requeue_kill()
            raise SystemExit(EXIT_STOPPED)
        os.kill(os.getpid(), signal.SIGUSR1)  # the trainer's stop request: checkpoint at the next step

    def __call__(self) -> dict[str, Any]:
        self._requeue_wanted = False
        signal.signal(signal.SIGUSR1, _placeholder)
        for name in self._notices():  # until the trainer takes over the ones in dist.stop_signals
            signal.signal(getattr(signal, f"SIG{name}"), self._on_time_limit)
        try:  # this task's Slurm log (stdout + stderr): where a traceback ends up
            log_path, rank = str(submitit.JobEnvironment().paths.stdout), submitit.JobEnvironment().global_rank
        except Exception:  # noqa: BLE001 - not under submitit (e.g. called directly)
            log_path, rank = "", launch_ranks().rank
        setup_console(rank)  # this task is a rank's entry point
        max_requeues = getattr(self, "max_requeues", 3)  # tasks pickled by an older distgan lack it
        check_at_start(self.run_dir, max_requeues, rank)
        summary = run_rank(self.run_dir, log_path)
        if summary.get("completed") or summary.get("paused"):  # paused: its budget (train.stop_at) is spent
            return summary
        # stopped by a signal after checkpointing: the job must run again
        env = submitit.JobEnvironment()
        if self._requeue_wanted or summary.get("stop_signal") in self._notices():
            if not may_requeue(self.run_dir, max_requeues, env.global_rank, summary.get("step")):
                return summary  # the job ends; status.json says why
            if env.global_rank == 0:
                requeue(env.job_id)
            log.info("checkpointed at step %s; job %s requeued", summary.get("step"), env.job_id)
        else:
            log.info("checkpointed at step %s after SIGTERM (preemption, requeue or cancel)", summary.get("step"))
        # no result file: the watcher must not see this attempt as the job's end
        _wait_for_requeue_kill()
        raise SystemExit(EXIT_STOPPED)


def _wait_for_requeue_kill(limit_s: float = 120.0) -> None:
    """Stay alive until Slurm kills this attempt, so the job never ends as FAILED in between."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        time.sleep(1.0)


def requeue(job_id: str) -> None:
    """Ask Slurm to requeue ``job_id`` (array tasks as ``ARRAYID_TASK``)."""
    subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)


def make_executor(folder: str | Path, res: SlurmResources, job_name: str) -> submitit.SlurmExecutor:
    """A submitit executor for ``res``: one task per rank, the USR2 time-limit warning."""
    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=res.max_requeues,
                                python=res.python or None)
    params: dict[str, Any] = dict(
        job_name=job_name, signal_delay_s=res.signal_delay_s, array_parallelism=res.array_parallelism,
        stderr_to_stdout=True, setup=list(res.setup), **resource_options(res))
    if res.extra:
        params["additional_parameters"] = {str(k).replace("-", "_"): v for k, v in res.extra.items()}
    ex.update_parameters(**params)
    return ex


class SubmitError(UserError, RuntimeError):
    """sbatch refused the job (the message has its stderr)."""


def with_retries(submit: Callable[[], T], attempts: int = 3, wait_s: float = 3.0) -> T:
    """Run ``submit``; retry when sbatch fails (a busy controller times out now and then)."""
    for i in range(attempts):
        try:
            return submit()
        except submitit.core.utils.FailedJobError as e:
            msg = str(e).strip()
            if i == attempts - 1:
                raise SubmitError(f"sbatch failed {attempts} times; last error: {msg}") from None
            log.warning("sbatch failed (%s); retrying in %g s", msg[:300], wait_s)
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def submit_run(run_dir: str | Path, res: SlurmResources, job_name: str) -> submitit.Job:
    """Submit one training run (its config.yaml already written) as one job."""
    ex = make_executor(logs_dir(run_dir) / "slurm", res, job_name)
    return with_retries(lambda: ex.submit(TrainTask(str(Path(run_dir).resolve()), res.max_requeues,
                                                    res.preempt_signals)))


def describe_job(job: submitit.Job, run_dir: str | Path) -> str:
    """What to tell the user after submitting: id, logs, TensorBoard, how to follow."""
    run_dir = Path(run_dir)
    return "\n".join([
        f"submitted Slurm job {job.job_id}",
        f"  rank 0 output: {job.paths.stdout}",
        f"  all logs:      {job.paths.folder}  (training logs: {run_dir / 'logs'})",
        f"  TensorBoard:   tensorboard --logdir {run_dir / 'tb'}",
        f"  follow:        squeue -j {job.job_id}; tail -f {job.paths.stdout}",
    ])


def follow(job: submitit.Job, poll_s: float = 2.0, out: Any = None) -> int:
    """Stream rank 0's output to ``out`` until the job ends; 0 when it succeeded.

    A requeued job keeps its id: following continues across requeues. The job's
    state changes and its end are logged.
    """
    out = out or sys.stdout
    pos, last_state = 0, ""
    path = Path(job.paths.stdout)
    while True:
        done = job.done(force_check=True)
        state = job.state
        if state != last_state:
            log.info("job %s: %s", job.job_id, state)
            last_state = state
        if path.is_file():
            size = path.stat().st_size
            if size < pos:  # a requeued attempt started a fresh file
                pos = 0
            if size > pos:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                pos += len(chunk)
                out.write(chunk.decode(errors="replace"))
                out.flush()
        if done:
            break
        time.sleep(poll_s)
    try:
        results = job.results()
    except Exception as e:  # submitit re-raises the task's error (or a missing-result error)
        log.error("job %s failed (%s):\n%s", job.job_id, job.state, e)
        return EXIT_FAILED
    completed = all(isinstance(r, dict) and r.get("completed") for r in results)
    log.info("job %s %s", job.job_id, "finished" if completed else "stopped")
    return 0 if completed else EXIT_FAILED
