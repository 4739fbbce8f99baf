"""One round of a sweep: what a strategy hands the controller (:mod:`distgan.sweep.strategies`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from distgan.sweep.spec import SweepRun


@dataclass
class Round:
    """Runs to train now; the runs left out and why; whether the next round depends on these results."""

    runs: list[SweepRun]
    skipped: list[tuple[SweepRun, str]] = field(default_factory=list)
    needs_results: bool = False
