"""The GPU acceptance run (``python -m bench.gpu``) rehearsed on the CPU, so it cannot rot.

``--dry-run`` runs every section's code at tiny sizes; the JSON must hold each
section's checks, all passing, with the CUDA-only variants listed as skipped and
the checks that compare nothing on the CPU (host syncs, device-vs-CPU features)
as n/a, never as passed. A wrong result must make the run exit 1 naming the
failed check: a crashed section (a damaged shard set) and a failed numeric
comparison (``--inception-tol 0``); a machine without CUDA must refuse the full
run plainly.
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
    assert {r["section"] for r in rows} == {"correctness", "distributed", "syncbn", "throughput", "data",
                                            "inception", "fid"}
    checks = {r["case"]: r for r in rows if r["status"] == "pass"}
    assert all(r["ok"] is True for r in checks.values())
    for variant in ("fp32", "bf16", "fp32 compile"):
        for what in ("losses finite", "resumed copy continued from step 2", "resume from step 2 bitwise",
                     "run's sample grid == grid from checkpoint", "distgan.sample == api.generate (seed 7)",
                     "torchscript export verified", "FID 4 images finite"):
            assert f"{variant}: {what}" in checks, (variant, what)
    assert "log says resumed from step(s) [2]; records at steps [3, 4]" in \
        checks["fp32: resumed copy continued from step 2"]["note"]
    bitwise = checks["fp32: resume from step 2 bitwise"]
    assert bitwise["value"] == 0
    for entry in ("G", "D", "ema", "opt_d", "opt_g", "sched_d", "sched_g", "scaler_d", "scaler_g", "data", "rng"):
        assert f" {entry}," in bitwise["note"] or bitwise["note"].endswith(f" {entry}"), entry
    ort = checks["Inception features, ONNX Runtime == PyTorch on the CPU, 4 images 64x64 -> 299"]
    assert 0 < ort["value"] < 1e-4
    assert "gloo, 2 ranks on one device, synced BN + SN" in checks
    # vacuous on the CPU: reported, counted apart, never passed
    na = {r["case"] for r in rows if r["status"] == "n/a"}
    assert na == {"host syncs per step, default path", "host syncs per step, fused Adam + sync_free",
                  "Inception features, device == CPU (fp32, TF32 off), 4 images 64x64 -> 299"}
    assert all(r["ok"] is None for r in rows if r["status"] == "n/a")
    skipped = {r["case"] for r in rows if r["status"] == "skipped"}
    assert report["counts"] == {"pass": len(checks), "fail": 0, "n/a": 3, "skipped": len(skipped)}
    assert f"checks: {len(checks)} passed, 0 failed, 3 not applicable" in proc.stdout
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


@pytest.mark.timeout(300)
def test_a_failed_numeric_check_exits_1_naming_it(tmp_path):
    """A real comparison (ONNX Runtime vs PyTorch features, ~1e-6 apart) against a tolerance of 0."""
    out = tmp_path / "gpu.json"
    proc = _bench_gpu("--dry-run", "--only", "inception", "--inception-tol", "0", "--work", str(tmp_path / "work"),
                      "--json", str(out), timeout=280)
    assert proc.returncode == 1, proc.stderr[-4000:]
    case = "Inception features, ONNX Runtime == PyTorch on the CPU, 4 images 64x64 -> 299"
    report = json.loads(out.read_text())
    assert report["failed"] == [f"inception: {case}"]
    assert report["counts"] == {"pass": 0, "fail": 1, "n/a": 1, "skipped": 0}
    row = next(r for r in report["rows"] if r["case"] == case)
    assert row["status"] == "fail" and row["ok"] is False and row["value"] > 0 and "tolerance 0" in row["note"]
    assert f"FAILED: inception: {case}" in proc.stderr
    assert "checks: 0 passed, 1 failed, 1 not applicable" in proc.stdout


def test_full_run_without_cuda_is_refused_plainly():
    proc = _bench_gpu(timeout=120, hide_gpus=True)
    assert proc.returncode == 2
    assert "needs a CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert "Traceback" not in proc.stderr
