"""The ``distgan`` console command: ``distgan COMMAND ...`` runs ``python -m distgan.COMMAND ...``.

    distgan --help                     # the commands
    distgan shards index 'data/train-{000000..000009}.tar'
    distgan launch --config configs/debug.yaml
    distgan sample --run runs/debug --num 64 --out grid.png

Each command is its module run as ``__main__`` (same arguments, output and
exit status as ``python -m``), so the two spellings can never drift apart.
"""
from __future__ import annotations

import runpy
import sys

from distgan.errors import EXIT_USER_ERROR

COMMANDS = {
    "launch": "train locally or on Slurm; re-running the same run dir resumes",
    "shards": "write shards from a source, index existing WebDataset shards, verify a shard set",
    "sweep": "run an ablation grid as a job array; collect its results table and plot",
    "sample": "generate images (.png grid or .npz arrays) from a trained run",
    "metrics": "FID / KID / classifier metrics of a run or of any two image sets; reference stats",
    "export": "export a run's generator (safetensors, ONNX, TorchScript)",
    "report": "an HTML report of a run: curves, sample grids, metric records",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: distgan COMMAND [ARGS ...]", "", "Train GANs on HPC clusters from WebDataset shards.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "distgan COMMAND --help shows a command's options; "
              "`distgan COMMAND` is the same as `python -m distgan.COMMAND`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else EXIT_USER_ERROR
    cmd, rest = args[0], args[1:]
    if cmd not in COMMANDS:
        print(f"distgan: unknown command '{cmd}'; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USER_ERROR
    saved = sys.argv
    sys.argv = [f"distgan {cmd}", *rest]
    try:
        runpy.run_module(f"distgan.{cmd}", run_name="__main__", alter_sys=True)
    except SystemExit as e:  # the modules end with sys.exit(main())
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
