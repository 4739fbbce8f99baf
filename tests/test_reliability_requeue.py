"""The requeue limit of a Slurm training job (profile key ``max_requeues``).

TrainTask's own requeue path (time-limit warning -> checkpoint -> ``scontrol requeue``)
and Slurm's requeues (preemption) are both counted by SLURM_RESTART_COUNT; these tests
drive TrainTask as a Slurm task would see it (the job environment, the trainer's
summary and ``scontrol`` replaced by recorders) and check the decision, status.json
and the log line.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distgan.launch import slurm
from distgan.launch.requeue import RequeueLimitError


class _Env:
    job_id, global_rank = "4242", 0

    class paths:
        stdout = "/dev/null"


@pytest.fixture
def task_env(monkeypatch, tmp_path):
    """TrainTask with a stopped-after-checkpoint trainer; returns (task, requeue calls, run calls)."""
    requeued, ran = [], []
    task = slurm.TrainTask(str(tmp_path), max_requeues=2)

    def fake_run_rank(run_dir, log=""):
        ran.append(run_dir)
        task._requeue_wanted = True  # the time-limit warning arrived while training
        return {"completed": False, "step": 7}
    monkeypatch.setattr(slurm, "run_rank", fake_run_rank)
    monkeypatch.setattr(slurm, "requeue", lambda job: requeued.append(job))
    monkeypatch.setattr(slurm, "_wait_for_requeue_kill", lambda: None)
    monkeypatch.setattr(slurm.submitit, "JobEnvironment", _Env)
    return task, requeued, ran


def _status(run: str) -> dict:
    return json.loads((Path(run) / "status.json").read_text())


def test_time_limit_requeues_while_under_the_limit_and_counts(task_env, monkeypatch, capsys):
    task, requeued, ran = task_env
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(SystemExit):
        task()
    assert requeued == ["4242"] and len(ran) == 1
    st = _status(task.run_dir)
    assert st["requeues"] == 2 and st["max_requeues"] == 2
    assert "requeue 2 of at most 2" in capsys.readouterr().out


def test_time_limit_at_the_limit_stops_without_requeue(task_env, monkeypatch, capsys):
    task, requeued, ran = task_env
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    out = task()  # returns: the job ends instead of coming back
    assert out == {"completed": False, "step": 7} and requeued == []
    st = _status(task.run_dir)
    assert st["state"] == "stopped" and st["requeues"] == 2 and st["step"] == 7
    assert "requeue limit reached: 2 of max_requeues=2" in st["error"]
    assert "requeue limit reached" in capsys.readouterr().out


def test_attempt_beyond_the_limit_does_not_train(task_env, monkeypatch):
    task, requeued, ran = task_env
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # e.g. Slurm requeued a preempted job once more
    with pytest.raises(RequeueLimitError, match="requeued 3 times, more than max_requeues=2"):
        task()
    assert ran == [] and requeued == []
    st = _status(task.run_dir)
    assert st["state"] == "failed" and st["requeues"] == 3


def test_submitted_tasks_carry_the_profile_limit_and_sbatch_scripts_enforce_it(tmp_path, monkeypatch):
    from distgan.launch.profiles import SlurmResources
    from distgan.launch.sbatch import sbatch_script

    submitted = []

    class Executor:
        def submit(self, task):
            submitted.append(task)
            return "job"
    monkeypatch.setattr(slurm, "make_executor", lambda *a, **k: Executor())
    slurm.submit_run(tmp_path, SlurmResources(max_requeues=5), "job")
    assert submitted[0].max_requeues == 5
    text = sbatch_script(tmp_path, SlurmResources(max_requeues=4), "job")
    assert '[ "${SLURM_RESTART_COUNT:-0}" -ge 4 ]' in text and "requeue limit reached" in text
