"""Shared fixtures: real embedded-MNIST shards written once per session, a debug config.

In CI (``CI=true``) a skipped test fails the run with its reason: a component missing
on the CI machine (Slurm, chromium, DeepSpeed) must not turn into a green run that
tested less. Locally skips stay skips.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(rep) -> str:
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_skip(rep) -> None:
    """Turn a skip report into a failure that says why the test skipped."""
    reason = _skip_reason(rep)
    rep.outcome = "failed"
    rep.longrepr = f"skipped under CI=true, which fails the run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if _in_ci() and rep.skipped and not hasattr(rep, "wasxfail"):
        _fail_skip(rep)


_SKIPPED_MODULES: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # a whole module skipped (importorskip, allow_module_level): failing its collection
    # would interrupt the session, so it is recorded here and fails the run at the end
    rep = (yield).get_result()
    if _in_ci() and rep.skipped:
        _SKIPPED_MODULES.append(f"{rep.nodeid}: {_skip_reason(rep)}")


def pytest_terminal_summary(terminalreporter):
    for line in _SKIPPED_MODULES:
        terminalreporter.write_line(f"FAILED (skipped under CI=true, which fails the run) {line}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_MODULES and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def mnist_shards(tmp_path_factory) -> Path:
    """The 5,000 embedded MNIST digits in 10 shards of 500."""
    from distgan.shards import write_shards

    out = tmp_path_factory.mktemp("shards") / "mnist"
    write_shards("mnist-embedded", None, out, shard_size=500, progress=False)
    return out


@pytest.fixture
def debug_cfg(mnist_shards):
    """The CPU debug preset pointed at the session's shards, factory taking overrides."""
    from distgan.config import load_config

    def make(*overrides: str):
        return load_config(ROOT / "configs" / "debug.yaml",
                           [f"data.shards={mnist_shards}", "log.progress=false", *overrides])
    return make


@pytest.fixture(scope="session")
def debug_run(mnist_shards, tmp_path_factory) -> Path:
    """A 20-step debug run (16x16, z 16, 10 digit classes; checkpoints at 10 and 20), trained once
    per session. Read-only: tests that change a run copy it first."""
    from distgan.config import load_config
    from distgan.train import train

    cfg = load_config(ROOT / "configs" / "debug.yaml", [f"data.shards={mnist_shards}", "log.progress=false"])
    run_dir = tmp_path_factory.mktemp("debug_run") / "run"
    train(cfg, run_dir)
    return run_dir
