"""Successive halving through the real sweep controller, with training replaced by a stand-in the test controls.

The stand-in writes what a run writes at its budget (``status.json`` paused or
completed at ``train.stop_at``, a ``classifier_fd`` record at that step), with a
value the test chooses per cell, so which cells go on is known in advance.
That a promoted run continues bitwise is tested in ``test_budget.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distgan.rundir import append_jsonl, write_status
from distgan.sweep.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
LRS = [1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4, 8e-4, 9e-4]  # 9 cells; the metric grows with lr_d


def _sweep(tmp_path: Path, **strategy) -> Path:
    data = {"name": "h", "base": str(ROOT / "configs/debug.yaml"), "out": str(tmp_path / "sweep"),
            "overrides": {"train.steps": 18, "metrics.names": ["classifier"]},
            "grid": {"train.lr_d": LRS}, "seeds": [0], "metric": "classifier_fd",
            "strategy": {"name": "halving", "eta": 3, "min_steps": 2, **strategy}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Trainer:
    """Stands in for run_local: records each round; ``fail`` names runs whose first attempts fail."""

    def __init__(self, fail: dict[str, int] | None = None, diverge: set[float] | None = None):
        self.rounds: list[list[tuple[float, int]]] = []
        self.fail, self.diverge = dict(fail or {}), diverge or set()

    def __call__(self, sweep, runs, k, procs) -> None:
        done = []
        for r in runs:
            run_dir = sweep.out / "runs" / r.name
            lr, horizon = r.settings["train.lr_d"], r.settings["train.steps"]
            budget = r.settings["train.stop_at"] or horizon
            done.append((lr, budget))
            if self.fail.get(r.name, 0) > 0:
                self.fail[r.name] -= 1
                write_status(run_dir, "failed", error="a node died")
            elif lr in self.diverge:
                write_status(run_dir, "stopped", step=budget // 2, reason="health signal in train.stop_on: d_win")
            else:
                write_status(run_dir, "completed" if budget == horizon else "paused", step=budget, total_steps=horizon)
                append_jsonl(run_dir / "metrics.jsonl", [{"name": "classifier_fd", "value": lr * 1e4 + 100 / budget,
                                                         "step": budget}])
        self.rounds.append(sorted(done))


@pytest.fixture
def controller(monkeypatch):
    def start(trainer: Trainer) -> None:
        monkeypatch.setattr("distgan.sweep.__main__.run_local", trainer)
        monkeypatch.setattr("distgan.sweep.__main__.collect",
                            lambda out: {"states": {"ok": 1}, "runs": 9, "md": "", "csv": "", "plot": None})
    return start


def _state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "sweep" / "halving.json").read_text())


def test_halving_keeps_the_best_third_at_each_rung_and_counts_its_compute(tmp_path, controller):
    trainer = Trainer()
    controller(trainer)
    assert main([str(_sweep(tmp_path)), "--cluster", "local"]) == 0
    assert trainer.rounds == [[(lr, 2) for lr in LRS], [(lr, 6) for lr in LRS[:3]], [(1e-4, 18)]]
    state = _state(tmp_path)
    assert state["budgets"] == [2, 6, 18] and state["metric"] == "classifier_fd"
    fates = sorted(c["fate"] for c in state["cells"].values())
    assert fates == ["completed"] + ["pruned at rung 1"] * 6 + ["pruned at rung 2"] * 2
    best = next(c for c in state["cells"].values() if c["fate"] == "completed")
    assert list(best["rungs"]) == ["2", "6", "18"] and best["rungs"]["18"] == pytest.approx(1 + 100 / 18)
    # a promoted run resumes: its steps are those of its last rung (6 x 2 + 2 x 6 + 18: 26% of the full grid)
    assert state["steps"] == {"used": 6 * 2 + 2 * 6 + 18, "full_grid": 9 * 18}
    # each rung is a round the controller waited for, timed for the idle time it costs
    timed = [json.loads(line) for line in (tmp_path / "sweep" / "rounds.jsonl").read_text().splitlines()]
    assert [(t["runs"], t["slots"]) for t in timed] == [(9, 1), (3, 1), (1, 1)]


def test_a_killed_controller_continues_without_training_a_run_twice(tmp_path, controller):
    class Dies(Trainer):
        def __call__(self, sweep, runs, k, procs) -> None:
            super().__call__(sweep, runs, k, procs)
            if len(self.rounds) == 2:
                raise KeyboardInterrupt  # the controller dies after the second rung's runs finished

    first = Dies()
    controller(first)
    with pytest.raises(KeyboardInterrupt):
        main([str(_sweep(tmp_path)), "--cluster", "local"])
    again = Trainer()
    controller(again)
    assert main([str(_sweep(tmp_path)), "--cluster", "local"]) == 0
    assert again.rounds == [[(1e-4, 18)]]  # rungs 1 and 2 were read back from the runs, not trained again


def test_a_failed_run_is_retried_then_reported(tmp_path, controller):
    trainer = Trainer(fail={"000_lr_d=0.0001_seed=0": 1, "001_lr_d=0.0002_seed=0": 9})
    controller(trainer)
    assert main([str(_sweep(tmp_path, retries=2)), "--cluster", "local"]) == 0
    tried = [lr for rnd in trainer.rounds for lr, budget in rnd if budget == 2]
    assert tried.count(1e-4) == 2 and tried.count(2e-4) == 3  # once more; twice more, then given up
    fates = {c["runs"][0]: c["fate"] for c in _state(tmp_path)["cells"].values()}
    assert fates["000_lr_d=0.0001_seed=0"] == "completed"
    assert fates["001_lr_d=0.0002_seed=0"] == "failed at rung 1 (2 retries used)"


def test_a_diverged_cell_ranks_last(tmp_path, controller):
    trainer = Trainer(diverge={1e-4})  # the cell that would have won stops on a health signal
    controller(trainer)
    assert main([str(_sweep(tmp_path, eta=3)), "--cluster", "local"]) == 0
    assert trainer.rounds[1] == [(lr, 6) for lr in LRS[1:4]]
    fates = {c["runs"][0]: c["fate"] for c in _state(tmp_path)["cells"].values()}
    assert fates["000_lr_d=0.0001_seed=0"] == "diverged"


@pytest.mark.parametrize("settings,needle", [
    ({"eta": 1}, "'eta' must be an integer >= 2"),
    ({"min_steps": 30}, "min_steps=30 is above the runs' train.steps=18"),
    ({"max_steps": 1}, "'max_steps' must be an integer >= min_steps=2"),
    ({"metric": "fid"}, "the rung metric 'fid' is not a record the runs write"),
    ({"seeds": "mixed"}, "'seeds' must be together"),
    ({"patience": 3}, "unknown setting 'patience' of halving"),
])
def test_bad_halving_settings_are_refused_before_anything_is_written(tmp_path, capsys, settings, needle):
    assert main([str(_sweep(tmp_path, **settings)), "--cluster", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: sweep ") and needle in err[0], err
    assert not (tmp_path / "sweep").exists()


def test_results_show_each_cells_rungs_and_fate_and_pruned_runs_do_not_fail_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr("distgan.sweep.__main__.run_local", Trainer())
    assert main([str(_sweep(tmp_path)), "--cluster", "local"]) == 0  # paused (pruned) runs are no failure
    md = (tmp_path / "sweep" / "results.md").read_text()
    section = md[md.index("## Successive halving"):]
    assert "Rungs at 2, 6, 18 steps, ranked by classifier_fd; steps trained: 42 of the full grid's 162 (26%)" \
        in section
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == 9 and rows[0].endswith("| 3 | completed |") and "| 1 | pruned at rung 1 |" in rows[-1]
    assert "paused at step 2 of 18 (its budget); classifier_fd" in md  # the pruned runs, listed with their value
    assert "![classifier_fd against steps per cell](halving.png)" in md
    assert (tmp_path / "sweep" / "halving.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
