"""One rank of ``python -m distgan.launch --check``: join as training would, then measure.

    python -m distgan.launch.preflight RUN_DIR      # what each rank runs (the launcher starts it)

Each rank reads the request the launcher wrote (``RUN_DIR/preflight/request.json``:
expected world size, GPUs asked for, the time bound), checks that the GPUs it
was promised are visible, joins the process group through
:func:`distgan.rendezvous.rendezvous` (the same call training makes), checks
that an all-reduce sums correctly, and times all-reduces of a few sizes.
Every rank writes ``RUN_DIR/preflight/rank{r}.json`` (its row, its stage
times, or its diagnosis); rank 0 adds ``result.json`` with the measurements
and the gradient volume of the run's G and D. The launcher prints the table
(:mod:`distgan.launch.check`); each rank also prints its diagnosis to its log.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from distgan.fsutil import atomic_write_text
from distgan.launch.env import export_slurm_dist_env
from distgan.log import get_logger, setup_console
from distgan.models import build_models, data_info
from distgan.ranks import launch_ranks
from distgan.rendezvous import RendezvousError, check_world, choose_backend, host_name, leave, rendezvous
from distgan.rundir import read_config
from distgan.shards import read_manifest
from distgan.train import stages
from distgan.train.precision import device_problem

PREFLIGHT_DIR = "preflight"
EXIT_FAILED = stages.EXIT_HUNG
# message sizes (bytes of fp32) and repetitions: small, medium, gradient-sized
SIZES = [(64 * 1024, 10), (1024 * 1024, 5), (16 * 1024 * 1024, 3)]
GPU_SIZES = [(256 * 1024 * 1024, 5)]
log = get_logger("preflight")


def preflight_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / PREFLIGHT_DIR


def _write(run_dir: Path, name: str, record: dict[str, Any]) -> None:
    atomic_write_text(preflight_dir(run_dir) / name, json.dumps(record, indent=1) + "\n")


def _timed(timings: dict[str, float], name: str, t0: float) -> float:
    now = time.perf_counter()
    timings[name] = now - t0
    return now


def _device(local_rank: int, gpus_per_node: int, host: str) -> torch.device:
    """This rank's device as training picks it; GPUs asked for but not visible are a named error."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus_per_node and have <= local_rank:
        raise RendezvousError(
            "GPUs not visible",
            f"{gpus_per_node} GPU(s) per node were requested but local rank {local_rank} on {host} sees {have} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}). Ask Slurm for them "
            "(profile gpus_per_node / --gpus-per-node, plus any gres the site needs in the profile's extra), "
            "or launch a CPU job with --procs-per-node")
    if have:
        torch.cuda.set_device(local_rank % have)
        return torch.device("cuda", local_rank % have)
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def allreduce_correct(device: torch.device, world: int, rank: int) -> str:
    """'' when an all-reduce of known values sums exactly, else what differed."""
    n = 1 << 20
    t = torch.arange(n, dtype=torch.float32, device=device).remainder_(1024) * (rank + 1)
    tdist.all_reduce(t)
    want = torch.arange(n, dtype=torch.float32, device=device).remainder_(1024) * (world * (world + 1) // 2)
    bad = (t != want).nonzero()
    if len(bad):
        i = int(bad[0])
        return f"element {i} is {float(t[i])}, expected {float(want[i])} ({len(bad)} of {n} wrong)"
    return ""


def bandwidth(device: torch.device, world: int) -> list[dict[str, float]]:
    """Mean all-reduce time per message size; algorithm and bus bandwidth (ring: 2(n-1)/n of the bytes)."""
    rows = []
    for nbytes, reps in SIZES + (GPU_SIZES if device.type == "cuda" else []):
        t = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        tdist.all_reduce(t)  # warm-up: connections, buffers
        tdist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            tdist.all_reduce(t)
        _sync(device)
        dt = (time.perf_counter() - t0) / reps
        algbw = nbytes / dt / 1e9
        rows.append({"bytes": nbytes, "time_s": dt, "algbw_gbs": algbw,
                     "busbw_gbs": algbw * (2 * (world - 1) / world if world > 1 else 1.0)})
    return rows


def gradient_volume(run_dir: Path) -> dict[str, Any]:
    """Parameters of the run's G and D and the fp32 gradient bytes each phase all-reduces per step."""
    try:
        cfg = read_config(run_dir)
        G, D = build_models(cfg.model, data_info(cfg, read_manifest(cfg.data.shards)))
        out: dict[str, Any] = {}
        for name, m in (("G", G), ("D", D)):
            n = sum(p.numel() for p in m.parameters() if p.requires_grad)
            out[name] = {"params": n, "bytes": 4 * n}
        return out
    except Exception as e:  # noqa: BLE001 - a reference figure: the check does not fail without it
        return {"error": f"{type(e).__name__}: {e}"}


def run_check(run_dir: str | Path) -> dict[str, Any]:
    """This rank's part of the check; returns its record (``error`` set on failure)."""
    t_start = time.time()
    run_dir = Path(run_dir)
    export_slurm_dist_env()
    req = json.loads((preflight_dir(run_dir) / "request.json").read_text())
    ranks, host = launch_ranks(), host_name()
    rank, local_rank = ranks.rank, ranks.local_rank
    timings: dict[str, float] = {"start": max(0.0, t_start - float(req.get("launched", t_start)))}
    rec: dict[str, Any] = {"rank": rank, "local_rank": local_rank, "host": host, "pid": os.getpid(),
                           "timings": timings}
    try:
        t0 = time.perf_counter()
        device = _device(local_rank, int(req.get("gpus_per_node", 0)), host)
        rec["device"] = str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"
        problem = device_problem(req.get("precision", "fp32"), device)  # the device the rank would train on
        if problem:
            raise RendezvousError("device", f"rank {rank} on {host} ({device}): {problem}")
        t0 = _timed(timings, "device", t0)
        rec.update(backend=choose_backend(req.get("backend", "auto")), addr=os.environ.get("MASTER_ADDR", ""),
                   port=os.environ.get("MASTER_PORT", ""))  # shown in the table even when joining fails
        if ranks.world > 1:  # a rank stuck on its own (not in a collective) ends too
            stages.watch(float(req["timeout_s"]), rank, world=ranks.world)
        check_world(ranks.world, int(req.get("expect_world", 0)))
        stages.enter("rendezvous")
        info = rendezvous(float(req["timeout_s"]), req.get("backend", "auto"), int(req.get("expect_world", 0)),
                          timeout_key="dist.check_timeout_s")
        timings.update(info.timings)
        rec.update(world=info.world, backend=info.backend, addr=info.addr, port=info.port)
        if info.world == 1:  # one rank: a group of one still exercises the backend and the device
            tdist.init_process_group(info.backend, store=tdist.HashStore(), rank=0, world_size=1,
                                     timeout=datetime.timedelta(seconds=float(req["timeout_s"])))
        t0 = time.perf_counter()
        stages.enter("all-reduce check")
        wrong = allreduce_correct(device, info.world, rank)
        t0 = _timed(timings, "all-reduce check", t0)
        stages.enter("bandwidth")
        bw = bandwidth(device, info.world) if info.world > 1 else []  # one rank: nothing crosses a link
        _timed(timings, "bandwidth", t0)
        rows = [None] * info.world
        tdist.all_gather_object(rows, rec)
        if rank == 0:
            _write(run_dir, "result.json", {"ranks": rows, "allreduce_error": wrong, "bandwidth": bw,
                                            "gradients": gradient_volume(run_dir), "world": info.world,
                                            "backend": info.backend, "addr": info.addr, "port": info.port})
        if wrong:
            raise RendezvousError("all-reduce wrong", f"rank {rank}: all-reduce gave a wrong sum: {wrong}")
    except RendezvousError as e:
        rec["error"] = {"kind": e.kind, "message": str(e)}
    except Exception as e:  # noqa: BLE001 - every failure becomes this rank's diagnosis
        kind = "collective failed" if stages.is_comm_failure(e) else "error"
        rec["error"] = {"kind": kind, "message": f"rank {rank} on {host} at '{stages.current()}': "
                                                 f"{type(e).__name__}: {str(e).strip()[:400]}"}
    finally:
        stages.unwatch()
        leave()
    _write(run_dir, f"rank{rank}.json", rec)
    if "error" in rec:
        log.error("rank %d on %s: %s: %s", rank, host, rec["error"]["kind"], rec["error"]["message"])
    else:
        log.info("rank %d on %s: ok (%s)", rank, host, rec["device"])
    return rec


class CheckTask:
    """One Slurm task of the check (picklable for submitit); raises when this rank's check failed."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = str(run_dir)

    def __call__(self) -> dict[str, Any]:
        setup_console()  # every rank's verdict belongs in its own log (see main)
        rec = run_check(self.run_dir)
        if "error" in rec:
            raise RuntimeError(f"preflight failed ({rec['error']['kind']}): {rec['error']['message']}")
        return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.launch.preflight", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="run directory holding config.yaml and preflight/request.json")
    # console on every rank, not only rank 0: each rank's output is its own file (a local check's
    # rank{r}.out, a Slurm task's log) and its one-line verdict is what that file is read for
    setup_console()
    rec = run_check(p.parse_args(argv).run_dir)
    return EXIT_FAILED if "error" in rec else 0


if __name__ == "__main__":
    sys.exit(main())
