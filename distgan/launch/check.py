"""``python -m distgan.launch --check``: start every rank as training would, print one table.

    python -m distgan.launch --config configs/debug.yaml --procs-per-node 2 --check
    python -m distgan.launch --config configs/debug.yaml --cluster slurm --profile local --nodes 2 --check

The ranks are started by the same launcher, with the same environment, as a
training run (locally: :func:`distgan.launch.local.launch_local`; on Slurm:
one task per rank through submitit), but run :mod:`distgan.launch.preflight`
instead of the trainer. The answer is one table (host, global/local rank,
device, backend, rendezvous address:port per rank), an all-reduce correctness
check, all-reduce bandwidth at a few message sizes beside the gradient volume
of the config's G and D, and the time of each stage, or a diagnosis naming
what to change. Exit 0 when every rank passed, 4 otherwise, in a bounded time:
``dist.check_timeout_s`` for the ranks to arrive, the same for each collective.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from distgan.fsutil import atomic_write_text
from distgan.launch.local import launch_local
from distgan.launch.preflight import EXIT_FAILED, CheckTask, preflight_dir
from distgan.log import get_logger
from distgan.rundir import logs_dir

log = get_logger("check")

STAGES = ["start", "device", "resolve", "rendezvous", "process group", "all-reduce check", "bandwidth"]


def _prepare(run_dir: Path, cfg: Any, world: int, gpus_per_node: int) -> float:
    """A fresh RUN_DIR/preflight/ with the request every rank reads; returns the time bound."""
    d = preflight_dir(run_dir)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    timeout = float(cfg.dist.check_timeout_s)
    atomic_write_text(d / "request.json", json.dumps({
        "expect_world": cfg.dist.expect_world_size or world, "gpus_per_node": gpus_per_node,
        "timeout_s": timeout, "backend": cfg.dist.backend, "precision": cfg.train.precision,
        "launched": time.time()}) + "\n")
    # arrival, then at most a few bounded collectives, plus start-up: the whole check ends within this
    return 4 * timeout + 60


def check_local(run_dir: Path, cfg: Any, procs: int, gpus_per_node: int = 0) -> int:
    """Run the check with ``procs`` ranks here; print the report; 0 when every rank passed."""
    bound = _prepare(run_dir, cfg, procs, gpus_per_node)
    log.info("%d local rank(s); waiting at most %g s (dist.check_timeout_s) for them to arrive", procs,
             cfg.dist.check_timeout_s)
    t0 = time.monotonic()
    code = launch_local(run_dir, procs, grace_s=2.0, stream=False, deadline_s=bound,
                        command=[sys.executable, "-m", "distgan.launch.preflight", str(run_dir)])
    logs = [str(logs_dir(run_dir) / f"rank{r}.out") for r in range(procs)]
    return report(run_dir, procs, time.monotonic() - t0, code, logs)


def check_slurm(run_dir: Path, cfg: Any, res: Any, poll_s: float = 1.0) -> int:
    """Run the check as a short Slurm job with the launch's resources; print the report."""
    from distgan.launch.slurm import make_executor, with_retries  # noqa: PLC0415 - submitit: Slurm only

    bound = _prepare(run_dir, cfg, res.world_size, res.gpus_per_node)
    short = dataclasses.replace(res, time_min=max(1, min(res.time_min, int(bound // 60) + 2)), max_requeues=0)
    ex = make_executor(logs_dir(run_dir) / "slurm-check", short, job_name=f"distgan-check-{run_dir.name}")
    job = with_retries(lambda: ex.submit(CheckTask(str(run_dir.resolve()))))
    log.info("Slurm job %s: %d node(s) x %d rank(s); logs in %s", job.job_id, res.nodes, res.tasks_per_node,
             job.paths.folder)
    t0, started, cancelled = time.monotonic(), None, False
    while not job.done(force_check=True):
        now = time.monotonic()
        if started is None and job.state not in ("PENDING", "UNKNOWN", "REQUEUED"):
            started = now  # the bound counts from the start: queue time is the site's
        failed_at = _first_failure(run_dir, res.world_size)
        # once a rank has named the failure, the others get a few seconds to add theirs
        if (started is not None and now - started > bound) or (failed_at and time.time() - failed_at > 5):
            job.cancel(check=False)
            cancelled = True
            break
        time.sleep(poll_s)
    code, state = EXIT_FAILED, f"cancelled by the check ({job.state})"
    if not cancelled:
        try:  # every task's own verdict (the job's state can still read RUNNING while it winds down)
            job.results()
            code, state = 0, "finished"
        except Exception:  # noqa: BLE001 - submitit re-raises a task's failure (or a missing result)
            state = f"failed ({job.state})"
    logs = [str(Path(job.paths.folder) / f"{job.job_id}_{r}_log.out") for r in range(res.world_size)]
    return report(run_dir, res.world_size, time.monotonic() - t0, code, logs, f"Slurm job {job.job_id}: {state}")


def _first_failure(run_dir: Path, world: int) -> float | None:
    """When the first rank recorded a failure (file time), None while none has."""
    d = preflight_dir(run_dir)
    times = [(d / f"rank{r}.json").stat().st_mtime for r in range(world)
             if "error" in (_read(d / f"rank{r}.json") or {})]
    return min(times) if times else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _size(n: float) -> str:
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= f:
            return f"{n / f:.3g} {unit}"
    return f"{n:.0f} B"


def _count(n: int) -> str:
    return f"{n / 1e6:.3g} M" if n >= 1e6 else f"{n / 1e3:.3g} k" if n >= 1e3 else str(n)


def report(run_dir: Path, world: int, elapsed: float, code: int, logs: list[str], note: str = "") -> int:
    """Print the table (or the diagnosis) from the ranks' records; the check's exit code."""
    d = preflight_dir(run_dir)
    ranks = [_read(d / f"rank{r}.json") for r in range(world)]
    result = _read(d / "result.json")
    failures = [r for r in ranks if r and "error" in r]
    silent = [i for i, r in enumerate(ranks) if r is None]
    out = []
    ok = not failures and not silent and result is not None and code == 0
    rows = (result or {}).get("ranks") or [r for r in ranks if r]
    if rows:
        out.append(f"{'rank':>4} {'local':>5}  {'host':<20} {'device':<28} {'backend':<7} rendezvous")
        for r in sorted(rows, key=lambda x: x["rank"]):
            addr = f"{r['addr']}:{r.get('port') or '-'}" if r.get("addr") else "- (one rank)" if world == 1 else "-"
            out.append(f"{r['rank']:>4} {r['local_rank']:>5}  {r['host']:<20} {r.get('device', '?'):<28} "
                       f"{r.get('backend', '?'):<7} {addr}")
    if result:
        err = result.get("allreduce_error")
        out.append(f"all-reduce check: {'WRONG: ' + err if err else 'ok'} (sum of 1M fp32 values over "
                   f"{result['world']} rank(s), exact)")
        if not result["bandwidth"]:
            out.append("all-reduce bandwidth: n/a with one rank (nothing crosses a link)")
        else:
            out.append("all-reduce bandwidth (busbw = algbw x 2(n-1)/n, ring):")
            out.append(f"  {'size':>9} {'time':>10} {'algbw':>11} {'busbw':>11}")
        for b in result["bandwidth"]:
            out.append(f"  {_size(b['bytes']):>9} {b['time_s'] * 1e3:>7.3f} ms {b['algbw_gbs']:>7.3f} GB/s "
                       f"{b['busbw_gbs']:>6.3f} GB/s")
        g = result.get("gradients", {})
        if "error" in g or not result["bandwidth"]:
            out.append(f"gradient volume: n/a ({g['error'][:200]})" if "error" in g else
                       "gradient volume per step (fp32): " + ", ".join(
                           f"{k} {_count(v['params'])} params = {_size(v['bytes'])}" for k, v in g.items()))
        else:
            per = ", ".join(f"{k} {_count(v['params'])} params = {_size(v['bytes'])}" for k, v in g.items())
            total = sum(v["bytes"] for v in g.values())
            # the measured size nearest to the gradient volume (log scale) gives the rate for the estimate
            near = min(result["bandwidth"], key=lambda b: abs(math.log(b["bytes"] / max(total, 1))))
            out.append(f"gradient volume per step (fp32, all-reduced by DDP in the D and G phases): {per}; "
                       f"~{total / (near['algbw_gbs'] * 1e9) * 1e3:.3g} ms per step at the "
                       f"{_size(near['bytes'])} rate")
    times = [r.get("timings", {}) for r in ranks if r]
    if times:
        cols = [s for s in STAGES if any(s in t for t in times)]
        out.append("stage times (slowest rank): " + ", ".join(
            f"{s} {max(t.get(s, 0.0) for t in times):.2f} s" for s in cols))
    if ok:
        out.append(f"preflight passed: {world} rank(s) in {elapsed:.1f} s")
        print("\n".join(out), flush=True)
        return 0
    out.append(f"preflight FAILED after {elapsed:.1f} s{' (' + note + ')' if note else ''}:")
    seen = set()
    for f in failures:
        key = (f["error"]["kind"], f["error"]["message"])
        if key in seen:
            continue
        seen.add(key)
        out.append(f"  rank {f['rank']} on {f['host']}: {f['error']['kind']}: {f['error']['message']}")
    if silent:
        out.append(f"  no report from rank(s) {', '.join(map(str, silent))}: never started, stuck, or stopped "
                   "when another rank failed")
    out.append("  rank logs: " + ", ".join(logs[i] for i in (sorted({f['rank'] for f in failures} | set(silent))
                                                             or range(len(logs)))))
    print("\n".join(out), file=sys.stderr, flush=True)
    return code or EXIT_FAILED
