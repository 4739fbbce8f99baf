"""A static results page for one run: ``RUN_DIR/report.html``.

    python -m distgan.report --run runs/mnist_cdcgan      # then open runs/mnist_cdcgan/report.html

The page shows the resolved config, loss and discriminator-output curves, the
sample grids from fixed noise in step order (how G evolved), the metric history
with each record's provenance, throughput / step times, and any health warnings
from the log. Curves are PNGs drawn with matplotlib into ``RUN_DIR/report/``
from ``stats.jsonl`` (or the TensorBoard scalars when that file is missing);
sample grids are referenced in place (``samples/*.png``). No server, no
JavaScript: the directory can be copied or zipped as it is.
"""
from __future__ import annotations

import argparse
import html
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

from distgan import rundir
from distgan.errors import cli_main
from distgan.extras import MissingExtra, pyplot
from distgan.fsutil import atomic_open, atomic_write_text
from distgan.rundir import read_jsonl

CURVES = [  # (file stem, title, keys, y label)
    ("losses", "Losses", ["loss_d", "loss_g"], "loss"),
    ("d_outputs", "Discriminator outputs (probabilities: bce, nonsat, lsgan)", ["d_real", "d_fake", "d_fake_g"],
     "D(x)"),
    ("grad_norms", "Gradient norms", ["grad_norm_d", "grad_norm_g"], "norm"),
    ("lr", "Learning rates", ["lr_d", "lr_g"], "lr"),
    ("throughput", "Throughput (all ranks)", ["images_per_s"], "images / s"),
]
MAX_GRIDS = 12


def read_scalars(run_dir: Path) -> list[dict[str, Any]]:
    """Logged scalars as rows ``{"step": s, key: value, ...}``: stats.jsonl, else TensorBoard events."""
    rows = read_jsonl(run_dir / rundir.STATS)
    if rows or not (run_dir / rundir.TB).is_dir():
        return rows
    # tensorboard's reader costs ~0.4 s and is only the fallback when stats.jsonl is missing
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    acc = EventAccumulator(str(run_dir / rundir.TB), size_guidance={"scalars": 0})
    acc.Reload()
    by_step: dict[int, dict[str, Any]] = {}
    for tag in acc.Tags().get("scalars", []):
        for e in acc.Scalars(tag):
            by_step.setdefault(e.step, {"step": e.step})[tag] = e.value
    return [by_step[s] for s in sorted(by_step)]


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    last: dict[int, float] = {}  # a resumed run may log a step twice: the later record wins
    for r in rows:
        if key in r and isinstance(r[key], (int, float)):
            last[int(r["step"])] = float(r[key])
    steps = sorted(last)
    return steps, [last[s] for s in steps]


def plot_curves(rows: list[dict[str, Any]], out_dir: Path) -> list[tuple[str, str]]:
    """One PNG per curve group that has data; returns (relative path, title)."""
    plt = pyplot("the report's training curves")

    made = []
    health_keys = sorted({k for r in rows for k in r if k.startswith("health/")})
    groups = CURVES + ([("health", "Health signals", health_keys, "value")] if health_keys else [])
    for stem, title, keys, ylabel in groups:
        series = [(k, *_series(rows, k)) for k in keys]
        series = [s for s in series if s[1]]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
        for k, xs, ys in series:
            ax.plot(xs, ys, label=k, linewidth=1.2)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save_fig(fig, out_dir / f"{stem}.png")
        plt.close(fig)
        made.append((f"{out_dir.name}/{stem}.png", title))
    return made


def plot_metrics(records: list[dict[str, Any]], out_dir: Path) -> list[tuple[str, str]]:
    """One PNG per metric name (EMA and raw G as separate lines)."""
    plt = pyplot("the report's metric plots")

    made = []
    for name in sorted({r["name"] for r in records if "name" in r}):
        fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
        for ema in (False, True):
            pts = sorted((int(r["step"]), float(r["value"])) for r in records
                         if r.get("name") == name and bool(r.get("ema")) == ema)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{name} ({'EMA' if ema else 'G'})")
        lower = next((r.get("lower_is_better") for r in records if r.get("name") == name), None)
        hint = " (lower is better)" if lower else " (higher is better)" if lower is False else ""
        ax.set(title=f"{name}{hint}", xlabel="step", ylabel=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        stem = "metric_" + "".join(c if c.isalnum() else "_" for c in name)
        _save_fig(fig, out_dir / f"{stem}.png")
        plt.close(fig)
        made.append((f"{out_dir.name}/{stem}.png", name))
    return made


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def sample_grids(run_dir: Path) -> list[tuple[str, int]]:
    """(relative path, step) of up to MAX_GRIDS sample grids spread over the run, always the last."""
    grids = sorted((int(p.stem.split("_")[1]), p) for p in rundir.samples_dir(run_dir).glob("step_*.png")
                   if p.stem.split("_")[1].isdigit())
    if len(grids) > MAX_GRIDS:
        idx = sorted({round(i * (len(grids) - 1) / (MAX_GRIDS - 1)) for i in range(MAX_GRIDS)})
        grids = [grids[i] for i in idx]
    return [(f"{rundir.SAMPLES}/{p.name}", s) for s, p in grids]


def timing_summary(rows: list[dict[str, Any]], batch_size: int) -> dict[str, str]:
    """Median / last images per second, ms per step, and logged wall time (summed over resumes)."""
    _, ips = _series(rows, "images_per_s")
    wall, seg_max, prev = 0.0, 0.0, -1.0
    for r in rows:  # "time" restarts at 0 on resume: add up the segments
        t = float(r.get("time", 0.0))
        if t < prev:
            wall += seg_max
            seg_max = 0.0
        seg_max, prev = max(seg_max, t), t
    wall += seg_max
    out = {"logged wall time": f"{wall:.1f} s"}
    if ips:
        med = statistics.median(ips)
        out.update({"images/s, all ranks (median)": f"{med:.1f}", "images/s, all ranks (last)": f"{ips[-1]:.1f}",
                    "ms per step (median)": f"{1000 * batch_size / med:.1f}" if med > 0 else "n/a"})
    return out


def _table(rows: list[list[str]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(src: str, alt: str) -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">'
            f'<figcaption>{html.escape(alt)}</figcaption></figure>')


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` (+ ``RUN_DIR/report/*.png``); returns the HTML path."""
    run_dir = Path(run_dir)
    cfg_path = rundir.config_path(run_dir)
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: '{run_dir}' is not a distgan run directory")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    rows = read_scalars(run_dir)
    metrics = read_jsonl(run_dir / rundir.METRICS)
    out_dir = run_dir / "report"
    curves = plot_curves(rows, out_dir)
    metric_plots = plot_metrics(metrics, out_dir) if metrics else []
    grids = sample_grids(run_dir)
    ckpts = [p.name for _, p in rundir.list_checkpoints(run_dir)]
    last_step = max((int(r["step"]) for r in rows), default=0)
    total = cfg.get("train", {}).get("steps", "?")
    log = rundir.rank_log(run_dir, 0)
    warnings_ = [line for line in (log.read_text().splitlines() if log.is_file() else [])
                 if "health" in line.lower() or "warning" in line.lower()][-50:]

    parts = [f"<h1>distgan run <code>{html.escape(str(run_dir))}</code></h1>",
             f"<p>Logged up to step {last_step} of {html.escape(str(total))}; checkpoints: "
             f"{html.escape(', '.join(ckpts) or 'none')}.</p>",
             "<h2>Curves</h2>" + ("<div class='curves'>" + "".join(_img(src, t) for src, t in curves) + "</div>"
                                  if curves else "<p>No scalars logged.</p>"),
             "<h2>Samples from fixed noise</h2><p>Each grid uses the same latents (and one row per class for "
             "conditional runs), so changes between grids are changes in G.</p>"
             + ("<div class='grids'>" + "".join(_img(src, f"step {s}") for src, s in grids) + "</div>"
                if grids else "<p>No sample grids yet.</p>"),
             "<h2>Metrics</h2>" + (_metrics_html(metrics, metric_plots) if metrics else
                                   "<p>No metrics.jsonl in this run (set metrics.names to evaluate).</p>"),
             "<h2>Step times</h2>" + _table([[k, v] for k, v in timing_summary(
                 rows, int(cfg.get("train", {}).get("batch_size", 0) or 0)).items()], ["", "value"]),
             "<h2>Health warnings</h2>" + ("<pre>" + html.escape("\n".join(warnings_)) + "</pre>"
                                         if warnings_ else "<p>None in logs/rank0.log.</p>"),
             "<h2>Config</h2><pre>" + html.escape(yaml.safe_dump(cfg, sort_keys=False)) + "</pre>"]
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>distgan report: "
            f"{html.escape(run_dir.name)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path


def _metrics_html(records: list[dict[str, Any]], plots: list[tuple[str, str]]) -> str:
    rows = []
    for r in sorted(records, key=lambda r: (r.get("name", ""), r.get("step", 0))):
        prov = r.get("provenance") or {}
        rows.append([r.get("step", ""), r.get("name", ""), f"{float(r.get('value', float('nan'))):.4g}",
                     "EMA" if r.get("ema") else "G", "; ".join(f"{k}={v}" for k, v in prov.items())])
    return "".join(_img(src, t) for src, t in plots) + _table(rows, ["step", "metric", "value", "G", "provenance"])


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{text-align:center;font-size:.85em}
.grids img{image-rendering:pixelated;width:260px}.curves img{width:500px}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}"""


@cli_main(FileNotFoundError, MissingExtra)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory")
    args = p.parse_args(argv)
    path = build_report(args.run)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
