"""Multi-process test harness: real processes, one per rank, gloo on CPU.

    results = run_ranks(__file__, "my_rank_fn", world=2, args=[str(tmp_path)])

starts ``world`` Python processes with the environment the local launcher gives
its ranks (:func:`distgan.launch.local.rank_env`: RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT on a free port) and OMP_NUM_THREADS=1;
each imports the file and calls ``fn(*args)``; whatever the function returns
(JSON-able) comes back as ``results[rank]``. If any rank fails, the others are
killed (they would otherwise hang in a collective) and the error carries every
rank's stderr tail. ``start_ranks`` is the non-blocking form for
tests that signal the processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distgan.launch.env import free_port
from distgan.launch.local import rank_env as launcher_rank_env

ROOT = Path(__file__).resolve().parents[1]


def rank_env(rank: int, world: int, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The local launcher's rank environment, one thread per rank, this repository importable, then ``extra``."""
    env = launcher_rank_env(rank, world, port)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def start_ranks(cmd: list[str], world: int, out_dir: Path, env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Start ``cmd`` once per rank (stdout/stderr to ``out_dir/rank{r}.out|err``); returns the processes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for r in range(world):
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=rank_env(r, world, port, env),
                                      stdout=open(out_dir / f"rank{r}.out", "w"),
                                      stderr=open(out_dir / f"rank{r}.err", "w")))
    return procs


def wait_ranks(procs: list[subprocess.Popen], out_dir: Path, timeout: float) -> None:
    """Wait for every rank; on a failure or time-out kill the rest and raise with their stderr."""
    deadline = time.monotonic() + timeout
    failed = None
    while any(p.poll() is None for p in procs):
        bad = [r for r, p in enumerate(procs) if p.returncode not in (None, 0)]
        if bad or time.monotonic() > deadline:
            failed = bad[0] if bad else None
            break
        time.sleep(0.05)
    if failed is None and all(p.returncode == 0 for p in procs):
        return
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    tails = "\n".join(f"--- rank {r} (exit {p.returncode}, result "
                      f"{'written' if (out_dir / f'result{r}.json').exists() else 'not written'}) ---\n"
                      + (out_dir / f"rank{r}.err").read_text()[-3000:] for r, p in enumerate(procs))
    what = f"failed on rank {failed}" if failed is not None else f"timed out after {timeout:.0f} s"
    raise RuntimeError(f"multi-process run {what}:\n{tails}")


def run_ranks(file: str, fn: str, world: int, args: list[Any] | None = None, timeout: float = 120,
              env: dict[str, str] | None = None) -> list[Any]:
    """Run ``fn(*args)`` from ``file`` in ``world`` rank processes; returns each rank's result."""
    out_dir = Path(tempfile.mkdtemp(prefix="mp_"))
    cmd = [sys.executable, str(Path(__file__).resolve()), str(file), fn, json.dumps(args or []), str(out_dir)]
    wait_ranks(start_ranks(cmd, world, out_dir, env), out_dir, timeout)
    return [json.loads((out_dir / f"result{r}.json").read_text()) for r in range(world)]


def train_rank(config: str, run_dir: str, overrides: list[str]) -> dict:
    """One rank of a training run (what every launcher ends in: the torchrun variables + train())."""
    from distgan.config import load_config
    from distgan.train import train

    return train(load_config(config, overrides), run_dir)


def trainer_cmd(config: Path, run_dir: Path, overrides: list[str], out_dir: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), str(Path(__file__).resolve()), "train_rank",
            json.dumps([str(config), str(run_dir), overrides]), str(out_dir)]


def run_trainer(world: int, run_dir: Path, overrides: list[str], timeout: float = 180,
                config: Path = ROOT / "configs" / "debug.yaml", env: dict[str, str] | None = None) -> list[dict]:
    """Train with ``world`` real processes (expecting exactly that world size); returns each rank's summary."""
    out = Path(tempfile.mkdtemp(prefix="mp_train_"))
    cmd = trainer_cmd(config, run_dir, [f"dist.expect_world_size={world}", *overrides], out)
    wait_ranks(start_ranks(cmd, world, out, env), out, timeout)
    return [json.loads((out / f"result{r}.json").read_text()) for r in range(world)]


def _main() -> None:
    import importlib.util

    file, fn, args, out_dir = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
    spec = importlib.util.spec_from_file_location("_mp_target", file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_mp_target"] = mod
    spec.loader.exec_module(mod)
    result = getattr(mod, fn)(*args)
    (out_dir / f"result{os.environ['RANK']}.json").write_text(json.dumps(result))
    # The result is complete: end the process without interpreter finalization. Torch's gloo
    # threads torn down during finalization were seen to abort a finished rank ("terminate called
    # without an active exception", 1 run in several hundred under load), which is not what these
    # tests check; the trainer's own ranks leave their group before exiting (distgan.launch.worker).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    _main()
