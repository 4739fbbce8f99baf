"""distgan.rundir: the run directory's checkpoint resolving, JSON-lines records and status file."""
from __future__ import annotations

import json

import pytest

from distgan import rundir
from distgan.config import Config, ConfigError, save_config


def _touch_steps(run, *steps):
    rundir.ckpt_dir(run).mkdir(parents=True, exist_ok=True)
    for s in steps:
        rundir.ckpt_path(run, s).write_bytes(b"x")


def test_resolve_checkpoint_by_pointer_step_and_fallback(tmp_path):
    _touch_steps(tmp_path, 10, 20)
    assert rundir.resolve_checkpoint(tmp_path).name == "step_00000020.pt"  # no pointer: the highest step
    (rundir.ckpt_dir(tmp_path) / "latest").write_text("step_00000010.pt\n")
    assert rundir.resolve_checkpoint(tmp_path, "latest").name == "step_00000010.pt"  # the pointer wins
    rundir.mark_best(tmp_path, 20)
    assert rundir.resolve_checkpoint(tmp_path, "best").name == "step_00000020.pt"
    assert rundir.resolve_checkpoint(tmp_path, 10).name == "step_00000010.pt"
    assert rundir.available_checkpoints(tmp_path) == ["latest", "best", "10", "20"]
    (rundir.ckpt_dir(tmp_path) / "latest").write_text("step_00000030.pt\n")  # names a file that is gone
    assert rundir.resolve_checkpoint(tmp_path, "latest").name == "step_00000020.pt"


def test_resolve_checkpoint_errors_list_what_exists(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'latest' not found .*available: none"):
        rundir.resolve_checkpoint(tmp_path)
    _touch_steps(tmp_path, 10)
    with pytest.raises(rundir.CheckpointNotFound, match=r"checkpoint '7' not found .*available: latest, 10$"):
        rundir.resolve_checkpoint(tmp_path, 7)
    with pytest.raises(rundir.CheckpointNotFound, match="checkpoint 'best' not found"):
        rundir.resolve_checkpoint(tmp_path, "best")
    with pytest.raises(rundir.CheckpointNotFound, match="expected latest, best or a step number"):
        rundir.resolve_checkpoint(tmp_path, "newest")


def test_jsonl_append_and_read_skip_a_torn_last_line(tmp_path):
    path = tmp_path / rundir.METRICS
    assert rundir.read_jsonl(path) == []
    rundir.append_jsonl(path, [{"step": 1, "value": 2.0}, {"step": 2, "value": 1.5}])
    with open(path, "a") as f:
        f.write('{"step": 3, "val')  # a crash mid-write
    assert rundir.read_jsonl(path) == [{"step": 1, "value": 2.0}, {"step": 2, "value": 1.5}]


def test_status_round_trip_keeps_fields_but_not_the_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert rundir.read_status(tmp_path / "run") == {}
    rundir.write_status(tmp_path / "run", "failed", step=3, error="boom")
    st = rundir.read_status(tmp_path / "run")
    assert (st["state"], st["step"], st["error"], st["job_id"]) == ("failed", 3, "boom", "4242")
    rundir.write_status(tmp_path / "run", "running")
    st = json.loads((tmp_path / "run" / rundir.STATUS).read_text())
    assert st["state"] == "running" and st["step"] == 3 and "error" not in st
    (tmp_path / "run" / rundir.STATUS).write_text("{")
    assert rundir.read_status(tmp_path / "run") == {}


def test_read_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        rundir.read_config(tmp_path)
    assert not rundir.is_run_dir(tmp_path)
    cfg = Config()
    cfg.train.steps = 7
    save_config(cfg, rundir.config_path(tmp_path))
    assert rundir.is_run_dir(tmp_path) and rundir.read_config(tmp_path) == cfg
    rundir.config_path(tmp_path).write_text("model:\n  no_such_key: 1\n")
    with pytest.raises(ConfigError, match="model.no_such_key"):
        rundir.read_config(tmp_path)
