"""Train a GAN from a preset.

    python -m distgan.launch --config configs/debug.yaml
    python -m distgan.launch --config configs/mnist_cdcgan.yaml --run-dir runs/mnist train.lr_d=5e-4
    python -m distgan.launch --help-config          # every config key with its doc

Re-running the same command with the same run directory resumes from the latest
checkpoint. Building the config, launching processes and training are separate
steps: this module only does the first two.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distgan.config import ConfigError, describe, load_config


def default_run_dir(config_path: str) -> Path:
    return Path("runs") / Path(config_path).stem


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distgan.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="preset YAML file (configs/*.yaml)")
    p.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    p.add_argument("--cluster", default="local", choices=["auto", "local", "slurm"],
                   help="where to run (only local in this version)")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes")
    p.add_argument("--procs-per-node", type=int, default=1, help="processes per node")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr_d=5e-4")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.help_config:
        print(describe())
        return 0
    if not args.config:
        print("error: --config FILE is required (e.g. configs/debug.yaml)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cluster == "slurm" or args.nodes > 1 or args.procs_per_node > 1:
        print("error: multi-process and Slurm launches are not available in this version; "
              "run with --cluster local --nodes 1 --procs-per-node 1", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config)
    from distgan.train import train

    summary = train(cfg, run_dir)
    print_summary(run_dir, summary)
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
