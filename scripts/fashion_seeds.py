"""Mean ± std over training seeds of the Fashion-MNIST benchmark's records.

    python scripts/fashion_seeds.py dcgan cdcgan

Reads ``runs/fashion_fid_MODEL[_seedN]/benchmark.jsonl`` (what
``scripts/fashion_benchmark.sh`` writes for each seed) and prints one row per
model: each metric's mean ± sample standard deviation (n - 1) and the seeds it
covers. A metric present for fewer seeds than the others says so.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def records(run: Path) -> dict[str, float]:
    """The last value of every metric in ``run/benchmark.jsonl`` ({} when the file is missing)."""
    path = run / "benchmark.jsonl"
    out: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn last line from an interrupted write
            out[rec["name"]] = float(rec["value"])
    return out


def summary(model: str, runs_dir: Path = Path("runs")) -> str:
    seeds: dict[int, dict[str, float]] = {}
    for run in sorted(runs_dir.glob(f"fashion_fid_{model}*")):
        suffix = run.name[len(f"fashion_fid_{model}"):]
        if not run.is_dir() or (suffix and not suffix.startswith("_seed")):
            continue
        seed = int(suffix[len("_seed"):]) if suffix else 0
        recs = records(run)
        if recs:
            seeds[seed] = recs
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
