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
import shutil
import subprocess
import sys
from pathlib import Path

from distgan.config import describe, load_config, save_config
from distgan.errors import UserError
from distgan.rundir import config_path


class LaunchError(UserError, ValueError):
    """A launch request that cannot be met (the message says why and what to do)."""


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


def prepare_run(args: argparse.Namespace, world_size: int) -> tuple[Path, object]:
    """Resolve the config (with dist.expect_world_size = the world we launch) and write it."""
    overrides = list(args.overrides)
    if world_size > 1 and not any(o.startswith("dist.expect_world_size=") for o in overrides):
        overrides.append(f"dist.expect_world_size={world_size}")  # fail loudly if ranks do not join
    cfg = load_config(args.config, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, config_path(run_dir))  # what every rank (here or on a node) reads
    return run_dir, cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.help_config:
        print(describe())
        return 0
    if not args.config:
        print("error: --config FILE is required (e.g. configs/debug.yaml)", file=sys.stderr)
        return 2
    try:
        if args.emit_sbatch:
            return _emit(args)
        cluster = choose_cluster(args.cluster, args.nodes or 1)
        if args.check:
            return _check(args, cluster)
        if cluster == "slurm":
            return _slurm(args)
        return _local(args)
    except (UserError, ValueError) as e:  # config, launch, shard and checkpoint errors: one line
        print(f"error: {e}", file=sys.stderr)
        return 2


def _resources(args: argparse.Namespace):
    """The job's resources: --profile, else the site's default profile, then the flags; with
    neither a GPU nor a CPU-task count chosen anywhere, the GPUs the cluster's nodes report."""
    from distgan.launch.profiles import load_profile, resolve_resources
    from distgan.launch.site import default_profile, discover_gpus

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
            print(f"[launch] partition {found.partition} has {found.gpus_per_node} GPU(s) per node (Slurm GRES): "
                  f"requesting them, one rank each (--gpus-per-node or --procs-per-node choose otherwise)",
                  file=sys.stderr)
    return res


def _warn_cpu_job(args: argparse.Namespace, cfg, res) -> None:
    from distgan.launch.site import cpu_job_warning

    warning = cpu_job_warning(cfg, res, args.config, getattr(args, "gpu_discovery", None))
    if warning:
        print(warning, file=sys.stderr)


def _local(args: argparse.Namespace) -> int:
    if args.gpus_per_node:
        import torch

        have = torch.cuda.device_count()
        if args.gpus_per_node > have:
            raise LaunchError(f"--gpus-per-node {args.gpus_per_node} but this machine has {have} GPU(s)")
    procs = args.gpus_per_node or args.procs_per_node or 1
    if procs < 1:
        raise LaunchError(f"--procs-per-node must be >= 1, got {procs}")
    run_dir, cfg = prepare_run(args, procs)
    if procs == 1:  # one process: train right here (no rendezvous to set up)
        from distgan.train import train

        summary = train(cfg, run_dir)
        print_summary(run_dir, summary)
        from distgan.launch.worker import EXIT_STOPPED

        return 0 if summary.get("completed") else EXIT_STOPPED
    from distgan.launch.local import launch_local

    print(f"[launch] {procs} local ranks; rank 0 below, all ranks in {run_dir / 'logs'}/rank*.out", flush=True)
    from distgan.launch.worker import EXIT_STOPPED, read_status

    code = launch_local(run_dir, procs)
    if code == EXIT_STOPPED:
        print(f"[launch] stopped after checkpointing; re-run the same command to resume ({run_dir})",
              file=sys.stderr)
    elif code:
        error = read_status(run_dir).get("error")  # the first failure the ranks recorded, named
        print(f"[launch] failed with exit code {code}" + (f": {error}" if error else ""), file=sys.stderr)
    return code


def _slurm(args: argparse.Namespace) -> int:
    from distgan.launch.slurm import SubmitError, describe_job, follow, submit_run

    res = _resources(args)
    run_dir, cfg = prepare_run(args, res.world_size)
    _warn_cpu_job(args, cfg, res)
    try:
        job = submit_run(run_dir, res, job_name=f"distgan-{run_dir.name}")
    except SubmitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[launch] {res.nodes} node(s) x {res.tasks_per_node} rank(s) = world size {res.world_size}")
    print(describe_job(job, run_dir), flush=True)
    if not args.wait:
        return 0
    return follow(job)


def _check(args: argparse.Namespace, cluster: str) -> int:
    from distgan.launch import check

    if cluster == "slurm":
        res = _resources(args)
        run_dir, cfg = prepare_run(args, res.world_size)
        return check.check_slurm(run_dir, cfg, res)
    procs = args.gpus_per_node or args.procs_per_node or 1
    run_dir, cfg = prepare_run(args, procs)
    return check.check_local(run_dir, cfg, procs, args.gpus_per_node or 0)


def _emit(args: argparse.Namespace) -> int:
    from distgan.launch.sbatch import write_sbatch

    res = _resources(args)
    run_dir, cfg = prepare_run(args, res.world_size)
    _warn_cpu_job(args, cfg, res)
    path = write_sbatch(args.emit_sbatch, run_dir, res, job_name=f"distgan-{run_dir.name}")
    print(f"[launch] wrote {path} ({res.nodes} node(s) x {res.tasks_per_node} rank(s)); submit it with: "
          f"sbatch {path}")
    return 0


def print_summary(run_dir: Path, summary: dict) -> None:
    state = "finished" if summary.get("completed") else "stopped"
    print(f"\n{state} at step {summary['step']}. Run directory: {run_dir}")
    print(f"  TensorBoard logs: {run_dir / 'tb'}")
    print(f"  sample grids:     {run_dir / 'samples'}")
    print(f"  checkpoints:      {run_dir / 'checkpoints'}")
    print(f"  view with:        tensorboard --logdir {run_dir / 'tb'}")


if __name__ == "__main__":
    sys.exit(main())
