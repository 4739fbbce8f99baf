"""Classifier Fréchet distance against training steps, mean ± std over training seeds.

    python scripts/fashion_curves.py docs/quality/fd_vs_steps.png

Reads the ``classifier_fd`` records each benchmark run wrote to its
``metrics.jsonl`` during training (``runs/fashion_fid_MODEL[_seedN]``, every
2,000 steps, 1,000 samples) and plots one line per model with a band of ±1
standard deviation over the seeds present at each step; prints the table too.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from fashion_seeds import seed_runs  # the sibling script (scripts/ is on sys.path when run)

from distgan.rundir import METRICS, read_jsonl

MODELS = {"dcgan": "unconditional DCGAN", "cdcgan": "projection D + class-conditional BN"}


def curves(model: str, runs_dir: Path = Path("runs")) -> dict[int, list[float]]:
    """{step: [classifier_fd of each seed]} for one model."""
    out: dict[int, list[float]] = {}
    for run in seed_runs(model, runs_dir).values():
        for rec in read_jsonl(run / METRICS):
            if rec.get("name") == "classifier_fd":
                out.setdefault(int(rec["step"]), []).append(float(rec["value"]))
    return dict(sorted(out.items()))


def main(out: str) -> None:
    import matplotlib  # plotting is optional for distgan; this script needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for model, label in MODELS.items():
        data = curves(model)
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
    ax.set_ylabel("classifier FD (1,000 samples)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fd_vs_steps.png")
