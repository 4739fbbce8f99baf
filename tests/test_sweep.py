"""Sweep files, the run table, re-submission planning and collect (hand-written run dirs, no training)."""
import csv
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from distgan.rundir import write_status
from distgan.sweep import SweepError, collect, load_sweep
from distgan.sweep.__main__ import main
from distgan.sweep.submit import layout, plan

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _sweep_file(tmp_path, **over):
    data = {"name": "t", "base": str(ROOT / "configs/debug.yaml"),
            "overrides": {"train.steps": 5},
            "grid": {"model.width": [8, 16]},
            "zip": [{"train.lr_d": [1e-4, 2e-4, 4e-4], "train.lr_g": [1e-4, 4e-4, 8e-4]}],
            "seeds": [0, 1], "metric": "classifier_fd", "lower_is_better": True,
            "out": str(tmp_path / "sweep")}
    data.update(over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_grid_zip_and_seeds_expand_to_every_run(tmp_path):
    sw = load_sweep(_sweep_file(tmp_path))
    runs = sw.runs()
    assert len(runs) == 2 * 3 * 2
    assert [a.name for a in sw.axes] == ["model.width", "train.lr_d/train.lr_g"]
    pairs = {(r.settings["train.lr_d"], r.settings["train.lr_g"]) for r in runs}
    assert pairs == {(1e-4, 1e-4), (2e-4, 4e-4), (4e-4, 8e-4)}  # zipped, not crossed
    assert {r.settings["train.seed"] for r in runs} == {0, 1}
    assert len({r.name for r in runs}) == len(runs)
    assert all(r.settings["train.steps"] == 5 for r in runs)


def test_every_shipped_sweep_file_expands():
    counts = {p.stem: len(load_sweep(p).runs()) for p in sorted((ROOT / "configs/sweeps").glob("*.yaml"))}
    assert counts["debug_grid"] == 4
    assert counts["dogs_lr_batch"] == 2 * 4 * 3 and counts["dogs_latent_width"] == 2 * 2 * 3
    assert counts["dogs_cosine"] == 4 * 3 and counts["dogs_methods"] == 5 * 3
    assert counts["fashion_lr_batch"] == counts["fashion_lr_batch_halving"] == 3 * 4 * 2
    assert counts["fashion_fid_search"] == counts["fashion_fid_csearch"] == 10
    bases = {Path(r.base).name for r in load_sweep(ROOT / "configs/sweeps/dogs_methods.yaml").runs()}
    assert bases == {"dogs_dcgan.yaml", "dogs_feature_matching.yaml", "dogs_cgan.yaml",
                     "dogs_projection.yaml", "dogs_acgan.yaml"}


def test_invalid_sweep_keys_are_errors_naming_the_key(tmp_path, capsys):
    bad = _sweep_file(tmp_path, grid={"train.lr_dd": [1e-4]})
    with pytest.raises(SweepError, match="unknown config key 'train.lr_dd'"):
        load_sweep(bad)
    assert main([str(bad), "--dry-run", "--cluster", "local"]) == 2
    assert "train.lr_dd" in capsys.readouterr().err
    with pytest.raises(SweepError, match="unknown key 'gird'"):
        load_sweep(_sweep_file(tmp_path, gird={}))
    with pytest.raises(SweepError, match="common length"):
        load_sweep(_sweep_file(tmp_path, zip=[{"train.lr_d": [1e-4, 2e-4], "train.lr_g": [1e-4]}]))
    with pytest.raises(SweepError, match="'model.width'.*expected a value >= 1"):
        load_sweep(_sweep_file(tmp_path, grid={"model.width": [0]}))


def test_dry_run_prints_the_table_and_submits_nothing(tmp_path, capsys):
    path = _sweep_file(tmp_path)
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 runs (12 to run, 0 skipped)" in out
    assert "model.width" in out and "train.lr_d/train.lr_g" in out and "0.0002/0.0004" in out
    assert not (tmp_path / "sweep").exists()


def _fake_run(sw, run, value=None, state="completed", error=""):
    d = sw.out / "runs" / run.name
    d.mkdir(parents=True, exist_ok=True)
    write_status(d, state, error=error, log=str(d / "logs" / "rank0.out"), train_seconds=900.0,
                 rank_seconds=1800.0)
    if value is not None:
        prov = {"metric": "classifier_fd", "feature_extractor": "cnn", "weights_sha256": "ab" * 32,
                "num_real": 500, "num_fake": 200, "resize": "none"}
        recs = [{"step": 3, "name": "classifier_fd", "value": value + 100.0, "lower_is_better": True,
                 "ema": False, "provenance": prov, "time": 1.0},
                {"step": 5, "name": "classifier_acc", "value": 0.5, "lower_is_better": False,
                 "ema": False, "provenance": prov, "time": 2.0},
                {"step": 5, "name": "classifier_fd", "value": value, "lower_is_better": True,
                 "ema": False, "provenance": prov, "time": 2.0}]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"torn')


def test_collect_tables_plot_failures_and_resubmission(tmp_path):
    sw = load_sweep(_sweep_file(tmp_path, zip=[]))  # width x 2 seeds = 4 runs, one axis
    runs = sw.runs()
    layout(sw, runs)
    by = {(r.point["model.width"], r.seed): r for r in runs}
    _fake_run(sw, by[("8", 0)], 10.0)
    _fake_run(sw, by[("8", 1)], 14.0)
    _fake_run(sw, by[("16", 0)], 5.0)
    _fake_run(sw, by[("16", 1)], state="failed", error="rank 0: RuntimeError: boom")
    summary = collect(sw.out)
    assert summary["states"] == {"ok": 3, "failed": 1}
    md = (sw.out / "results.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows[0].startswith("| 1 | `16` | 5 | n/a | 1/2")   # best first (lower is better)
    assert rows[1].startswith("| 2 | `8` | 12 | 2.828 | 2/2")  # mean and sample std over seeds
    assert "RuntimeError: boom" in md and by[("16", 1)].name in md and "rank0.out" in md
    # 4 runs x 900 s (2 ranks each): the failed attempt's time counts as compute too
    assert "Compute: 1.00 h of training wall time over the runs' attempts, 2.00 rank-hours (2.00 core-hours at " \
           "1 core(s) per rank)." in md
    table = list(csv.DictReader((sw.out / "results.csv").open()))
    assert len(table) == 4
    ok = next(r for r in table if r["run"] == by[("8", 0)].name)
    assert float(ok["value"]) == 10.0 and ok["step"] == "5"  # the last evaluation, not the first
    assert ok["provenance.feature_extractor"] == "cnn" and ok["provenance.num_fake"] == "200"
    assert (sw.out / "results.png").read_bytes()[:8] == PNG
    # re-submitting: completed runs are skipped, the failed one runs again
    todo, skipped = plan(sw)
    assert [r.name for r in todo] == [by[("16", 1)].name]
    assert all(why == "completed" for _, why in skipped) and len(skipped) == 3


def test_collect_tells_a_live_training_from_one_that_died_without_a_word(tmp_path):
    """status.json says running for both; the run's lock says which one a process still trains."""
    from distgan import runlock

    sw = load_sweep(_sweep_file(tmp_path, zip=[]))
    runs = sw.runs()
    layout(sw, runs)
    for r in runs[:2]:
        _fake_run(sw, r, state="running")
        write_status(sw.out / "runs" / r.name, "running", step=40)
    with runlock.hold(sw.out / "runs" / runs[0].name):  # this process trains the first one now
        summary = collect(sw.out)
    assert summary["states"] == {"pending": 1, "interrupted": 1, "not run": 2}
    md = (sw.out / "results.md").read_text()
    assert f"training now: pid {os.getpid()}" in md
    assert "interrupted after step 40: no process holds the run" in md and "submit the sweep again" in md


def test_collect_lays_the_grid_out_as_the_studys_tables(tmp_path):
    """Several tables in one sweep, rows picked from a zipped axis x a grid axis, published values beside."""
    tables = [{"title": "Learning rates", "reference": "published",
               "rows": [{"label": "slow", "point": {"model.width": "8", "train.lr_d/train.lr_g": "0.0001/0.0001"},
                         "reference": 60.2},
                        {"label": "fast", "point": {"model.width": "8", "train.lr_d/train.lr_g": "0.0004/0.0008"},
                         "reference": 56.5}]},
              {"title": "Width", "rows": [{"label": "n=16", "point": {"model.width": "16",
                                                                       "train.lr_d/train.lr_g": "0.0001/0.0001"}}]}]
    sw = load_sweep(_sweep_file(tmp_path, tables=tables))
    layout(sw, sw.runs())
    by = {(r.point["model.width"], r.point["train.lr_d/train.lr_g"], r.seed): r for r in sw.runs()}
    _fake_run(sw, by[("8", "0.0001/0.0001", 0)], 10.0)
    _fake_run(sw, by[("8", "0.0001/0.0001", 1)], 14.0)
    _fake_run(sw, by[("8", "0.0004/0.0008", 0)], 7.5)
    _fake_run(sw, by[("8", "0.0004/0.0008", 1)], state="failed", error="boom")
    collect(sw.out)
    md = (sw.out / "results.md").read_text()
    assert "### Learning rates\n\n|  | published | classifier_fd (mean ± std) | seeds finished |" in md
    assert "| slow | 60.2 | 12.0 ± 2.8 | 2/2 |" in md and "| fast | 56.5 | 7.5 | 1/2 |" in md
    assert "### Width" in md and "| n=16 | n/a | 0/2 |" in md


@pytest.mark.parametrize("tables,match", [
    ([{"title": "x", "rows": [{"point": "8"}]}], "is one label, but the sweep has 2 axes"),
    ([{"title": "x", "rows": [{"point": {"model.width": "32", "train.lr_d/train.lr_g": "0.0001/0.0001"}}]}],
     r"axis 'model.width' has no label '32'; its labels: 8, 16"),
    ([{"title": "x", "rows": [{"point": {"model.width": "8"}}]}], "must give a label for each axis"),
    ([{"title": "x", "rows": []}], "needs 'title' and a non-empty list 'rows'"),
])
def test_a_table_row_naming_no_grid_point_is_refused_when_the_file_loads(tmp_path, tables, match):
    with pytest.raises(SweepError, match=match):
        load_sweep(_sweep_file(tmp_path, tables=tables))


def test_heatmap_for_two_axes_and_missing_runs(tmp_path, capsys):
    sw = load_sweep(_sweep_file(tmp_path, zip=[], grid={"model.width": [8, 16], "model.z_dim": [4, 8]},
                                seeds=[0]))
    layout(sw, sw.runs())
    for i, r in enumerate(sw.runs()[:3]):
        _fake_run(sw, r, float(i))
    assert main(["collect", str(sw.out)]) == 0
    assert (sw.out / "results.png").read_bytes()[:8] == PNG
    md = (sw.out / "results.md").read_text()
    assert "not run" in md and sw.runs()[3].name in md
    assert main(["collect", str(tmp_path / "nothing")]) == 2


@pytest.mark.multiproc
@pytest.mark.timeout(300)
def test_local_sweep_runs_the_pool_and_collects(mnist_shards, tmp_path, capsys):
    path = _sweep_file(tmp_path, grid={}, zip=[], seeds=[0],
                       overrides={"train.steps": 4, "log.progress": False, "data.shards": str(mnist_shards),
                                  "metrics.names": ["classifier"], "metrics.num_fake": 200},
                       variants={"good": {}, "broken": {"data.shards": str(tmp_path / "missing")}})
    assert main([str(path), "--cluster", "local", "--max-parallel", "2"]) == 1  # one run failed
    out = capsys.readouterr().out
    assert "2 runs here, 2 at a time" in out and "1 failed, 1 ok" in out
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "sweep" / "results.csv").open())}
    good = next(r for k, r in rows.items() if "good" in k)
    bad = next(r for k, r in rows.items() if "broken" in k)
    assert good["state"] == "ok" and float(good["value"]) > 0 and good["step"] == "4"
    assert bad["state"] == "failed" and "missing" in bad["error"] and Path(bad["log"]).is_file()
    # the round was timed: its wall time against the time its runs trained, over 2 slots
    (timed,) = [json.loads(line) for line in (tmp_path / "sweep" / "rounds.jsonl").read_text().splitlines()]
    assert timed["runs"] == 2 and timed["slots"] == 2 and 0 < timed["busy_s"] <= 2 * timed["wall_s"] + 1, timed
    md = (tmp_path / "sweep" / "results.md").read_text()
    assert re.search(r"Rounds: 1 timed, [\d.]+ h of wall time with up to 2 runs at once; the runs kept \d+% of the "
                     r"run slots busy", md), md


def test_the_strategy_is_a_registry_entry_checked_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from distgan.sweep import strategies
    from distgan.sweep.round import Round

    for bad, needle in (("halvng", "unknown strategy 'halvng'; available: grid, halving"),
                        ({"name": "grid", "eta": 3}, "strategy 'grid' takes no settings, got eta")):
        path = _sweep_file(tmp_path, strategy=bad)
        assert main([str(path), "--cluster", "local"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: sweep ") and needle in err[0], err
        assert not (tmp_path / "sweep").exists()

    class OneAtATime:
        """A strategy of the test's own: one run per round, each round after the previous one's results."""

        def __init__(self, settings, where):
            self.rounds = []

        def next_round(self, sweep):
            left = [r for r in plan(sweep)[0] if r.name not in self.rounds]
            if not left:
                return None
            self.rounds.append(left[0].name)
            return Round([left[0]], needs_results=True)

    trained: list[list[str]] = []
    monkeypatch.setitem(strategies.STRATEGIES, "one_at_a_time", OneAtATime)
    monkeypatch.setattr("distgan.sweep.__main__.run_local",
                        lambda sweep, runs, k, procs: [trained.append([r.name for r in runs]),
                                                       [write_status(sweep.out / "runs" / r.name, "completed")
                                                        for r in runs]])
    monkeypatch.setattr("distgan.sweep.__main__.collect",
                        lambda out: {"states": {"ok": 4}, "runs": 4, "md": "", "csv": "", "plot": None})
    path = _sweep_file(tmp_path, strategy="one_at_a_time", grid={"model.width": [8, 16]}, zip=[])
    assert main([str(path), "--cluster", "local"]) == 0
    assert [len(t) for t in trained] == [1, 1, 1, 1] and len({t[0] for t in trained}) == 4


def test_a_sweep_uses_the_sites_default_profile(tmp_path, capsys, monkeypatch):
    site = tmp_path / "site.yaml"
    site.write_text("max_requeues: 5\n")
    monkeypatch.setenv("DISTGAN_SLURM_PROFILE", str(tmp_path / "missing.yaml"))
    assert main([str(_sweep_file(tmp_path)), "--dry-run"]) == 2
    assert "missing.yaml" in capsys.readouterr().err  # the default profile was read
    monkeypatch.setenv("DISTGAN_SLURM_PROFILE", str(site))
    assert main([str(_sweep_file(tmp_path)), "--dry-run"]) == 0
