"""How a sweep spends its compute: which runs to train next, given what has finished.

    strategy = make_strategy(sweep)              # the sweep file's ``strategy:`` (default: grid)
    round = strategy.next_round(sweep)           # a Round: runs to train now, runs skipped and why
    ...                                          # the controller lays them out, trains or submits them
    round = strategy.next_round(sweep)           # None: the sweep has nothing more to train

A strategy is one entry of :data:`STRATEGIES`: a class built from the settings
of the sweep file's ``strategy:`` mapping (checked right after the sweep file is
loaded, before anything is laid out or submitted; an optional ``bind(sweep)``
checks what depends on the sweep's runs) with one method, ``next_round``. The
controller (:mod:`distgan.sweep.__main__`) asks it for rounds until it returns
None, trains each round locally or as one Slurm job array, and waits for a
round's results only when the strategy needs them to choose the next one.
Everything a strategy decides from is in the sweep directory (each run's
``status.json`` and ``metrics.jsonl``), so a controller that dies is replaced by
running the same command again.
"""
from __future__ import annotations

from typing import Any, Protocol

from distgan.sweep.halving import Halving
from distgan.sweep.round import Round
from distgan.sweep.spec import Sweep, SweepError
from distgan.sweep.submit import plan


class Strategy(Protocol):
    def next_round(self, sweep: Sweep) -> Round | None: ...


class Grid:
    """Every run of the grid to its full ``train.steps``, in one round: one job array, no waiting.

    Runs that completed, or are queued or training now, are skipped, so submitting
    again fills in what failed or was never started.
    """

    def __init__(self, settings: dict[str, Any], where: str):
        if settings:
            raise SweepError(f"{where}: strategy 'grid' takes no settings, got {', '.join(sorted(settings))}")
        self._planned = False

    def next_round(self, sweep: Sweep) -> Round | None:
        if self._planned:
            return None
        self._planned = True
        todo, skipped = plan(sweep)
        return Round(todo, skipped)


STRATEGIES: dict[str, type] = {"grid": Grid, "halving": Halving}


def make_strategy(sweep: Sweep) -> Strategy:
    """The sweep's strategy, built from its file's ``strategy:`` (a name, or a mapping with ``name:``)."""
    spec = sweep.strategy
    settings = dict(spec) if isinstance(spec, dict) else {"name": spec or "grid"}
    name = settings.pop("name", "grid")
    where = f"sweep {sweep.path}: strategy"
    if name not in STRATEGIES:
        raise SweepError(f"{where}: unknown strategy '{name}'; available: {', '.join(sorted(STRATEGIES))}")
    strategy = STRATEGIES[name](settings, where)
    if hasattr(strategy, "bind"):  # settings that depend on the sweep's runs (checked now, before any layout)
        strategy.bind(sweep)
    return strategy
