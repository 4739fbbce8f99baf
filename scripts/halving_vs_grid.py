"""Successive halving against the full grid it searches: cost, pick and ranking (docs/sweeps.md).

    python scripts/halving_vs_grid.py runs/sweeps/fashion_lr_batch runs/sweeps/fashion_lr_batch_halving

Both sweeps must lay out the same cells under the same run names (the halving sweep file is the
grid's with ``strategy: halving`` and a rung metric). Prints, as markdown:

- compute: steps trained (each run's furthest step) and the wall time its attempts recorded
  (``train_seconds`` of status.json), halving against the grid;
- every cell: its rung values in the halving sweep and its final metric in the grid (mean and
  std over seeds, ``FINAL_NUM`` samples, and the 10,000-sample FID where a run has one);
- the picks: halving's best cell (the one that finished the last rung) and the grid's, with
  whether they agree or lie within the seeds' spread;
- Spearman's rank correlation between each rung's values and the grid's final metric, over
  the cells that reached that rung;
- with ``--check-bitwise``: whether the halving winner's final generator equals, tensor for
  tensor, the grid's run of the same cell (promotion resumes; it should).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from same_runs import latest_state, same_tensors  # the sibling script (scripts/ is on sys.path when run)
from scipy.stats import spearmanr

from distgan.rundir import METRICS, read_jsonl, read_status


def _final(run_dir: Path, name: str, step: int, num: int | None = None) -> float | None:
    """The run's ``name`` record at ``step``: the first one (the training's own evaluation; later
    evaluations are appended after it), or the newest with ``num`` generated samples when given
    (also looked for in ``RUN/fid_10k.jsonl``, where the study writes its 10,000-sample FIDs)."""
    found = None
    files = [run_dir / METRICS] + ([run_dir / "fid_10k.jsonl"] if num is not None else [])
    for rec in (r for f in files for r in read_jsonl(f)):
        if rec.get("name") != name or int(rec.get("step", -1)) != step:
            continue
        if num is None:
            return float(rec["value"])
        if int(rec.get("provenance", {}).get("num_fake", 0)) == num:
            found = float(rec["value"])
    return found


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _spent(sweep: Path, names: list[str]) -> tuple[int, float]:
    steps, seconds = 0, 0.0
    for n in names:
        st = read_status(sweep / "runs" / n)
        steps += int(st.get("step") or 0)
        seconds += float(st.get("train_seconds") or 0.0)
    return steps, seconds


def _same_generator(a: Path, b: Path) -> bool:
    return same_tensors(latest_state(a)["G"], latest_state(b)["G"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="the full grid's sweep directory")
    p.add_argument("halving", type=Path, help="the halving sweep's directory (halving.json)")
    p.add_argument("--metric", default="", help="the grid's final metric (default: its runs.json metric)")
    p.add_argument("--check-bitwise", action="store_true", help="compare the halving winner's G with the grid's")
    a = p.parse_args(argv)
    grid_meta = json.loads((a.grid / "runs.json").read_text())
    metric = a.metric or grid_meta["metric"]
    state = json.loads((a.halving / "halving.json").read_text())
    budgets: list[int] = state["budgets"]
    final_step = budgets[-1]
    cells = state["cells"]
    rows = []
    for key, cell in cells.items():
        runs = cell["runs"]
        finals = [_final(a.grid / "runs" / n, metric, final_step) for n in runs]
        tenk = [_final(a.grid / "runs" / n, metric, final_step, num=10000) for n in runs]
        rows.append({"key": key, "runs": runs, "rungs": {int(b): v for b, v in cell["rungs"].items()},
                     "fate": cell["fate"], "finals": finals, "tenk": tenk})
    complete = [r for r in rows if None not in r["finals"]]
    for r in complete:
        r["final"], r["final_std"] = _mean_std(r["finals"])
    print(f"## Halving ({state['metric']} at rungs {', '.join(map(str, budgets))}) against the full grid "
          f"({metric} at step {final_step})\n")
    h_steps, h_sec = _spent(a.halving, [n for r in rows for n in r["runs"]])
    g_steps, g_sec = _spent(a.grid, [n for r in rows for n in r["runs"]])
    print("| | steps trained | wall time of the runs' attempts |\n|---|---|---|")
    print(f"| full grid | {g_steps:,} | {g_sec / 3600:.2f} h |")
    share = f" ({100 * h_steps / g_steps:.0f}% of the grid's)" if g_steps else ""
    share_t = f" ({100 * h_sec / g_sec:.0f}%)" if g_sec else ""
    print(f"| halving | {h_steps:,}{share} | {h_sec / 3600:.2f} h{share_t} |\n")

    def label(r: dict[str, Any]) -> str:
        point = json.loads(r["key"]) if r["key"].startswith("{") else {"run": r["key"]}
        return ", ".join(f"{k}={v}" for k, v in point.items())

    order = sorted(rows, key=lambda r: (-len(r["rungs"]), r["rungs"].get(max(r["rungs"], default=0), 0.0)))
    print("| cell | " + " | ".join(f"{state['metric']} @ {b}" for b in budgets) +
          f" | halving | grid {metric} @ {final_step} (mean ± std) | 10k-sample {metric} |")
    print("|---|" + "---|" * (len(budgets) + 3))
    for r in order:
        vals = [f"{r['rungs'][b]:.4g}" if b in r["rungs"] else "" for b in budgets]
        grid = f"{r['final']:.1f} ± {r['final_std']:.1f}" if "final" in r else "n/a"
        tenk = [v for v in r["tenk"] if v is not None]
        tk = ", ".join(f"{v:.1f}" for v in tenk) if tenk else ""
        print(f"| {label(r)} | " + " | ".join(vals) + f" | {r['fate']} | {grid} | {tk} |")
    print()
    if len(complete) >= 2:
        winner = order[0]
        best = min(complete, key=lambda r: r["final"])
        print(f"- halving's pick: {label(winner)} ({winner['fate']}); the grid's best: {label(best)}.")
        if "final" in winner:
            gap = winner["final"] - best["final"]
            spread = max(winner["final_std"], best["final_std"])
            within = "within" if gap <= 2 * spread else "beyond"
            verdict = "the same cell" if winner is best else \
                f"{gap:.1f} above the grid's best, {within} twice the larger seed std ({2 * spread:.1f})"
            print(f"- halving's pick in the grid: {winner['final']:.1f} ± {winner['final_std']:.1f}: {verdict}.")
        ranked_grid = sorted(complete, key=lambda r: r["final"])
        print(f"- top two, halving: {label(order[0])}; {label(order[1])}")
        print(f"- top two, grid: {label(ranked_grid[0])}; {label(ranked_grid[1])}")
        for b in budgets:
            at = [r for r in complete if b in r["rungs"]]
            if len(at) >= 3:
                rho = spearmanr([r["rungs"][b] for r in at], [r["final"] for r in at]).statistic
                print(f"- Spearman rank correlation, {state['metric']} at step {b} vs grid {metric} at "
                      f"{final_step}, over {len(at)} cells: {rho:.2f}")
        if a.check_bitwise and "final" in winner:
            same = [_same_generator(a.halving / "runs" / n, a.grid / "runs" / n) for n in winner["runs"]]
            print(f"- halving winner's final G equals the grid's run of the same cell, tensor for tensor: "
                  f"{', '.join('yes' if s else 'NO' for s in same)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
