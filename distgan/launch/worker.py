"""One rank of a training run: ``python -m distgan.launch.worker RUN_DIR``.

Every launcher ends here, once per process: the local launcher (which sets
RANK/WORLD_SIZE/MASTER_* itself), a submitit Slurm task, or ``srun`` in an
emitted sbatch script (SLURM_* -> RANK/... in :mod:`distgan.launch.env`).
The run's resolved config is read from ``RUN_DIR/config.yaml`` (the launcher
writes it before starting the ranks), then ``distgan.train.train`` runs.

``RUN_DIR/status.json`` says where the run stands, for people and for sweeps:
``{"state": "running"|"completed"|"paused"|"stopped"|"failed", "step", "total_steps",
"world_size", "job_id", "host", "error", "log", "time", "train_seconds", "rank_seconds"}`` (Slurm
jobs add ``requeues`` and ``max_requeues``: :mod:`distgan.launch.requeue`). ``train_seconds`` is the
wall time of all attempts so far (updated at each checkpoint while running), ``rank_seconds`` the same times
each attempt's world size. Rank 0 writes it;
a failing rank writes ``failed`` with the error. Exit codes (:mod:`distgan.launch.common`):
0 completed, ``EXIT_STOPPED`` stopped by a signal after checkpointing (re-run to resume),
``EXIT_HUNG`` a distributed wait ran out, ``EXIT_FAILED`` any other failure.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from distgan import runlock
from distgan.config import load_config
from distgan.errors import UserError, print_error
from distgan.launch.common import EXIT_FAILED, check_run_config, exit_code, print_summary
from distgan.launch.env import export_slurm_dist_env
from distgan.launch.lifeline import Lifeline
from distgan.log import get_logger, setup_console
from distgan.ranks import launch_ranks
from distgan.rundir import config_path, rank_log, read_status, write_status
from distgan.train import stages
from distgan.train.stages import EXIT_HUNG

log = get_logger()  # "[distgan] ...": the rank's own lines, beside the trainer's


def run_rank(run_dir: str | Path, log_path: str = "", launcher_pid: int = 0) -> dict[str, Any]:
    """Train this rank of the run in ``run_dir``; returns the trainer's summary.

    Raises whatever training raised, after recording it in status.json. With the
    local launcher's ``launcher_pid`` the rank checkpoints and exits when that
    process dies (:mod:`distgan.launch.lifeline`).
    """
    run_dir = Path(run_dir)
    export_slurm_dist_env()
    ranks = launch_ranks()
    rank, world = ranks.rank, ranks.world
    log_path = log_path or str(rank_log(run_dir, rank))
    cfg_path = config_path(run_dir)
    try:
        cfg = check_run_config(load_config(cfg_path))
    except Exception as e:
        _record_failure(run_dir, f"rank {rank}: {traceback.format_exception_only(type(e), e)[-1].strip()}",
                        log_path, world)
        raise
    # rank 0 owns the run directory while it trains: a second training of it stops here, before it
    # has written anything (status.json included)
    launcher = {"launcher_pid": launcher_pid} if launcher_pid else {}
    with runlock.hold(run_dir, **launcher) if rank == 0 else nullcontext():
        return _train_rank(run_dir, cfg, rank, world, log_path, launcher_pid)


def _train_rank(run_dir: Path, cfg: Any, rank: int, world: int, log_path: str, launcher_pid: int) -> dict[str, Any]:
    lifeline = Lifeline.start(launcher_pid, cfg.dist.orphan_grace_s, **_lifeline_hooks(run_dir, rank, world, log_path))
    spent = _Compute(run_dir, world) if rank == 0 else None
    try:
        if rank == 0:
            write_status(run_dir, "running", started=time.time(), step=None, total_steps=cfg.train.steps,
                         world_size=world, log=log_path)
        from distgan.train import train  # noqa: PLC0415 - torch and the trainer: in the rank, not in launchers

        stages.set_reporter(lambda msg: _record_failure(run_dir, msg, log_path, world))
        if world > 1:  # a stage that runs far past dist.timeout_s (a stuck rank) ends this rank, naming it
            import torch  # noqa: PLC0415 - loaded with the trainer above

            nccl = cfg.dist.backend == "nccl" or (cfg.dist.backend == "auto" and torch.cuda.is_available())
            stages.watch(cfg.dist.timeout_s, rank, run_dir, world, factor=1.0 if nccl else 1.5)
        summary = train(cfg, run_dir, progress=_progress(run_dir, spent))
        # leave the process group while the interpreter is whole: torch's gloo threads left to
        # interpreter finalization can abort a rank that has finished (SIGABRT after a good run)
        from distgan.rendezvous import leave  # noqa: PLC0415 - torch.distributed, loaded with the trainer

        leave()
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
        e = _named_dist_failure(e, rank, world, cfg, run_dir)
        # keep the first failure of this attempt: when one rank dies, the others
        # fail next with a connection error that would hide the real cause
        if not isinstance(e, (KeyboardInterrupt, SystemExit)):
            last = str(e) if isinstance(e, DistFailure) else traceback.format_exception_only(type(e), e)[-1].strip()
            _record_failure(run_dir, f"rank {rank}: {last}" if not last.startswith("rank ") else last, log_path,
                            world)
        if spent is not None:  # the attempt's time counts, and the record keeps its error and reason
            st = read_status(run_dir)
            write_status(run_dir, st.get("state", "failed"), **{k: st[k] for k in ("error", "reason") if k in st},
                         **spent.fields())
        raise e
    if rank == 0:
        reason = lifeline.reason if lifeline is not None and lifeline.reason else summary.get("stop_reason")
        why = {"reason": reason} if reason else {}
        state = "completed" if summary.get("completed") else "paused" if summary.get("paused") else "stopped"
        write_status(run_dir, state,
                     step=summary.get("step"), total_steps=cfg.train.steps,
                     world_size=summary.get("world_size", world), log=log_path, **why, **spent.fields())
    return summary


class _Compute:
    """The wall time a run's attempts have spent, summed over attempts (``train_seconds`` in status.json,
    with the world size of each attempt folded into ``rank_seconds``): what sweeps count as compute."""

    def __init__(self, run_dir: Path, world: int):
        before = read_status(run_dir)
        self.t0, self.world = time.time(), world
        self.seconds = float(before.get("train_seconds", 0.0))
        self.rank_seconds = float(before.get("rank_seconds", 0.0))

    def fields(self) -> dict[str, float]:
        took = time.time() - self.t0
        return {"train_seconds": round(self.seconds + took, 1),
                "rank_seconds": round(self.rank_seconds + took * self.world, 1)}


def _progress(run_dir: Path, spent: _Compute | None) -> Callable[[int], None] | None:
    """Rank 0, at each checkpoint: the step and the time spent so far into status.json, so an attempt that
    is killed outright (SIGKILL, a lost node) still counts up to its last checkpoint."""
    if spent is None:
        return None
    return lambda step: write_status(run_dir, "running", step=step, **spent.fields())


def _lifeline_hooks(run_dir: Path, rank: int, world: int, log_path: str) -> dict[str, Any]:
    """What status.json says when the local launcher dies (rank 0 writes it; the others say nothing)."""
    if rank != 0:
        return {}
    return {"on_stop": lambda reason: write_status(run_dir, "stopped", reason=reason, log=log_path, world_size=world),
            "on_timeout": lambda reason: write_status(run_dir, "failed", error=reason, log=log_path,
                                                      world_size=world)}


def _record_failure(run_dir: Path, error: str, log_path: str, world: int) -> None:
    """status.json -> failed with ``error``, unless an earlier failure of this attempt is recorded."""
    if read_status(run_dir).get("state") != "failed":
        write_status(run_dir, "failed", error=error, log=log_path, world_size=world)


class DistFailure(RuntimeError):
    """A distributed wait that ran out or a group that could not form; the message is the diagnosis."""


def _named_dist_failure(e: BaseException, rank: int, world: int, cfg: Any, run_dir: Path) -> BaseException:
    """A rendezvous error or a failed collective as a :class:`DistFailure` naming rank, stage and checkpoint."""
    from distgan.rendezvous import RendezvousError  # noqa: PLC0415 - torch: only on the failure path

    stages.unwatch()
    if isinstance(e, RendezvousError):
        failure = DistFailure(f"rank {rank}: rendezvous failed ({e.kind}): {e}")
    elif world > 1 and cfg is not None and stages.is_comm_failure(e):
        failure = DistFailure(stages.explain(e, rank, world, cfg.dist.timeout_s, run_dir))
    else:
        return e
    log.error("%s", failure)
    failure.__cause__ = e
    return failure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.launch.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="run directory holding config.yaml")
    p.add_argument("--log", default="", help="this rank's stdout/stderr file (recorded in status.json)")
    p.add_argument("--launcher-pid", type=int, default=0,
                   help="the local launcher's pid: checkpoint and exit when it dies (0: not started by one)")
    args = p.parse_args(argv)
    export_slurm_dist_env()  # an srun task learns its rank here
    rank = launch_ranks().rank
    setup_console(rank)
    try:
        summary = run_rank(args.run_dir, args.log, args.launcher_pid)
    except DistFailure as e:  # exit non-zero but not "stopped" (no requeue)
        if rank != 0:  # rank 0 logged the diagnosis; the others' consoles are quiet, but it belongs in their output
            print_error(e)
        return EXIT_HUNG
    except UserError as e:  # explained by its message (also recorded in status.json): no traceback
        return print_error(e, EXIT_FAILED, prefix=f"rank {rank}: ")
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
    if rank == 0:
        print_summary(Path(args.run_dir), summary)
    return exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
