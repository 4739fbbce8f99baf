"""Run an ablation sweep, or summarise one.

    python -m distgan.sweep configs/sweeps/debug_grid.yaml --dry-run        # the table of runs
    python -m distgan.sweep configs/sweeps/debug_grid.yaml --cluster slurm --max-parallel 4 --wait
    python -m distgan.sweep configs/sweeps/debug_grid.yaml --cluster local --max-parallel 2
    python -m distgan.sweep collect runs/sweeps/debug_grid                  # results.csv/.md/.png

The sweep's strategy (``strategy:`` in the sweep file, :mod:`distgan.sweep.strategies`)
says which runs to train in each round; ``grid`` trains every run in one round.
A round is one job array (``--max-parallel`` = slurm_array_parallelism) or a
local pool; each task is a full training run in SWEEP_DIR/runs/NAME with its
resolved config. Submitting again skips completed runs, runs still in the queue
and runs training now. A local sweep (or ``--wait`` on Slurm) ends by collecting
the results.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from distgan.errors import cli_main, print_error
from distgan.extras import MissingExtra
from distgan.launch.common import EXIT_FAILED, choose_cluster
from distgan.launch.profiles import load_profile, resolve_resources
from distgan.launch.site import default_profile
from distgan.log import get_logger, setup_console
from distgan.sweep import round as rounds
from distgan.sweep.collect import collect
from distgan.sweep.spec import Sweep, SweepError, load_sweep
from distgan.sweep.strategies import make_strategy
from distgan.sweep.submit import layout, print_plan, run_local, submit_slurm, wait_slurm

log = get_logger("sweep")


@cli_main(FileNotFoundError, MissingExtra)
def _collect_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.sweep collect")
    p.add_argument("sweep_dir", help="the sweep directory (runs/sweeps/NAME)")
    args = p.parse_args(argv)
    summary = collect(args.sweep_dir)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    """The result of collecting: run states and the files written."""
    states = ", ".join(f"{v} {k}" for k, v in sorted(summary["states"].items()))
    print(f"[sweep] {summary['runs']} runs: {states}")
    print(f"[sweep] table: {summary['md']}  (per run: {summary['csv']})")
    if summary["plot"]:
        print(f"[sweep] plot:  {summary['plot']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distgan.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="sweep file (configs/sweeps/*.yaml), or `collect SWEEP_DIR`")
    p.add_argument("--cluster", default="auto", choices=["auto", "local", "slurm"],
                   help="auto = Slurm when sbatch is available and a controller answers")
    p.add_argument("--dry-run", action="store_true", help="print the table of runs and exit")
    p.add_argument("--max-parallel", type=int, default=None, help="runs at once (array parallelism)")
    p.add_argument("--wait", action="store_true", help="Slurm: wait for the array, then collect")
    p.add_argument("--out", help="sweep directory (default: the file's out:, else runs/sweeps/NAME)")
    p.add_argument("--profile", help="Slurm cluster profile (slurm/profiles/NAME.yaml or a path)")
    p.add_argument("overrides", nargs="*", help="key=value applied to every run (e.g. data.shards=/scratch/x)")
    return p


@cli_main()  # a bad sweep file, config, profile or launch request: everything is checked before layout()
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_console()
    if argv[:1] == ["collect"]:
        return _collect_main(argv[1:])
    args = build_parser().parse_intermixed_args(argv)
    sweep = load_sweep(args.file, args.out, args.overrides)
    resources = dict(sweep.resources)
    # as for one run: --profile, the sweep file's, then the site's default (distgan.launch.site)
    profile_name = args.profile or resources.pop("profile", None) or default_profile()
    resources.pop("profile", None)
    profile = {**(load_profile(profile_name) if profile_name else {}), **resources}
    if args.max_parallel is not None:
        if args.max_parallel < 1:
            raise SweepError(f"--max-parallel must be >= 1, got {args.max_parallel}")
        profile["array_parallelism"] = args.max_parallel
    res = resolve_resources(profile)
    strategy = make_strategy(sweep)  # its settings are checked here, before anything is written
    first = strategy.next_round(sweep)
    print_plan(sweep, first.runs if first else [], first.skipped if first else [])
    if args.dry_run:
        return 0
    cluster = choose_cluster(args.cluster, res.nodes)
    rnd = first
    while rnd is not None:
        layout(sweep, rnd.runs, res.world_size, res.cpus_per_task)
        if not rnd.runs:
            log.info("nothing to run: every run is completed or still queued (or training now)")
        elif cluster == "slurm":
            jobs = _submit(sweep, rnd.runs, res)
            if jobs is None:
                return EXIT_FAILED
            if not (args.wait or rnd.needs_results):
                return 0
            with rounds.clock(sweep.out, rnd.runs, res.array_parallelism):
                wait_slurm(jobs)
        else:
            k = args.max_parallel or 1  # a workstation: one run at a time unless asked
            log.info("running %d runs here, %d at a time", len(rnd.runs), k)
            with rounds.clock(sweep.out, rnd.runs, k):
                run_local(sweep, rnd.runs, k, procs=res.tasks_per_node)
        rnd = strategy.next_round(sweep)
    summary = collect(sweep.out)
    _print_summary(summary)
    failed = sum(v for k, v in summary["states"].items() if k not in ("ok", "paused"))  # paused: pruned early
    return EXIT_FAILED if failed else 0


def _submit(sweep: Sweep, runs: list, res: Any) -> list | None:
    """One job array for ``runs``; None (after one error line) when sbatch kept failing."""
    from distgan.launch.slurm import SubmitError  # noqa: PLC0415 - submitit: Slurm only

    try:
        jobs = submit_slurm(sweep, runs, res)
    except SubmitError as e:  # sbatch kept failing: not the request's fault
        print_error(e, EXIT_FAILED)
        return None
    array_id = str(jobs[0].job_id).split("_")[0]
    log.info("submitted job array %s: %d tasks, at most %d at once; logs in %s", array_id, len(jobs),
             res.array_parallelism, sweep.out / "slurm")
    log.info("follow: squeue -r -j %s; results: python -m distgan.sweep collect %s", array_id, sweep.out)
    log.info("TensorBoard over all runs: tensorboard --logdir %s", sweep.out / "runs")
    return jobs


if __name__ == "__main__":
    sys.exit(main())
