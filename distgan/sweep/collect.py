"""Summarise a sweep directory: results.csv, results.md and a plot.

    python -m distgan.sweep collect runs/sweeps/debug_grid

- ``results.csv``: one row per run: grid point, seed, state, the metric's value
  at the run's last evaluation, and that record's provenance (extractor,
  weights sha256, sample counts, ...), the run dir, log and error.
- ``results.md``: mean +- std over seeds per grid point, best first, then every
  run that failed or has no metric, with its log path and error.
- ``results.png``: a heatmap when two axes were swept, a line chart (numeric
  axis) or bar chart for one, a bar chart over grid points otherwise.

Metric values come from each run's ``metrics.jsonl`` (one JSON record per
evaluated metric: step, name, value, lower_is_better, ema, provenance).
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distgan import rundir, runlock
from distgan.extras import pyplot
from distgan.fsutil import atomic_write_bytes, atomic_write_text
from distgan.rundir import read_jsonl, read_status
from distgan.sweep import halving, tables
from distgan.sweep import round as rounds
from distgan.sweep.submit import read_jobs


@dataclass
class RunResult:
    name: str
    point: dict[str, str]
    seed: int
    state: str                          # ok | failed | no metric | paused | pending | interrupted | not run
    value: float | None = None
    record: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    log: str = ""
    error: str = ""
    train_seconds: float = 0.0          # wall time of all its attempts (status.json)
    rank_seconds: float = 0.0           # the same, times each attempt's world size


def read_metric(run_dir: Path, metric: str) -> dict[str, Any] | None:
    """The run's last ``metric`` record (highest step; the later line wins a tie)."""
    best = None
    for rec in read_jsonl(run_dir / rundir.METRICS):
        if isinstance(rec, dict) and rec.get("name") == metric and isinstance(rec.get("value"), (int, float)):
            if best is None or int(rec.get("step", 0)) >= int(best.get("step", 0)):
                best = rec
    return best


def run_result(sweep_dir: Path, run: dict[str, Any], metric: str, jobs: dict[str, str]) -> RunResult:
    run_dir = sweep_dir / "runs" / run["name"]
    st = read_status(run_dir)
    res = RunResult(run["name"], run["point"], run["seed"], "not run", run_dir=str(run_dir),
                    log=str(st.get("log", "")), train_seconds=float(st.get("train_seconds", 0.0)),
                    rank_seconds=float(st.get("rank_seconds", 0.0)))
    state = st.get("state")
    if state == "completed":
        rec = read_metric(run_dir, metric)
        if rec is None:
            res.state, res.error = "no metric", f"no '{metric}' record in {run_dir / rundir.METRICS}"
        else:
            res.state, res.value, res.record = "ok", float(rec["value"]), rec
    elif state == "failed":
        res.state, res.error = "failed", str(st.get("error", "unknown error"))
    elif state == "paused":  # its budget (train.stop_at) is spent: a sweep strategy stopped it early
        rec = read_metric(run_dir, metric)
        last = f"; {metric} {rec['value']:.5g} at step {rec.get('step')}" if rec else ""
        res.state = "paused"
        res.error = f"paused at step {st.get('step')} of {st.get('total_steps')} (its budget){last}"
    elif state == "stopped":
        res.state, res.error = "failed", f"stopped at step {st.get('step')} (preempted or cancelled, not finished)"
    elif state == "running":  # the run's lock tells a live training from one that died without a word
        live = runlock.owner(run_dir)
        if live is None:
            res.state = "interrupted"
            res.error = (f"interrupted after step {st.get('step') or 0}: no process holds the run (it died without "
                         "recording why, e.g. a lost node or SIGKILL); submit the sweep again to resume it")
        else:
            res.state, res.error = "pending", f"training now: {runlock.describe(live)}"
    elif run["name"] in jobs:
        res.state, res.error = "pending", f"Slurm job {jobs[run['name']]} has not started it"
        res.log = res.log or str(sweep_dir / "slurm" / f"{jobs[run['name']]}_0_log.out")
    if res.state != "ok" and not res.log:
        res.log = str(rundir.logs_dir(run_dir))
    if res.value is not None and not math.isfinite(res.value):
        res.state, res.error = "failed", f"metric {metric} is {res.value}"
    return res


def summarise(results: list[RunResult], axes: list[str], lower_is_better: bool) -> list[dict[str, Any]]:
    """One row per grid point: mean, std, n; sorted best first (points without values last)."""
    groups: dict[tuple, list[RunResult]] = {}
    for r in results:
        groups.setdefault(tuple(r.point.get(a, "") for a in axes), []).append(r)
    rows = []
    for key, rs in groups.items():
        vals = [r.value for r in rs if r.state == "ok" and r.value is not None]
        rows.append({"point": dict(zip(axes, key)), "n": len(vals), "runs": len(rs),
                     "mean": statistics.fmean(vals) if vals else None,
                     "std": statistics.stdev(vals) if len(vals) > 1 else None})
    sign = 1 if lower_is_better else -1
    rows.sort(key=lambda r: (r["mean"] is None, sign * (r["mean"] or 0.0)))
    return rows


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def write_csv(path: Path, results: list[RunResult], axes: list[str], metric: str, lower: bool) -> None:
    prov_keys = sorted({k for r in results for k in (r.record.get("provenance") or {})})
    heads = ["run", *axes, "seed", "state", "metric", "value", "step", "ema", "lower_is_better",
             *[f"provenance.{k}" for k in prov_keys], "run_dir", "log", "error"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(heads)
    for r in results:
        prov = r.record.get("provenance") or {}
        w.writerow([r.name, *[r.point.get(a, "") for a in axes], r.seed, r.state, metric,
                    "" if r.value is None else repr(r.value), r.record.get("step", ""),
                    r.record.get("ema", ""), lower, *[prov.get(k, "") for k in prov_keys],
                    r.run_dir, r.log, r.error])
    atomic_write_text(path, buf.getvalue())


def write_markdown(path: Path, name: str, results: list[RunResult], rows: list[dict[str, Any]],
                   axes: list[str], metric: str, lower: bool, plot: str | None,
                   table_specs: list[dict[str, Any]] | None = None, cpus_per_rank: int = 1) -> None:
    ok = sum(r.state == "ok" for r in results)
    lines = [f"# Sweep `{name}`: {metric}", "",
             f"{len(results)} runs, {ok} with a value; {metric}, "
             f"{'lower' if lower else 'higher'} is better; mean +- std over seeds, best first.", ""]
    wall = sum(r.train_seconds for r in results)
    if wall:
        rank_h = sum(r.rank_seconds for r in results) / 3600
        lines += [f"Compute: {wall / 3600:.2f} h of training wall time over the runs' attempts, "
                  f"{rank_h:.2f} rank-hours ({rank_h * cpus_per_rank:.2f} core-hours at "
                  f"{cpus_per_rank} core(s) per rank).", ""]
    timed = rounds.summary(path.parent)
    if timed:
        lines += [timed, ""]
    rec = next((r.record for r in results if r.record), None)
    if rec and rec.get("provenance"):
        keep = ("metric", "feature_extractor", "weights_sha256", "num_real", "num_fake", "resize")
        prov = ", ".join(f"{k}={str(v)[:16] if k == 'weights_sha256' else v}"
                         for k, v in rec["provenance"].items() if k in keep)
        lines += [f"Provenance (first run; every run's is in results.csv): {prov}", ""]
    heads = ["rank", *axes, f"{metric} mean", "std", "seeds ok"]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for i, row in enumerate(rows, 1):
        lines.append("| " + " | ".join([str(i) if row["mean"] is not None else "-",
                                        *[f"`{row['point'][a]}`" for a in axes],
                                        _fmt(row["mean"]), _fmt(row["std"]), f"{row['n']}/{row['runs']}"]) + " |")
    if table_specs:
        lines += ["", "## Tables", "", *tables.markdown(table_specs, rows, metric)]
    bad = [r for r in results if r.state != "ok"]
    if bad:
        lines += ["", f"## Runs without a value ({len(bad)})", "",
                  "| run | seed | state | error | log |", "|---|---|---|---|---|"]
        for r in bad:
            err = r.error.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.name}` | {r.seed} | {r.state} | {err} | `{r.log}` |")
    if plot:
        lines += ["", f"![{metric} per grid point]({plot})"]
    if (path.parent / halving.STATE).is_file():
        state = json.loads((path.parent / halving.STATE).read_text())
        lines += ["", *halving.markdown(state)]
        if any(c["rungs"] for c in state.get("cells", {}).values()):
            halving.plot(state, path.parent / "halving.png")
            lines += ["", f"![{state.get('metric')} against steps per cell](halving.png)"]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _numeric(labels: list[str]) -> list[float] | None:
    try:
        return [float(x) for x in labels]
    except ValueError:
        return None


def write_plot(path: Path, rows: list[dict[str, Any]], axes: list[str], metric: str, lower: bool) -> None:
    """Heatmap for two axes, line (numeric) or bar chart for one, bars over points otherwise."""
    plt = pyplot("the sweep's results plot")

    better = "lower" if lower else "higher"
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    if len(axes) == 2:
        ys = list(dict.fromkeys(r["point"][axes[0]] for r in rows))
        xs = list(dict.fromkeys(r["point"][axes[1]] for r in rows))
        for labels in (ys, xs):
            num = _numeric(labels)
            if num is not None:
                labels.sort(key=float)
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            if r["mean"] is not None:
                grid[ys.index(r["point"][axes[0]]), xs.index(r["point"][axes[1]])] = r["mean"]
        im = ax.imshow(grid, cmap="viridis_r" if lower else "viridis", aspect="auto")
        ax.set_xticks(range(len(xs)), xs)
        ax.set_yticks(range(len(ys)), ys)
        ax.set_xlabel(axes[1])
        ax.set_ylabel(axes[0])
        for i in range(len(ys)):
            for j in range(len(xs)):
                v = grid[i, j]
                if np.isnan(v):
                    ax.text(j, i, "no value", ha="center", va="center", color="red")
                    continue
                r, g, b, _ = im.cmap(im.norm(v))  # dark text on light cells
                ax.text(j, i, f"{v:.3g}", ha="center", va="center",
                        color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
        fig.colorbar(im, ax=ax, label=f"{metric} ({better} is better)")
    else:
        labels = [" ".join(r["point"][a] for a in axes) or "all" for r in rows]
        means = [np.nan if r["mean"] is None else r["mean"] for r in rows]
        stds = [0.0 if r["std"] is None else r["std"] for r in rows]
        num = _numeric(labels) if len(axes) == 1 else None
        if num is not None:
            order = np.argsort(num)
            ax.errorbar(np.array(num)[order], np.array(means)[order], yerr=np.array(stds)[order],
                        marker="o", capsize=4)
            ax.set_xscale("log" if min(num) > 0 and max(num) / min(num) >= 20 else "linear")
        else:
            ax.bar(range(len(labels)), means, yerr=stds, capsize=4)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlabel(" x ".join(axes) or "run")
        ax.set_ylabel(f"{metric} ({better} is better)")
    ax.set_title(f"{metric}: mean over seeds")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def collect(sweep_dir: str | Path) -> dict[str, Any]:
    """Write results.csv, results.md and results.png in ``sweep_dir``; returns a summary."""
    sweep_dir = Path(sweep_dir)
    meta_path = sweep_dir / "runs.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"'{sweep_dir}' is not a sweep directory: {meta_path} does not exist")
    meta = json.loads(meta_path.read_text())
    metric, lower, axes = meta["metric"], bool(meta["lower_is_better"]), list(meta["axes"])
    jobs = read_jobs(sweep_dir)
    results = [run_result(sweep_dir, run, metric, jobs) for run in meta["runs"]]
    rows = summarise(results, axes, lower)
    write_csv(sweep_dir / "results.csv", results, axes, metric, lower)
    plot = None
    if any(r["mean"] is not None for r in rows):
        write_plot(sweep_dir / "results.png", rows, axes, metric, lower)
        plot = "results.png"
    write_markdown(sweep_dir / "results.md", meta["name"], results, rows, axes, metric, lower, plot,
                   meta.get("tables") or [], int(meta.get("cpus_per_rank", 1)))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {"runs": len(results), "states": counts, "best": rows[0] if rows else None,
            "csv": str(sweep_dir / "results.csv"), "md": str(sweep_dir / "results.md"),
            "plot": str(sweep_dir / plot) if plot else None}
