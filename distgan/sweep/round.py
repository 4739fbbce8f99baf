"""One round of a sweep: what a strategy hands the controller (:mod:`distgan.sweep.strategies`),
and the clock the controller keeps on it.

A round of ``n`` runs with ``k`` run slots (``--max-parallel``) that the controller
waits for is timed into ``SWEEP_DIR/rounds.jsonl``: its wall time and the wall time
its runs spent training (their ``train_seconds`` in status.json, before and after).
``k`` x wall - busy is what the round left idle, for example while a rung of
successive halving waited for its last runs; ``collect`` sums it in ``results.md``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from distgan.rundir import append_jsonl, read_jsonl, read_status
from distgan.sweep.spec import SweepRun

ROUNDS = "rounds.jsonl"


@dataclass
class Round:
    """Runs to train now; the runs left out and why; whether the next round depends on these results."""

    runs: list[SweepRun]
    skipped: list[tuple[SweepRun, str]] = field(default_factory=list)
    needs_results: bool = False


def _spent(sweep_dir: Path, runs: list[SweepRun]) -> float:
    return sum(float(read_status(sweep_dir / "runs" / r.name).get("train_seconds") or 0.0) for r in runs)


@contextmanager
def clock(sweep_dir: Path, runs: list[SweepRun], slots: int) -> Iterator[None]:
    """Time a round the controller waits for; appends its record to ``SWEEP_DIR/rounds.jsonl`` when it ends."""
    before, t0 = _spent(sweep_dir, runs), time.time()
    yield
    wall = time.time() - t0
    append_jsonl(sweep_dir / ROUNDS, [{"time": time.time(), "runs": len(runs), "slots": slots,
                                       "wall_s": round(wall, 1),
                                       "busy_s": round(_spent(sweep_dir, runs) - before, 1)}])


def summary(sweep_dir: Path) -> str:
    """One line on the rounds timed so far: wall time, and the share of the run slots the runs kept busy."""
    recs: list[dict[str, Any]] = [r for r in read_jsonl(sweep_dir / ROUNDS) if isinstance(r, dict)]
    if not recs:
        return ""
    wall = sum(float(r["wall_s"]) for r in recs)
    offered = sum(float(r["wall_s"]) * int(r["slots"]) for r in recs)
    busy = min(offered, sum(float(r["busy_s"]) for r in recs))
    if not offered:
        return ""
    return (f"Rounds: {len(recs)} timed, {wall / 3600:.2f} h of wall time with up to "
            f"{max(int(r['slots']) for r in recs)} runs at once; the runs kept {100 * busy / offered:.0f}% of the "
            f"run slots busy ({(offered - busy) / 3600:.2f} slot-hours idle, e.g. while a round waited for its "
            f"last runs).")

