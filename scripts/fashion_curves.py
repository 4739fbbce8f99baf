"""Fashion-MNIST benchmark curves against training steps, mean ± std over training seeds.

    python scripts/fashion_curves.py --fd docs/quality/fd_vs_steps.png
    python scripts/fashion_curves.py --score 2000,6000,10000 --fid docs/quality/fid_vs_steps.png
    python scripts/fashion_curves.py --models dcgan,NAME --fd fd.png   # any fashion_fid_NAME preset's runs

Two curves, each over the seed runs ``runs/fashion_fid_MODEL[_seedN]``:

- ``--fd``: the ``classifier_fd`` records every run wrote to its ``metrics.jsonl``
  during training (every 2,000 steps, 1,000 samples against the training set);
- ``--fid``: the test-set FID of checkpoints, 2,000 samples against the 10,000
  test images, read from each run's ``fid_curve.jsonl``. ``--score STEPS`` first
  fills that file: for every run and listed step not yet scored it runs
  ``python -m distgan.metrics fid RUN shards/fashion28_test --num 2000
  --checkpoint STEP --out RUN/fid_curve.jsonl`` (the test images' features come
  from the reference cache after the first run).

Each plot has one line per model with a band of ±1 standard deviation over the
seeds present at each step; the table is printed too.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from fashion_seeds import seed_runs  # the sibling script (scripts/ is on sys.path when run)

from distgan.rundir import METRICS, read_jsonl

MODELS = {"dcgan": "unconditional DCGAN", "cdcgan": "projection D + class-conditional BN"}  # the default, labelled
FID_CURVE = "fid_curve.jsonl"
FID_SAMPLES = 2000
TEST_SHARDS = "shards/fashion28_test"


def fd_curve(model: str, runs_dir: Path = Path("runs")) -> dict[int, list[float]]:
    """{step: [classifier_fd of each seed]} for one model, from the training records."""
    out: dict[int, list[float]] = {}
    for run in seed_runs(model, runs_dir).values():
        for rec in read_jsonl(run / METRICS):
            if rec.get("name") == "classifier_fd":
                out.setdefault(int(rec["step"]), []).append(float(rec["value"]))
    return dict(sorted(out.items()))


def _scored_fid(run: Path) -> dict[int, float]:
    """{checkpoint step: FID} of the 2,000-sample records in ``run/fid_curve.jsonl`` (the last one per step)."""
    found = {}
    for rec in read_jsonl(run / FID_CURVE):
        if rec.get("name") == "fid" and rec["provenance"]["a"].get("count") == FID_SAMPLES:
            found[int(rec["provenance"]["a"]["step"])] = float(rec["value"])
    return found


def fid_curve(model: str, runs_dir: Path = Path("runs")) -> dict[int, list[float]]:
    """{step: [test-set FID of each seed]} for one model, from the runs' ``fid_curve.jsonl``."""
    out: dict[int, list[float]] = {}
    for run in seed_runs(model, runs_dir).values():
        for step, value in _scored_fid(run).items():
            out.setdefault(step, []).append(value)
    return dict(sorted(out.items()))


def score(steps: list[int], models: list[str], runs_dir: Path = Path("runs")) -> None:
    """Score every (run, step) of ``steps`` missing from the runs' ``fid_curve.jsonl``."""
    for model in models:
        for run in seed_runs(model, runs_dir).values():
            done = _scored_fid(run)
            for step in steps:
                if step in done:
                    continue
                print(f"scoring {run} at step {step}", flush=True)
                subprocess.run([sys.executable, "-m", "distgan.metrics", "fid", str(run), TEST_SHARDS,
                                "--num", str(FID_SAMPLES), "--checkpoint", str(step),
                                "--out", str(run / FID_CURVE)], check=True, stdout=subprocess.DEVNULL)


def plot(curve, models: list[str], ylabel: str, out: str, log_scale: bool) -> None:
    """One line per model with a ±1 std band over seeds; prints each model's row."""
    import matplotlib  # plotting is optional for distgan; this script needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for model in models:
        label = MODELS.get(model, f"fashion_fid_{model}")
        data = curve(model)
        if not data:
            continue
        steps = list(data)
        mean = [statistics.mean(v) for v in data.values()]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in data.values()]
        seeds = max(len(v) for v in data.values())
        ax.plot(steps, mean, marker="o", label=f"{label} ({seeds} seeds)")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.25)
        print(f"{model}: " + "; ".join(f"{s}: {m:.2f} ± {d:.2f} (n={len(v)})"
                                       for s, m, d, v in zip(steps, mean, std, data.values())))
    ax.set_xlabel("training step (batch 64)")
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
        from matplotlib.ticker import LogLocator, StrMethodFormatter  # noqa: PLC0415 - with matplotlib above

        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.yaxis.set_minor_formatter(StrMethodFormatter(""))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fd", help="write the classifier-FD plot here")
    p.add_argument("--fid", help="write the test-set FID plot here")
    p.add_argument("--score", default="", help="comma-separated checkpoint steps to score first (2,000 samples)")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated preset names NAME of configs/fashion_fid_NAME.yaml (runs/fashion_fid_NAME*)")
    a = p.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    if a.score:
        score([int(s) for s in a.score.split(",")], models)
    if a.fd:
        plot(fd_curve, models, "classifier FD (1,000 samples)", a.fd, log_scale=True)
    if a.fid:
        plot(fid_curve, models, f"test-set FID ({FID_SAMPLES:,} vs 10,000)", a.fid, log_scale=True)


if __name__ == "__main__":
    main()
