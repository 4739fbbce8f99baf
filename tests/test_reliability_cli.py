"""User errors in every command-line tool: one ``error:`` line, a non-zero exit, no traceback."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent/distgan-test"

CASES = {  # the module holding main(): (argv, text the message must contain)
    "distgan.launch.__main__": (["--config", str(ROOT / "configs" / "debug.yaml"), "--cluster", "local",
                        "--run-dir", "{tmp}/run", f"data.shards={MISSING}"], "no manifest.json"),
    "distgan.shards.__main__": (["info", MISSING], MISSING),
    "distgan.sample": (["--run", MISSING, "--num", "4", "--out", "{tmp}/s.npz"], MISSING),
    "distgan.metrics.__main__": (["classifier", "--run", MISSING], MISSING),
    "distgan.export": (["--run", MISSING, "--format", "torchscript", "--out", "{tmp}/g.pt"], MISSING),
    "distgan.report": (["--run", MISSING], MISSING),
    "distgan.sweep.__main__": ([f"{MISSING}.yaml", "--dry-run"], MISSING),
}


@pytest.mark.parametrize("module", sorted(CASES))
def test_user_error_is_one_line_without_traceback(module, tmp_path, capsys):
    argv, needle = CASES[module]
    code = importlib.import_module(module).main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code not in (0, None), err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and needle in lines[-1], err
    assert "Traceback" not in err


@pytest.mark.timeout(300)
def test_two_rank_launch_with_missing_shards_shows_the_message_not_tracebacks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "distgan.launch", "--config", str(ROOT / "configs" / "debug.yaml"),
                           "--cluster", "local", "--procs-per-node", "2", "--run-dir", str(tmp_path / "run"),
                           f"data.shards={MISSING}", "log.progress=false"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "error: rank 0: no manifest.json in shard directory" in out and "Traceback" not in out, out
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("rank*.out"))
    assert "Traceback" not in logs and "error: rank 1: no manifest.json" in logs


def test_a_reader_that_goes_away_ends_the_command_quietly_with_the_sigpipe_status():
    """``distgan sweep FILE --dry-run | head -1``: the table meets a closed pipe; no traceback."""
    sweep = ROOT / "configs" / "sweeps" / "debug_grid.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "distgan.sweep", str(sweep), "--dry-run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the interpreter has started: every line it prints meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == "", err
