"""Train a GAN from a preset, here or on a Slurm cluster.

    python -m distgan.launch --config configs/debug.yaml
    python -m distgan.launch --config configs/mnist_cdcgan.yaml --run-dir runs/mnist train.lr_d=5e-4
    python -m distgan.launch --config configs/debug.yaml --procs-per-node 2        # 2 CPU ranks on gloo
    python -m distgan.launch --config configs/dogs_dcgan.yaml --nodes 4 --gpus-per-node 8 --profile mysite
    python -m distgan.launch --config configs/debug.yaml --cluster slurm --nodes 2 --wait
    python -m distgan.launch --config configs/debug.yaml --nodes 2 --emit-sbatch job.sbatch
    python -m distgan.launch --help-config          # every config key with its doc
    python -m distgan.launch --config configs/debug.yaml --nodes 2 --check   # preflight: ranks, bandwidth

--cluster auto (the default) submits to Slurm when ``sbatch`` is on PATH, a
controller answers and we are not already inside a Slurm job; otherwise it
runs here. Asking for more than one node without Slurm is an error.
Re-running the same command with the same run directory resumes from the
latest checkpoint. Building the config, launching processes and training are
separate steps: this module only does the first two (ranks run
``python -m distgan.launch.worker``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distgan import runlock
from distgan.config import describe, load_config, save_config
from distgan.errors import UserError, cli_main, print_error
from distgan.launch.common import (
    EXIT_FAILED,
    EXIT_STOPPED,
    LaunchError,
    check_run_config,
    choose_cluster,
    exit_code,
    print_summary,
)
from distgan.launch.local import drop_slurm_env, launch_local
from distgan.launch.profiles import load_profile, resolve_resources
from distgan.launch.sbatch import write_sbatch
from distgan.launch.site import cpu_job_warning, default_profile, discover_gpus
from distgan.launch.worker import run_rank
from distgan.log import get_logger, setup_console
from distgan.rundir import config_path, logs_dir, read_status

log = get_logger("launch")


def default_run_dir(config_path: str) -> Path:
    return Path("runs") / Path(config_path).stem


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distgan.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="preset YAML file (configs/*.yaml)")
    p.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    p.add_argument("--cluster", default="auto", choices=["auto", "local", "slurm"],
                   help="where to run: auto = Slurm when sbatch is available, else this machine")
    p.add_argument("--nodes", type=int, default=None, help="number of nodes (Slurm only when > 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node, one rank each")
    g.add_argument("--procs-per-node", type=int, default=None, help="CPU ranks per node (gloo)")
    p.add_argument("--profile", help="Slurm cluster profile: slurm/profiles/NAME.yaml or a path")
    p.add_argument("--time-min", type=int, help="Slurm time limit in minutes (overrides the profile)")
    p.add_argument("--partition", help="Slurm partition (overrides the profile)")
    p.add_argument("--wait", action="store_true", help="Slurm: follow the job to its end, streaming rank 0")
    p.add_argument("--emit-sbatch", metavar="FILE", help="write a plain sbatch script instead of submitting")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    p.add_argument("--check", action="store_true",
                   help="preflight: start every rank as training would, print hosts/devices/rendezvous, an "
                        "all-reduce check and bandwidth, or name what stops the ranks from forming a group")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr_d=5e-4")
    return p


def prepare_run(args: argparse.Namespace, world_size: int, preempt_signals: list[str] | None = None
                ) -> tuple[Path, object]:
    """Resolve the config (with dist.expect_world_size = the world we launch, and the Slurm profile's
    ``preempt_signals`` among ``dist.stop_signals``) and write it."""
    overrides = list(args.overrides)
    if world_size > 1 and not any(o.startswith("dist.expect_world_size=") for o in overrides):
        overrides.append(f"dist.expect_world_size={world_size}")  # fail loudly if ranks do not join
    cfg = check_run_config(load_config(args.config, overrides))  # refused here: nothing written, nothing started
    cfg.train.batch_split(world_size)  # a global batch this world cannot share: refused before any queue wait
    cfg.dist.stop_signals += [s for s in preempt_signals or [] if s not in cfg.dist.stop_signals]
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config)
    runlock.ensure_free(run_dir)  # a live training owns it: write nothing, start nothing, submit nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, config_path(run_dir))  # what every rank (here or on a node) reads
    return run_dir, cfg


@cli_main(ValueError)  # config, launch, shard and checkpoint errors: one line
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    setup_console()
    if args.help_config:
        print(describe())
        return 0
    if not args.config:
        raise UserError("--config FILE is required (e.g. configs/debug.yaml)")
    if args.emit_sbatch:
        return _emit(args)
    cluster = choose_cluster(args.cluster, args.nodes or 1)
    if args.check:
        return _check(args, cluster)
    if cluster == "slurm":
        return _slurm(args)
    return _local(args)


def _resources(args: argparse.Namespace):
    """The job's resources: --profile, else the site's default profile, then the flags; with
    neither a GPU nor a CPU-task count chosen anywhere, the GPUs the cluster's nodes report."""
    name = args.profile or default_profile()
    profile = load_profile(name) if name else {}
    res = resolve_resources(profile, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                            procs_per_node=args.procs_per_node, time_min=args.time_min,
                            partition=args.partition)
    args.gpu_discovery = None
    chosen = {"gpus_per_node", "procs_per_node"} & set(profile) or args.gpus_per_node is not None \
        or args.procs_per_node is not None
    if not chosen:
        found = args.gpu_discovery = discover_gpus(res.partition)
        if found.gpus_per_node:
            res.gpus_per_node = found.gpus_per_node
            log.info("partition %s has %d GPU(s) per node (Slurm GRES): requesting them, one rank each "
                        "(--gpus-per-node or --procs-per-node choose otherwise)", found.partition, found.gpus_per_node)
    return res


def _warn_cpu_job(args: argparse.Namespace, cfg, res) -> None:
    warning = cpu_job_warning(cfg, res, args.config, getattr(args, "gpu_discovery", None))
    if warning:
        log.warning(warning)


def _local(args: argparse.Namespace) -> int:
    if args.gpus_per_node:
        import torch  # noqa: PLC0415 - torch: only to count this machine's GPUs

        have = torch.cuda.device_count()
        if args.gpus_per_node > have:
            raise LaunchError(f"--gpus-per-node {args.gpus_per_node} but this machine has {have} GPU(s)")
    procs = args.gpus_per_node or args.procs_per_node or 1
    if procs < 1:
        raise LaunchError(f"--procs-per-node must be >= 1, got {procs}")
    run_dir, cfg = prepare_run(args, procs)
    if procs == 1:  # one process: the worker's path right here (status.json, the run's lock), no rendezvous
        drop_slurm_env(os.environ)  # as for the ranks of a bigger local launch
        summary = run_rank(run_dir)
        print_summary(run_dir, summary)
        return exit_code(summary)
    log.info("%d local ranks; rank 0 below, all ranks in %s/rank*.out", procs, logs_dir(run_dir))
    code = launch_local(run_dir, procs)
    if code == EXIT_STOPPED:
        log.warning("stopped after checkpointing; re-run the same command to resume (%s)", run_dir)
    elif code:
        error = read_status(run_dir).get("error")  # the first failure the ranks recorded, named
        log.error("failed with exit code %d%s", code, f": {error}" if error else "")
    return code


def _slurm(args: argparse.Namespace) -> int:
    from distgan.launch.slurm import SubmitError, describe_job, follow, submit_run  # noqa: PLC0415 - submitit: Slurm only

    res = _resources(args)
    run_dir, cfg = prepare_run(args, res.world_size, res.preempt_signals)
    _warn_cpu_job(args, cfg, res)
    try:
        job = submit_run(run_dir, res, job_name=f"distgan-{run_dir.name}")
    except SubmitError as e:  # sbatch kept failing: not the request's fault
        return print_error(e, EXIT_FAILED)
    log.info("%d node(s) x %d rank(s) = world size %d", res.nodes, res.tasks_per_node, res.world_size)
    log.info(describe_job(job, run_dir))
    if not args.wait:
        return 0
    return follow(job)


def _check(args: argparse.Namespace, cluster: str) -> int:
    from distgan.launch import check  # noqa: PLC0415 - torch and the rendezvous: only for --check

    if cluster == "slurm":
        res = _resources(args)
        run_dir, cfg = prepare_run(args, res.world_size)
        return check.check_slurm(run_dir, cfg, res)
    procs = args.gpus_per_node or args.procs_per_node or 1
    run_dir, cfg = prepare_run(args, procs)
    return check.check_local(run_dir, cfg, procs, args.gpus_per_node or 0)


def _emit(args: argparse.Namespace) -> int:
    res = _resources(args)
    run_dir, cfg = prepare_run(args, res.world_size, res.preempt_signals)
    _warn_cpu_job(args, cfg, res)
    path = write_sbatch(args.emit_sbatch, run_dir, res, job_name=f"distgan-{run_dir.name}")
    log.info("wrote %s (%d node(s) x %d rank(s)); submit it with: sbatch %s", path, res.nodes, res.tasks_per_node,
             path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
