"""Do two sweep directories hold the same training, run by run, bit for bit?

    python scripts/same_runs.py runs/sweeps/fashion_lr_batch_halving runs/sweeps/fashion_lr_batch_halving_slurm

For every run name in both (``SWEEP_DIR/runs/NAME``) it compares the latest checkpoints:
the step, then G, D and the EMA of G tensor for tensor, and the metric records both runs
wrote (name, step, value). Prints one markdown row per run and a summary; exits 1 when a
run differs. Training on the CPU is deterministic, so a sweep run through the local
Slurm cluster and the same sweep run by the local pool should agree exactly: this is
how a result measured one way is shown to be the other's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distgan.errors import UserError

PARTS = ("G", "D", "ema")


def same_tensors(a: dict, b: dict) -> bool:
    """Two state dicts with the same keys and bitwise-equal tensors."""
    import torch  # noqa: PLC0415 - torch only for the comparison, not for --help

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def latest_state(run: Path) -> dict:
    from distgan.checkpoint import read_checkpoint  # noqa: PLC0415 - as above

    return read_checkpoint(run).state


def _records(run: Path) -> list[tuple]:
    from distgan.rundir import METRICS, read_jsonl  # noqa: PLC0415

    return sorted((r.get("name"), int(r.get("step", 0)), r.get("value")) for r in read_jsonl(run / METRICS)
                  if isinstance(r, dict))


def compare(a: Path, b: Path) -> tuple[str, bool]:
    """(what differs or "identical", whether identical) for two run directories."""
    ca, cb = latest_state(a), latest_state(b)
    if ca["step"] != cb["step"]:
        return f"steps differ: {ca['step']} vs {cb['step']}", False
    for part in PARTS:
        if (part in ca) != (part in cb):
            return f"{part} in one checkpoint only", False
        if part in ca and not same_tensors(ca[part], cb[part]):
            return f"{part} differs at step {ca['step']}", False
    ra, rb = _records(a), _records(b)
    if ra != rb:
        return f"metric records differ ({len(ra)} vs {len(rb)} records)", False
    return f"identical at step {ca['step']} ({len(ra)} metric records)", True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="a sweep directory")
    p.add_argument("b", type=Path, help="another sweep directory with runs of the same names")
    args = p.parse_args(argv)
    names = sorted({r.name for r in (args.a / "runs").iterdir()} & {r.name for r in (args.b / "runs").iterdir()})
    if not names:
        print(f"no run name is in both {args.a / 'runs'} and {args.b / 'runs'}", file=sys.stderr)
        return 2
    print("| run | result |\n|---|---|")
    same = 0
    for n in names:
        try:
            text, ok = compare(args.a / "runs" / n, args.b / "runs" / n)
        except (OSError, KeyError, ValueError, UserError) as e:  # no checkpoint yet, an unreadable one
            text, ok = f"not comparable: {e}", False
        same += ok
        print(f"| `{n}` | {text} |")
    print(f"\n{same} of {len(names)} runs identical")
    return 0 if same == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
