"""Run a sweep: lay out its directory, then one Slurm job array or a local pool.

    SWEEP_DIR/sweep.yaml         the sweep file as submitted
    SWEEP_DIR/runs.json          every run: index, name, grid point, seed, settings
    SWEEP_DIR/runs/NAME/         one run directory each (config.yaml, status.json, metrics.jsonl, ...)
    SWEEP_DIR/slurm/             submitit's job files and per-task logs
    SWEEP_DIR/results.{csv,md,png}   written by ``collect``

Submitting again skips runs whose status.json says ``completed`` and runs that
are still queued or running on Slurm or training now (their lock is held:
:mod:`distgan.runlock`); failed, stopped and missing runs go into
the new array.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distgan import runlock
from distgan.config import save_config
from distgan.fsutil import atomic_write_text
from distgan.launch.local import launch_local
from distgan.log import get_logger
from distgan.rundir import config_path, read_status
from distgan.sweep.spec import Sweep, SweepRun, run_config

JOBS_FILE = "jobs.json"
log = get_logger("sweep")


def active_slurm_jobs(job_ids: list[str]) -> set[str]:
    """Which of ``job_ids`` (``123`` or ``123_4``) Slurm still has pending or running.

    A task in COMPLETING has run its script (its run directory says how it ended) and
    is not counted: a strategy that waited for a round plans the next one at once.
    A task requeued meanwhile that starts again beside a new submission of its run
    cannot train at the same time as it: the run directory's lock lets one of them.
    """
    if not job_ids or shutil.which("squeue") is None:
        return set()
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "PENDING,RUNNING,REQUEUED,CONFIGURING,SUSPENDED",
                              "-o", "%i", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(out) & set(job_ids)


def plan(sweep: Sweep) -> tuple[list[SweepRun], list[tuple[SweepRun, str]]]:
    """(runs to start, [(run, why skipped)]) for this submission."""
    runs = sweep.runs()
    jobs = read_jobs(sweep.out)
    active = active_slurm_jobs(list(jobs.values()))
    todo, skipped = [], []
    for r in runs:
        if read_status(sweep.out / "runs" / r.name).get("state") == "completed":
            skipped.append((r, "completed"))
        elif jobs.get(r.name) in active:
            skipped.append((r, f"still queued or running as Slurm job {jobs[r.name]}"))
        elif (live := runlock.owner(sweep.out / "runs" / r.name)) is not None:  # a cell never trains twice at once
            skipped.append((r, f"training now: {runlock.describe(live)}"))
        else:
            todo.append(r)
    return todo, skipped


def layout(sweep: Sweep, todo: list[SweepRun], world_size: int = 1, cpus_per_rank: int = 1) -> None:
    """Write sweep.yaml, runs.json and the config.yaml of every run about to start.

    With ``world_size`` > 1 each run checks that its ranks formed one group of that size.
    ``cpus_per_rank`` (the resources' ``cpus_per_task``) turns rank-hours into core-hours in ``collect``.
    """
    sweep.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.out / "sweep.yaml", sweep.path.read_text())
    meta = {"name": sweep.name, "metric": sweep.metric, "lower_is_better": sweep.lower_is_better,
            "axes": [a.name for a in sweep.axes], "seeds": sweep.seeds,
            "runs": [r.as_dict() for r in sweep.runs()], "tables": sweep.tables, "cpus_per_rank": cpus_per_rank}
    atomic_write_text(sweep.out / "runs.json", json.dumps(meta, indent=1, default=str) + "\n")
    for r in todo:
        run_dir = sweep.out / "runs" / r.name
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = run_config(sweep, r)
        if world_size > 1 and not cfg.dist.expect_world_size:
            cfg.dist.expect_world_size = world_size
        save_config(cfg, config_path(run_dir))


def table(sweep: Sweep, runs: list[SweepRun], skipped: dict[str, str] | None = None) -> str:
    """The runs as a plain text table (what --dry-run prints)."""
    skipped = skipped or {}
    heads = ["#", *[a.name for a in sweep.axes], "seed", "run dir", "action"]
    rows = [[str(r.index), *[r.point[a.name] for a in sweep.axes], str(r.seed), r.name,
             f"skip ({skipped[r.name]})" if r.name in skipped else "run"] for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(heads)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*heads), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*row) for row in rows)])


def run_local(sweep: Sweep, todo: list[SweepRun], max_parallel: int, procs: int = 1) -> dict[str, int]:
    """Run ``todo`` here, at most ``max_parallel`` at a time; {run name: exit code}."""
    def one(r: SweepRun) -> tuple[str, int]:
        run_dir = sweep.out / "runs" / r.name
        code = launch_local(run_dir, procs, stream=False)
        if code == 0:
            log.info("%s: ok", r.name)
        else:
            log.warning("%s: failed (exit %d), see %s/logs", r.name, code, run_dir)
        return r.name, code

    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        return dict(pool.map(one, todo))


def submit_slurm(sweep: Sweep, todo: list[SweepRun], res: Any) -> list[Any]:
    """Submit ``todo`` as ONE job array (at most res.array_parallelism tasks at once)."""
    from distgan.launch.slurm import TrainTask, make_executor, with_retries  # noqa: PLC0415 - submitit: Slurm only

    ex = make_executor(sweep.out / "slurm", res, job_name=f"sweep-{sweep.name}")
    run_dirs = [str((sweep.out / "runs" / r.name).resolve()) for r in todo]

    def submit() -> list[Any]:
        with ex.batch():  # one sbatch --array for all tasks
            return [ex.submit(TrainTask(d, res.max_requeues, res.preempt_signals)) for d in run_dirs]

    jobs = with_retries(submit)
    # the run -> job map (status.json belongs to the running task: no race with it)
    known = read_jobs(sweep.out)
    known.update({r.name: str(job.job_id) for r, job in zip(todo, jobs)})
    atomic_write_text(sweep.out / JOBS_FILE, json.dumps(known, indent=1) + "\n")
    return jobs


def read_jobs(sweep_dir: str | Path) -> dict[str, str]:
    """{run name: Slurm job id of its latest submission} from SWEEP_DIR/jobs.json."""
    try:
        return json.loads((Path(sweep_dir) / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def wait_slurm(jobs: list[Any], poll_s: float = 5.0, settle_s: float = 120.0) -> None:
    """Block until every task of the array has ended, printing state counts as they change, and Slurm's
    queue has let them go (at most ``settle_s`` more)."""
    last = ""
    while True:
        done = [j.done(force_check=True) for j in jobs]
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j.state] = counts.get(j.state, 0) + 1
        text = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
        if text != last:
            log.info("%d/%d tasks ended (%s)", sum(done), len(jobs), text)
            last = text
        if all(done):
            break
        time.sleep(poll_s)
    # a task's result is written a moment before Slurm lets it go: the round is over when the queue is
    # empty of it, so that planning the next round does not see its runs as still queued (bounded wait)
    ids, end = [str(j.job_id) for j in jobs], time.monotonic() + settle_s
    while active_slurm_jobs(ids) and time.monotonic() < end:
        time.sleep(1.0)


def print_plan(sweep: Sweep, todo: list[SweepRun], skipped: list[tuple[SweepRun, str]],
               out: Any = None) -> None:
    out = out or sys.stdout
    runs = sweep.runs()
    print(f"sweep {sweep.name}: {len(runs)} runs ({len(todo)} to run, {len(skipped)} skipped) -> {sweep.out}",
          file=out)
    print(f"metric: {sweep.metric} ({'lower' if sweep.lower_is_better else 'higher'} is better); "
          f"base: {sweep.base}", file=out)
    print(table(sweep, runs, {r.name: why for r, why in skipped}), file=out, flush=True)
