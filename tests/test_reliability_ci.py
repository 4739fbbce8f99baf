"""Under CI=true a skipped test fails the run with its reason (the hooks in tests/conftest.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SKIPPING = '''
import pytest

def test_passes():
    assert True

def test_skips_at_run_time():
    pytest.skip("sbatch not on PATH")

@pytest.mark.skipif(True, reason="chromium missing")
def test_skipped_by_mark():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''
MODULE_SKIP = '''
import pytest
pytest.importorskip("a_module_that_is_not_installed")

def test_never_runs():
    pass
'''


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_skips_fail_under_ci_with_their_reasons_and_pass_locally(tmp_path):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)

    local = _pytest(tmp_path, None)
    assert local.returncode == 0, local.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in local.stdout

    ci = _pytest(tmp_path, "true")
    out = ci.stdout
    assert ci.returncode == 1, out
    assert "skipped under CI=true, which fails the run: sbatch not on PATH" in out
    assert "skipped under CI=true, which fails the run: chromium missing" in out
    assert "FAILED (skipped under CI=true, which fails the run) test_module_skip.py: could not import" in out
    assert "1 xfailed" in out and "1 passed" in out
