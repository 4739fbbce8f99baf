"""The GPU acceptance run (``python -m bench.gpu``) rehearsed on the CPU, so it cannot rot.

``--dry-run`` runs every section's code at tiny sizes; the JSON must hold each
section's checks, all passing, with the CUDA-only variants listed as skipped.
A wrong result (here: a damaged shard set) must make the run exit 1 naming the
failed check, and a machine without CUDA must refuse the full run plainly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench_gpu(*args: str, timeout: float, hide_gpus: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([sys.executable, "-m", "bench.gpu", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.timeout(900)
def test_dry_run_passes_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _bench_gpu("--dry-run", "--json", str(out), "--work", str(tmp_path / "work"), timeout=880)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["meta"]["dry_run"] and report["failed"] == []
    assert {r["section"] for r in rows} == {"correctness", "distributed", "syncbn", "throughput", "data", "fid"}
    checks = {r["case"]: r for r in rows if r["ok"] is not None}
    assert all(r["ok"] for r in checks.values())
    for variant in ("fp32", "bf16", "fp32 compile"):
        for what in ("losses finite", "resume from step 2 bitwise", "run's sample grid == grid from checkpoint",
                     "distgan.sample == api.generate (seed 7)", "torchscript export verified",
                     "FID 4 images finite"):
            assert f"{variant}: {what}" in checks, (variant, what)
    assert checks["fp32: resume from step 2 bitwise"]["value"] == 0
    assert checks["host syncs per step, fused Adam + sync_free"]["value"] == 0
    assert "gloo, 2 ranks on one device, synced BN + SN" in checks
    skipped = {r["case"] for r in rows if r["value"] == "skipped"}
    assert {"fp16", "nccl, 2 GPUs, synced BN + SN", "gloo, 2 ranks on one device, + reuse_fakes"} <= skipped
    speed = [r for r in rows if r["section"] == "throughput" and r["unit"] == "img/s"]
    assert len(speed) >= 7 and all(r["value"] > 0 and r["reference"] > 0 for r in speed)
    assert any(r["case"].startswith("FID of the fp32 debug run") for r in checks.values())
    assert "distgan GPU acceptance run" in proc.stdout and "FAIL" not in proc.stdout


@pytest.mark.timeout(300)
def test_a_wrong_result_fails_the_run_naming_the_check(tmp_path):
    work = tmp_path / "work"
    (work / "mnist").mkdir(parents=True)
    (work / "mnist" / "manifest.json").write_text("{}")  # a damaged shard set: every run on it must fail
    out = tmp_path / "gpu.json"
    proc = _bench_gpu("--dry-run", "--only", "fid", "--work", str(work), "--json", str(out), timeout=280)
    assert proc.returncode == 1
    assert "FAILED: fid: fid section ran" in proc.stderr
    assert json.loads(out.read_text())["failed"] == ["fid: fid section ran"]


def test_full_run_without_cuda_is_refused_plainly():
    proc = _bench_gpu(timeout=120, hide_gpus=True)
    assert proc.returncode == 2
    assert "needs a CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert "Traceback" not in proc.stderr
