"""A checkpoint whose pickle would run code is refused on every loading path, and nothing runs.

The hostile file is a real checkpoint with one extra entry whose unpickling calls
``exec`` (writing a marker file). It is put in place as step 30 and named by ``latest``.
Every path that loads checkpoints must refuse it, name it, and leave the marker absent:
resume (falls back to the previous checkpoint), ``distgan.sample``, ``distgan.export``,
the metrics of a trained run, and both ``load_generator`` functions.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from distgan.checkpoint import CheckpointError, load_file


class _Exec:
    """Unpickles into a call of exec(code): what a hostile checkpoint would carry."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture
def hostile_run(debug_run, tmp_path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(debug_run, run)
    marker = tmp_path / "executed"
    state = load_file(run / "checkpoints" / "step_00000020.pt")
    state["step"] = 30
    state["payload"] = _Exec(f"open({str(marker)!r}, 'w').write('code ran')")
    torch.save(state, run / "checkpoints" / "step_00000030.pt")
    torch.load(run / "checkpoints" / "step_00000030.pt", weights_only=False)  # proof: an unsafe load runs it
    assert marker.read_text() == "code ran"
    marker.unlink()
    (run / "checkpoints" / "latest").write_text("step_00000030.pt\n")
    return run, marker


def _refused(text: str) -> bool:
    return "step_00000030.pt" in text and "refused by the weights-only loader, nothing was executed" in text


@pytest.mark.timeout(300)
def test_resume_refuses_it_and_falls_back_to_the_previous_checkpoint(hostile_run, debug_cfg, caplog):
    from distgan.train import train

    run, marker = hostile_run
    out = train(debug_cfg("train.steps=22", "train.ckpt_every=100"), run)  # warnings reach caplog
    assert any(r.levelname == "WARNING" and _refused(r.getMessage()) for r in caplog.records)
    assert out["step"] == 22 and "resumed from step 20" in (run / "logs" / "rank0.log").read_text()
    assert not marker.exists()


def test_sample_and_export_commands_refuse_it_in_one_line(hostile_run, tmp_path, capsys):
    from distgan import export, sample

    run, marker = hostile_run
    assert sample.main(["--run", str(run), "--num", "4", "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert _refused(err) and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert export.main(["--run", str(run), "--format", "torchscript", "--out", str(tmp_path / "g.pt")]) == 2
    err = capsys.readouterr().err
    assert _refused(err) and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "s.npz").exists() and not (tmp_path / "g.pt").exists()


def test_metrics_and_load_generator_refuse_it(hostile_run, capsys):
    from distgan import api
    from distgan.metrics import __main__ as metrics_cli
    from distgan.metrics.run import evaluate_run, load_generator

    run, marker = hostile_run
    with pytest.raises(api.SampleError) as e:
        api.load_generator(run)
    assert _refused(str(e.value))
    with pytest.raises(CheckpointError) as e:
        load_generator(run)
    assert _refused(str(e.value))
    with pytest.raises(CheckpointError) as e:
        evaluate_run(run, ["classifier"], checkpoint=30)
    assert _refused(str(e.value))
    assert metrics_cli.main(["classifier", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert _refused(err) and "Traceback" not in err
    assert not marker.exists()
