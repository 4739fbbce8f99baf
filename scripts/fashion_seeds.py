"""Mean ± std over training seeds of the Fashion-MNIST benchmark's records.

    python scripts/fashion_seeds.py dcgan cdcgan

Reads ``runs/fashion_fid_MODEL[_seedN]/benchmark.jsonl`` (what
``scripts/fashion_benchmark.sh`` writes for each seed) and prints one row per
model: each metric's mean ± sample standard deviation (n - 1) and the seeds it
covers. A metric present for fewer seeds than the others says so.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from distgan.rundir import read_jsonl


def seed_runs(model: str, runs_dir: Path = Path("runs")) -> dict[int, Path]:
    """{training seed: run directory} of one model's benchmark runs (``fashion_fid_MODEL[_seedN]``)."""
    found = {}
    for run in sorted(runs_dir.glob(f"fashion_fid_{model}*")):
        suffix = run.name[len(f"fashion_fid_{model}"):]
        if run.is_dir() and (not suffix or suffix.startswith("_seed")):
            found[int(suffix[len("_seed"):]) if suffix else 0] = run
    return found


def records(run: Path) -> dict[str, float]:
    """The last value of every metric in ``run/benchmark.jsonl`` ({} when the file is missing)."""
    return {rec["name"]: float(rec["value"]) for rec in read_jsonl(run / "benchmark.jsonl")}


def summary(model: str, runs_dir: Path = Path("runs")) -> str:
    seeds = {seed: recs for seed, run in seed_runs(model, runs_dir).items() if (recs := records(run))}
    if not seeds:
        return f"{model}: no scored runs under {runs_dir}"
    names = sorted({n for r in seeds.values() for n in r})
    parts = []
    for n in names:
        vals = [r[n] for r in seeds.values() if n in r]
        digits = 3 if abs(vals[0]) < 2 else 1
        spread = f" ± {statistics.stdev(vals):.{digits}f}" if len(vals) > 1 else ""
        parts.append(f"{n} {statistics.mean(vals):.{digits}f}{spread} (n={len(vals)}: "
                     + ", ".join(f"{v:.{digits}f}" for v in vals) + ")")
    return f"{model} (seeds {', '.join(map(str, sorted(seeds)))}): " + "; ".join(parts)


if __name__ == "__main__":
    for m in sys.argv[1:] or ["dcgan", "cdcgan"]:
        print(summary(m))
