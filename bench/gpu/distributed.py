"""Section 2: two training processes on the device, replicas compared after every step.

Two ranks share the one GPU over gloo with CUDA tensors (NCCL refuses two ranks
on one device): both get ``LOCAL_RANK=0`` so both use ``cuda:0``. The debug
preset trains with synced batch norm and spectral norm (and once more with
``train.reuse_fakes``); ``train.check_replicas_every=1`` compares every weight
and buffer across ranks after each step and fails the run naming the first
difference. With two or more GPUs the same run goes over NCCL, one GPU a rank.

    python -m bench.gpu.distributed CONFIG RUN_DIR OVERRIDES_JSON   # one rank (what the section starts)
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.gpu import Plan, Report

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, run: Path, overrides: list[str], share_device: bool, timeout: float) -> tuple[bool, str]:
    """Start ``world`` rank processes of the debug preset; (all completed, note or error tail)."""
    port = _free_port()
    logs = run.parent / f"{run.name}_logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.gpu.distributed", str(ROOT / "configs" / "debug.yaml"), str(run),
           json.dumps([f"dist.expect_world_size={world}", *overrides])]
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK="0" if share_device else str(r),
                   LOCAL_WORLD_SIZE="1" if share_device else str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(logs / f"rank{r}.out", "w"),
                                      stderr=open(logs / f"rank{r}.err", "w")))
    deadline = time.monotonic() + timeout
    timed_out = False
    while any(p.poll() is None for p in procs):
        if any(p.returncode not in (None, 0) for p in procs):
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.2)  # polling child processes, not standing in for synchronisation
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if all(p.returncode == 0 for p in procs):
        results = [json.loads((logs / f"rank{r}.out").read_text().strip().splitlines()[-1]) for r in range(world)]
        ok = all(res["completed"] and res["world_size"] == world for res in results)
        return ok, f"{world} ranks completed {results[0]['step']} steps, replicas equal after each"
    tail = " | ".join((logs / f"rank{r}.err").read_text().strip().splitlines()[-1:][0]
                      if (logs / f"rank{r}.err").read_text().strip() else f"rank {r} exit {p.returncode}"
                      for r, p in enumerate(procs))
    what = f"timed out after {timeout:.0f} s" if timed_out else f"exit codes {[p.returncode for p in procs]}"
    return False, f"{what}: {tail[-400:]} (logs: {logs})"


def run(plan: Plan, rep: Report, shards: Path, work: Path) -> None:
    base = [f"data.shards={shards}", f"train.steps={plan.dist_steps}", f"train.ckpt_every={plan.dist_steps}",
            "train.check_replicas_every=1", "model.norm=sync_batch", "model.spectral_norm=true",
            "log.every=1", "log.progress=false", "log.tensorboard=false"]
    timeout = 300 if plan.device == "cuda" else 400
    cases = [("gloo, 2 ranks on one device, synced BN + SN", ["dist.backend=gloo"], True)]
    reuse = ("gloo, 2 ranks on one device, + reuse_fakes", ["dist.backend=gloo", "train.reuse_fakes=true"], True)
    if plan.dry:  # the same launch as above with one more key; tests/test_reuse_fakes.py runs it on CPU
        rep.skip(reuse[0], "on CPU in tests/test_reuse_fakes.py")
    else:
        cases.append(reuse)
    if plan.device == "cuda" and torch.cuda.device_count() >= 2:
        cases.append(("nccl, 2 GPUs, synced BN + SN", ["dist.backend=nccl"], False))
    for i, (name, extra, share) in enumerate(cases):
        ok, note = launch(2, work / f"dist_{i}", [*base, *extra], share, timeout)
        rep.check(name, ok, note=note)
    if not any(name.startswith("nccl") for name, _, _ in cases):
        rep.skip("nccl, 2 GPUs, synced BN + SN", "needs torch.cuda.device_count() >= 2")


def _rank_main() -> None:
    from distgan.config import load_config
    from distgan.train import train

    config, run_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    summary = train(load_config(config, overrides), run_dir)
    print(json.dumps(summary))


if __name__ == "__main__":
    _rank_main()
