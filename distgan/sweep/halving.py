"""Successive halving: every cell gets a small step budget, and only the best 1/eta go on to a budget eta times larger.

    strategy:
      name: halving
      eta: 3                  # keep the best 1/eta of the cells at each rung (>= 2)
      min_steps: 500          # the first rung's budget
      max_steps: 4500         # the last rung's (default: the runs' train.steps); also the schedules' horizon
      metric: classifier_fd   # ranks the cells at each rung (default: the sweep's metric); a record the runs write
      seeds: together         # together: a cell is a grid point, ranked by its mean over seeds; apart: each run

Rungs are ``min_steps * eta**k`` below ``max_steps``, then ``max_steps``. A round
trains every surviving cell's runs to its rung's budget (``train.stop_at``, the
horizon ``train.steps = max_steps`` unchanged, so a promoted run continues from its
checkpoint exactly as a run that never paused), then ranks the cells by the metric
record each run wrote at that step. Rounds are rung-synchronous (one job array per
rung, waited for): simpler than asynchronous halving (Li et al., "A System for
Massively Parallel Hyperparameter Tuning", MLSys 2020), at the price of the idle
slots while a rung's last runs finish.

Written here rather than with Optuna's pruners: every decision is a function of the
sweep directory alone (each run's ``status.json`` and ``metrics.jsonl``, and the
retry counts in ``SWEEP_DIR/halving.json``, written atomically), so a controller
that dies is replaced by running the same command, with no database and no lock
on the shared file system; cells map to run directories by name, not by trial
numbers; and promotion is a resume from the run's own checkpoint.

A run that fails is trained again up to ``retries`` times (default 2), then its cell
is out, reported as failed. A run stopped by a health signal in ``train.stop_on``
(it diverged) ranks last. ``SWEEP_DIR/halving.json`` also records, per cell, the
rung it reached, its metric at each rung and why it stopped, and the steps trained
against those the full grid would have cost.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from distgan.fsutil import atomic_write_text
from distgan.log import get_logger
from distgan.rundir import METRICS, read_jsonl, read_status
from distgan.sweep.round import Round
from distgan.sweep.spec import Sweep, SweepError, SweepRun, run_config
from distgan.sweep.submit import plan

log = get_logger("sweep")
STATE = "halving.json"
SETTINGS = {"eta", "min_steps", "max_steps", "metric", "seeds", "retries"}


@dataclasses.dataclass
class Cell:
    key: str
    runs: list[SweepRun]


class Halving:
    """Rung-synchronous successive halving over the sweep's cells (see the module docstring)."""

    def __init__(self, settings: dict[str, Any], where: str):
        unknown = sorted(set(settings) - SETTINGS)
        if unknown:
            raise SweepError(f"{where}: unknown setting '{unknown[0]}' of halving; "
                             f"known: {', '.join(sorted(SETTINGS))}")
        self.where = where
        self.eta = settings.get("eta", 3)
        if not isinstance(self.eta, int) or self.eta < 2:
            raise SweepError(f"{where}: 'eta' must be an integer >= 2 (the fraction 1/eta goes on), got {self.eta!r}")
        self.min_steps = settings.get("min_steps")
        if not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise SweepError(f"{where}: 'min_steps' (the first rung's budget) must be an integer >= 1, "
                             f"got {self.min_steps!r}")
        self.max_steps = settings.get("max_steps")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < self.min_steps):
            raise SweepError(f"{where}: 'max_steps' must be an integer >= min_steps={self.min_steps}, "
                             f"got {self.max_steps!r}")
        self.metric = settings.get("metric")
        self.together = settings.get("seeds", "together")
        if self.together not in ("together", "apart"):
            raise SweepError(f"{where}: 'seeds' must be together (a cell's seeds ranked by their mean) or apart, "
                             f"got {self.together!r}")
        self.together = self.together == "together"
        self.retries = settings.get("retries", 2)
        if not isinstance(self.retries, int) or self.retries < 0:
            raise SweepError(f"{where}: 'retries' must be an integer >= 0, got {self.retries!r}")

    # ------------------------------------------------------------------ setup
    def bind(self, sweep: Sweep) -> None:
        """Fix what depends on the sweep: the horizon (its runs' train.steps unless set) and the rung metric,
        which every run must write (checked before anything is laid out or submitted)."""
        # the metric registry loads torch: only a halving sweep pays for it, once, in the controller
        from distgan.metrics import registry  # noqa: PLC0415

        configs = [run_config(sweep, r) for r in sweep.runs()]
        self.max_steps = self.max_steps or max(c.train.steps for c in configs)
        records = sorted(set.intersection(*(set(registry.records(list(c.metrics.names))) for c in configs)))
        if self.max_steps < self.min_steps:
            raise SweepError(f"{self.where}: min_steps={self.min_steps} is above the runs' train.steps="
                             f"{self.max_steps} (set max_steps, or lower min_steps)")
        self.metric = self.metric or sweep.metric
        if self.metric not in records:
            raise SweepError(f"{self.where}: the rung metric '{self.metric}' is not a record the runs write "
                             f"(metrics.names gives: {', '.join(records) or 'none'}); add its metric to "
                             "metrics.names in the overrides")
        self.lower = sweep.lower_is_better if self.metric == sweep.metric else registry.lower_is_better(self.metric)

    def budgets(self) -> list[int]:
        out, b = [], self.min_steps
        while b < self.max_steps:
            out.append(b)
            b *= self.eta
        return out + [self.max_steps]

    def cells(self, sweep: Sweep) -> list[Cell]:
        groups: dict[str, list[SweepRun]] = {}
        for r in sweep.runs():
            key = json.dumps(r.point, sort_keys=True) if self.together else r.name
            groups.setdefault(key, []).append(r)
        return [Cell(k, v) for k, v in groups.items()]

    # ------------------------------------------------------------------ state
    def _state(self, sweep: Sweep) -> dict[str, Any]:
        try:
            return json.loads((sweep.out / STATE).read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, sweep: Sweep, state: dict[str, Any]) -> None:
        sweep.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep.out / STATE, json.dumps(state, indent=1) + "\n")

    def _rung_value(self, sweep: Sweep, run: SweepRun, budget: int) -> float | None:
        """The run's rung metric at ``budget`` steps; inf when it diverged; None when it has not got there."""
        run_dir = sweep.out / "runs" / run.name
        st = read_status(run_dir)
        if st.get("state") == "stopped" and "train.stop_on" in str(st.get("reason", "")):
            return math.inf
        for rec in read_jsonl(run_dir / METRICS):
            if isinstance(rec, dict) and rec.get("name") == self.metric and int(rec.get("step", -1)) == budget:
                value = float(rec["value"])
                return value if self.lower else -value
        return None

    # ------------------------------------------------------------------ rounds
    def next_round(self, sweep: Sweep) -> Round | None:
        state = self._state(sweep)
        attempts: dict[str, int] = state.get("attempts", {})
        busy = {r.name for r, why in plan(sweep)[1] if why != "completed"}
        alive = self.cells(sweep)
        report: dict[str, dict[str, Any]] = {c.key: {"runs": [r.name for r in c.runs], "rungs": {}, "fate": ""}
                                             for c in alive}
        budgets = self.budgets()
        result: Round | None = None
        for k, budget in enumerate(budgets):
            todo, scores = [], {}
            for cell in alive:
                values = [self._rung_value(sweep, r, budget) for r in cell.runs]
                for r, v in zip(cell.runs, values):
                    if v is None and r.name not in busy:
                        failed = read_status(sweep.out / "runs" / r.name).get("state") == "failed"
                        if failed and attempts.get(r.name, 0) > self.retries:
                            report[cell.key]["fate"] = f"failed at rung {k + 1} ({self.retries} retries used)"
                        else:
                            todo.append(self._at_budget(r, budget))
                if None not in values:
                    scores[cell.key] = sum(values) / len(values)
                    shown = scores[cell.key] if self.lower else -scores[cell.key]
                    report[cell.key]["rungs"][str(budget)] = shown
            runnable = [c for c in alive if not report[c.key]["fate"].startswith("failed")]
            if todo:
                for r in todo:
                    attempts[r.name] = attempts.get(r.name, 0) + 1
                result = Round(todo, needs_results=True)
                break
            if any(c.key not in scores for c in runnable):  # queued or training elsewhere: nothing to do now
                log.info("rung %d waits for runs queued or training elsewhere: re-run this command once they "
                         "have ended", k + 1)
                break
            if k == len(budgets) - 1:
                for c in runnable:
                    report[c.key]["fate"] = "diverged" if scores[c.key] == math.inf else "completed"
                break
            ranked = sorted(runnable, key=lambda c: scores[c.key])
            keep = max(1, len(ranked) // self.eta)
            for c in ranked[keep:]:
                report[c.key]["fate"] = ("diverged" if scores[c.key] == math.inf else f"pruned at rung {k + 1}")
            alive = ranked[:keep]
        self._save(sweep, {"attempts": attempts, "budgets": budgets, "metric": self.metric, "cells": report,
                           "steps": self._steps(sweep, report, budgets)})
        return result

    def _at_budget(self, run: SweepRun, budget: int) -> SweepRun:
        settings = {**run.settings, "train.steps": self.max_steps,
                    "train.stop_at": 0 if budget >= self.max_steps else budget}
        return dataclasses.replace(run, settings=settings)

    def _steps(self, sweep: Sweep, report: dict[str, dict[str, Any]], budgets: list[int]) -> dict[str, int]:
        """Steps trained so far (each run's furthest step) against the full grid's (every run to max_steps)."""
        used = 0
        for cell in report.values():
            for name in cell["runs"]:
                used += int(read_status(sweep.out / "runs" / name).get("step") or 0)
        return {"used": used, "full_grid": self.max_steps * len(sweep.runs())}


def markdown(state: dict[str, Any]) -> list[str]:
    """The halving section of results.md: per cell its metric at each rung, how far it got and why it stopped."""
    budgets, steps = state.get("budgets", []), state.get("steps", {})
    used, full = steps.get("used", 0), steps.get("full_grid", 0)
    lines = ["## Successive halving", "",
             f"Rungs at {', '.join(map(str, budgets))} steps, ranked by {state.get('metric')}; steps trained: "
             f"{used:,} of the full grid's {full:,}" + (f" ({100 * used / full:.0f}%)." if full else "."), "",
             "| cell | " + " | ".join(f"step {b}" for b in budgets) + " | rungs reached | stopped |",
             "|---|" + "---|" * (len(budgets) + 2)]
    order = sorted(state.get("cells", {}).values(), key=lambda c: (-len(c["rungs"]), c["fate"]))
    for c in order:
        values = [f"{c['rungs'][str(b)]:.5g}" if str(b) in c["rungs"] else "" for b in budgets]
        lines.append(f"| `{', '.join(c['runs'])}` | " + " | ".join(values) + f" | {len(c['rungs'])} | {c['fate']} |")
    return lines


def plot(state: dict[str, Any], path: Any) -> None:
    """The metric of every cell against the steps it trained (``halving.png``): cells that trained
    to the last rung in colour, pruned, failed and diverged cells faded, so the picture shows where
    the compute went and whether an early rung already ordered the cells as the last one did."""
    from distgan.extras import pyplot  # noqa: PLC0415 - matplotlib: only when a plot is written

    plt = pyplot("the halving plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for key, cell in state.get("cells", {}).items():
        points = sorted((int(b), v) for b, v in cell["rungs"].items() if math.isfinite(v))
        if not points:
            continue
        xs, ys = zip(*points)
        done = cell["fate"] == "completed"
        ax.plot(xs, ys, "o-", alpha=1.0 if done else 0.25, color=None if done else "grey",
                label=_cell_label(key, cell) if done else None)
    ax.set_xscale("log")
    ax.set_xlabel("steps trained (log scale)")
    ax.set_ylabel(str(state.get("metric")))
    budgets = state.get("budgets", [])
    if budgets:  # a rung within 1.5x of the next one is left unlabelled: on a log axis the labels would collide
        ax.set_xticks(budgets, [str(b) if i == len(budgets) - 1 or budgets[i + 1] >= 1.5 * b else ""
                                for i, b in enumerate(budgets)])
        ax.minorticks_off()  # the rungs are the only steps worth a label
    ax.set_title("successive halving: completed cells in colour, pruned ones faded")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell_label(key: str, cell: dict[str, Any]) -> str:
    """A cell's grid point (``batch_size=128, lr_d/lr_g=0.0005/0.001``), or its run for ``seeds: apart``."""
    try:
        point = json.loads(key)
    except ValueError:
        return ", ".join(cell["runs"])[:60]

    def short(axis: str) -> str:  # train.lr_d/train.lr_g -> lr_d/lr_g
        return "/".join(part.rsplit(".", 1)[-1] for part in axis.split("/"))

    return ", ".join(f"{short(k)}={v}" for k, v in point.items())[:60]
