"""The study scripts under scripts/ on real (tiny) runs: what they print and exit with."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from distgan.train import train

ROOT = Path(__file__).resolve().parents[1]
COMMON = ("train.steps=4", "train.ckpt_every=2", "train.ema=true", "log.every=2", "log.sample_every=100",
          "metrics.names=[classifier]", "metrics.num_fake=64", "metrics.num_real=200")


def _script(name: str, *args: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_same_runs_finds_identical_trainings_and_names_the_part_that_differs(debug_cfg, tmp_path):
    for sweep in ("a", "b"):  # the same two runs in two sweep directories: CPU training is deterministic
        for seed in (0, 1):
            train(debug_cfg(*COMMON, f"train.seed={seed}"), tmp_path / sweep / "runs" / f"seed={seed}")
    out = _script("same_runs.py", tmp_path / "a", tmp_path / "b")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("identical at step 4 (2 metric records)") == 2 and "2 of 2 runs identical" in out.stdout

    train(debug_cfg(*COMMON, "train.seed=2"), tmp_path / "c" / "runs" / "seed=0")  # same name, other training
    out = _script("same_runs.py", tmp_path / "a", tmp_path / "c")
    assert out.returncode == 1 and "| `seed=0` | G differs at step 4 |" in out.stdout, out.stdout
    assert "0 of 1 runs identical" in out.stdout
