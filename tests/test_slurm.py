"""Against a REAL Slurm cluster on this machine (slurm/local-cluster/start.sh; 2 nodes x 2 CPUs).

scripts/test.sh starts the cluster before pytest and stops it after; run alone,
this module starts it (as root) and stops it again. Every job uses a fresh
submitit folder (job ids restart when the cluster state is purged).
"""
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distgan.checkpoint import load_file
from distgan.rundir import read_status, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BASE = Path(os.environ.get("DISTGAN_SLURM_BASE", "/tmp/distgan-slurm"))
pytestmark = [pytest.mark.slurm, pytest.mark.multiproc]


def _cluster_env() -> dict:
    env = {**os.environ, "SLURM_CONF": str(BASE / "etc" / "slurm.conf"), "OMP_NUM_THREADS": "1",
           "PATH": f"{ROOT / 'slurm' / 'local-cluster' / 'bin'}:{os.environ['PATH']}"}
    env.pop("SLURM_JOB_ID", None)
    return env


def _up(env) -> bool:
    try:
        out = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "UP" in out.stdout


@pytest.fixture(scope="module")
def cluster():
    env = _cluster_env()
    started = False
    if not _up(env):
        if os.geteuid() != 0:
            pytest.skip("the local Slurm cluster is not running and starting it needs root "
                        "(bash slurm/local-cluster/start.sh)")
        subprocess.run(["bash", str(ROOT / "slurm/local-cluster/start.sh")], check=True, timeout=600)
        started = True
    assert _up(env), "local Slurm cluster did not come up"
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ.update(SLURM_CONF=env["SLURM_CONF"], PATH=env["PATH"])
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if started:
        subprocess.run(["bash", str(ROOT / "slurm/local-cluster/stop.sh")], timeout=120)


def _py(env, *args, timeout=400, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def _launch_args(run, shards, *extra, profile="local"):
    return ["-m", "distgan.launch", "--config", str(ROOT / "configs/debug.yaml"), "--cluster", "slurm",
            "--profile", str(profile), "--run-dir", str(run), f"data.shards={shards}", "log.progress=false", *extra]


def _job_id(stdout: str) -> str:
    m = re.search(r"submitted Slurm job (\S+)", stdout)
    assert m, stdout
    return m.group(1)


@pytest.mark.timeout(300)
def test_single_node_job_through_launch(cluster, mnist_shards, tmp_path):
    run = tmp_path / "run"
    out = _py(cluster, *_launch_args(run, mnist_shards, "--wait", "train.steps=6", "train.ckpt_every=6"))
    assert out.returncode == 0, out.stdout + out.stderr
    job = _job_id(out.stdout)
    assert f"tensorboard --logdir {run / 'tb'}" in out.stdout and "rank 0 output:" in out.stdout
    assert f"job {job} finished" in out.stdout
    st = read_status(run)
    assert st["state"] == "completed" and st["job_id"] == job and st["world_size"] == 1
    assert load_file(resolve_checkpoint(run, "latest"))["step"] == 6


@pytest.mark.timeout(300)
def test_two_nodes_one_task_each_form_one_gloo_group(cluster, mnist_shards, tmp_path):
    run = tmp_path / "run"
    out = _py(cluster, *_launch_args(run, mnist_shards, "--nodes", "2", "--wait", "train.steps=6",
                                     "train.ckpt_every=6"))
    assert out.returncode == 0, out.stdout + out.stderr
    job = _job_id(out.stdout)
    st = read_status(run)
    assert st["state"] == "completed" and st["world_size"] == 2  # the trainer checks dist.expect_world_size=2
    ckpt = load_file(resolve_checkpoint(run, "latest"))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    nodes = subprocess.run(["sacct", "-j", job, "-o", "JobID,NodeList", "--parsable2"], env=cluster,
                           capture_output=True, text=True).stdout
    assert "127.0.0.[1-2]" in nodes  # one task on each slurmd "node"


def _wait_for_step(run: Path, step: int, proc, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    stats = run / "stats.jsonl"
    while time.monotonic() < end:
        if stats.is_file():
            rows = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
            if rows and rows[-1]["step"] >= step:
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"run did not reach step {step} in {timeout} s")


def _preempt_and_resume(cluster, shards, tmp_path, preempt, nodes=1, steps=1500, profile="local"
                        ) -> tuple[Path, str]:
    """Start a long run, preempt it mid-run with ``preempt(job_id)``, follow it to the end."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *_launch_args(run, shards, "--wait", f"train.steps={steps}",
                                                          "--nodes", str(nodes),
                                                          "train.ckpt_every=100000", "log.every=20",
                                                          "log.sample_every=100000", profile=profile)],
                            cwd=ROOT, env=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_step(run, 40, proc)
        job = read_status(run)["job_id"]
        preempt(job)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    st = read_status(run)
    assert st["state"] == "completed" and st["step"] == steps and st["world_size"] == nodes
    for rank in range(nodes):  # every rank stopped at the same step and resumed from it
        log = (run / "logs" / f"rank{rank}.log").read_text()
        stopped = int(re.search(r"checkpointed at step (\d+)", log).group(1))
        resumed = int(re.search(r"resumed from step (\d+)", log).group(1))
        assert 40 <= stopped == resumed < steps  # the stop checkpoint is the only one: no restart from 0
    logged = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == steps  # the step count continued
    assert load_file(resolve_checkpoint(run, "latest"))["step"] == steps
    return run, out


@pytest.mark.timeout(420)
def test_preempted_job_is_requeued_and_resumes(cluster, mnist_shards, tmp_path):
    # scontrol requeue = what preemption with PreemptMode=REQUEUE does: SIGTERM, then back to the queue
    _, out = _preempt_and_resume(cluster, mnist_shards, tmp_path,
                                 lambda job: subprocess.run(["scontrol", "requeue", job], env=cluster, check=True))
    assert "after SIGTERM" in out


@pytest.mark.timeout(420)
def test_time_limit_warning_checkpoints_and_requeues_itself(cluster, mnist_shards, tmp_path):
    # USR2 is what Slurm sends signal_delay_s before the time limit (--signal=USR2@S); 2 nodes x 1 rank
    _, out = _preempt_and_resume(cluster, mnist_shards, tmp_path,
                                 lambda job: subprocess.run(["scancel", "--signal=USR2", job], env=cluster,
                                                            check=True), nodes=2, steps=500)
    assert re.search(r"job \S+ requeued", out)


@pytest.mark.timeout(600)
def test_a_real_time_limit_signals_checkpoints_and_requeues(cluster, mnist_shards, tmp_path):
    # a 1-minute job with --signal=USR2@30: Slurm itself sends the warning before the limit. The run is far
    # longer than any allocation, whatever the machine's speed: the test follows it through its first
    # requeue until the next allocation has resumed from the stop checkpoint and trained on, then cancels it
    profile = tmp_path / "short.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load((ROOT / "slurm/profiles/local.yaml").read_text()),
                                       "time_min": 1, "signal_delay_s": 30, "max_requeues": 8}))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *_launch_args(run, mnist_shards, "--wait", "train.steps=10000000",
                                                          "train.ckpt_every=100000000", "log.every=20",
                                                          "log.sample_every=100000000", profile=profile)],
                            cwd=ROOT, env=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job, log, resumed = None, "", None
    try:
        end = time.monotonic() + 480
        while time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            job = job or read_status(run).get("job_id")
            log = (run / "logs" / "rank0.log").read_text() if (run / "logs" / "rank0.log").is_file() else ""
            m = re.search(r"resumed from step (\d+)", log)
            if m:
                resumed = int(m.group(1))
                stats = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
                if stats[-1] > resumed:  # the second allocation trains on from the stop checkpoint
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"no requeued attempt resumed and trained within 480 s:\n{log[-3000:]}")
    finally:
        if job:
            subprocess.run(["scancel", job], env=cluster)
        proc.kill()
        out, _ = proc.communicate(timeout=60)
    assert "stop requested (SIGUSR1)" in log  # Slurm's USR2 warning, passed on to the ranks: not a kill at the limit
    stopped = int(re.search(r"checkpointed at step (\d+)", log).group(1))
    assert 0 < stopped == resumed  # the stop checkpoint is where the next allocation went on: no restart
    assert re.search(r"job \S+ requeued", out)
    assert read_status(run)["requeues"] >= 1


@pytest.mark.timeout(420)
def test_a_sites_own_preemption_signal_checkpoints_and_requeues(cluster, mnist_shards, tmp_path):
    # a site that warns with SIGHUP before preempting: the profile names it, every rank checkpoints on
    # it within the grace time, and the job requeues itself under max_requeues
    profile = tmp_path / "hup.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load((ROOT / "slurm/profiles/local.yaml").read_text()),
                                       "preempt_signals": ["HUP"]}))
    run, out = _preempt_and_resume(cluster, mnist_shards, tmp_path,
                                   lambda job: subprocess.run(["scancel", "--signal=HUP", job], env=cluster,
                                                              check=True), nodes=2, steps=500, profile=profile)
    assert re.search(r"job \S+ requeued", out)
    assert "stop requested (SIGHUP)" in (run / "logs" / "rank0.log").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["dist"]["stop_signals"] == ["TERM", "USR1", "HUP"]


@pytest.mark.timeout(300)
def test_emitted_sbatch_script_runs_two_ranks(cluster, mnist_shards, tmp_path):
    run, script = tmp_path / "run", tmp_path / "job.sbatch"
    out = _py(cluster, "-m", "distgan.launch", "--config", str(ROOT / "configs/debug.yaml"), "--profile", "local",
              "--nodes", "2", "--run-dir", str(run), "--emit-sbatch", str(script), f"data.shards={mnist_shards}",
              "log.progress=false", "train.steps=6", "train.ckpt_every=6")
    assert out.returncode == 0, out.stderr
    job = subprocess.run(["sbatch", "--parsable", str(script)], env=cluster, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    end = time.monotonic() + 240
    while time.monotonic() < end:
        state = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], env=cluster,
                               capture_output=True, text=True).stdout.strip()
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(1)
    log = (run / "logs" / "slurm" / f"{job}.out").read_text()
    assert state == "COMPLETED", log
    st = read_status(run)
    assert st["state"] == "completed" and st["world_size"] == 2, log


@pytest.mark.timeout(420)
def test_debug_grid_as_one_job_array_ends_with_table_and_plot(cluster, mnist_shards, tmp_path):
    out_dir = tmp_path / "sweep"
    out = _py(cluster, "-m", "distgan.sweep", str(ROOT / "configs/sweeps/debug_grid.yaml"), "--cluster", "slurm",
              "--profile", "local", "--max-parallel", "4", "--wait", "--out", str(out_dir),
              f"data.shards={mnist_shards}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted job array" in out.stdout
    jobs = json.loads((out_dir / "jobs.json").read_text())
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs.values()}) == 1  # ONE array of 4 tasks
    rows = list(csv.DictReader((out_dir / "results.csv").open()))
    assert len(rows) == 4 and all(r["state"] == "ok" and float(r["value"]) > 0 for r in rows)
    assert all(r["provenance.metric"] == "classifier_fd" for r in rows)
    md = (out_dir / "results.md").read_text()
    ranked = [line for line in md.splitlines() if re.match(r"\| [1-4] \|", line)]
    means = [float(line.split("|")[4]) for line in ranked]
    assert len(ranked) == 4 and means == sorted(means)  # best (lowest) first
    assert (out_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _classifier_sweep(tmp_path: Path, name: str, shards: Path, steps: int, overrides: dict | None = None,
                      **fields) -> Path:
    """A sweep file over the debug preset, ranked by the classifier FD on 200 samples, its output in tmp_path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "base": str(ROOT / "configs/debug.yaml"), "out": str(tmp_path / "sweep"),
        "overrides": {"train.steps": steps, "log.progress": False, "data.shards": str(shards),
                      "metrics.names": ["classifier"], "metrics.num_fake": 200, **(overrides or {})},
        "metric": "classifier_fd", **fields}))
    return path


@pytest.mark.timeout(420)
def test_failed_task_is_in_the_table_and_only_it_is_resubmitted(cluster, mnist_shards, tmp_path):
    sweep = _classifier_sweep(tmp_path, "fails", mnist_shards, 4,
                              variants={"good": {}, "broken": {"data.shards": str(tmp_path / "no_such_shards")}},
                              lower_is_better=True)
    args = ["-m", "distgan.sweep", str(sweep), "--cluster", "slurm", "--profile", "local"]
    out = _py(cluster, *args, "--wait")
    assert out.returncode == 1, out.stdout + out.stderr  # a failed run fails the sweep command
    md = (tmp_path / "sweep" / "results.md").read_text()
    broken = next(line for line in md.splitlines() if "variant=broken" in line and line.startswith("| `"))
    assert "| failed |" in broken and "no_such_shards" in broken  # the error ...
    log = Path(re.findall(r"`([^`]+)`", broken)[-1])
    assert "ShardError" in log.read_text()  # ... and a log that has the traceback
    first = json.loads((tmp_path / "sweep" / "jobs.json").read_text())
    out = _py(cluster, *args, "--wait")
    assert "2 runs (1 to run, 1 skipped)" in out.stdout
    again = json.loads((tmp_path / "sweep" / "jobs.json").read_text())
    good = next(k for k in first if "good" in k)
    bad = next(k for k in first if "broken" in k)
    assert again[good] == first[good] and again[bad] != first[bad]
    # a bad key is refused before anything is submitted
    spec = yaml.safe_load(sweep.read_text())
    spec["variants"]["good"] = {"train.lr_dd": 1e-3}
    sweep.write_text(yaml.safe_dump(spec))
    out = _py(cluster, *args)
    assert out.returncode == 2 and "unknown config key 'train.lr_dd'" in out.stderr


@pytest.mark.timeout(420)
def test_time_limit_at_the_requeue_limit_checkpoints_and_ends_without_requeue(cluster, mnist_shards, tmp_path):
    # a profile allowing no requeue: the USR2 warning checkpoints, then the job ends, saying why
    profile = tmp_path / "norequeue.yaml"
    profile.write_text((ROOT / "slurm/profiles/local.yaml").read_text() + "max_requeues: 0\n")
    run = tmp_path / "run"
    args = _launch_args(run, mnist_shards, "--wait", "train.steps=1500", "train.ckpt_every=100000",
                        "log.every=20", "log.sample_every=100000")
    args[args.index("--profile") + 1] = str(profile)
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=cluster, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_step(run, 40, proc)
        subprocess.run(["scancel", "--signal=USR2", read_status(run)["job_id"]], env=cluster, check=True)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "requeue limit reached: 0 of max_requeues=0" in out, out
    st = read_status(run)
    assert st["state"] == "stopped" and st["requeues"] == 0 and st["max_requeues"] == 0
    assert "requeue limit reached" in st["error"] and 40 <= st["step"] < 1500
    assert load_file(resolve_checkpoint(run, "latest"))["step"] == st["step"]  # checkpointed before ending


def _job_state(env, job: str) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], env=env, capture_output=True,
                          text=True).stdout.strip()


def _wait_job_end(env, job: str, timeout: float = 240) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = _job_state(env, job)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state
        time.sleep(1)
    raise AssertionError(f"job {job} did not end in {timeout} s (state {_job_state(env, job)})")


@pytest.mark.timeout(420)
def test_two_nodes_sharing_a_run_dir_never_train_it_at_once(cluster, mnist_shards, tmp_path):
    # both jobs pass every check at submission (nothing runs yet) and start together, one per
    # slurmd "node": the run directory's lock lets one train and stops the other at its start
    run, script = tmp_path / "run", tmp_path / "job.sbatch"
    out = _py(cluster, "-m", "distgan.launch", "--config", str(ROOT / "configs/debug.yaml"), "--profile", "local",
              "--run-dir", str(run), "--emit-sbatch", str(script), f"data.shards={mnist_shards}",
              "log.progress=false", "train.steps=1500", "train.ckpt_every=500", "log.every=50",
              "log.sample_every=100000")
    assert out.returncode == 0, out.stderr
    jobs = {node: subprocess.run(["sbatch", "--parsable", "-w", node, str(script)], env=cluster,
                                 capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
            for node in ("127.0.0.1", "127.0.0.2")}
    states = {node: _wait_job_end(cluster, job) for node, job in jobs.items()}
    assert sorted(states.values()) == ["COMPLETED", "FAILED"], states
    winner = next(n for n, s in states.items() if s == "COMPLETED")
    loser = next(n for n, s in states.items() if s == "FAILED")
    refused = (run / "logs" / "slurm" / f"{jobs[loser]}.out").read_text()
    assert "is in use by a training run: pid" in refused, refused
    assert f"(node {winner}, Slurm job {jobs[winner]})" in refused and f"scancel {jobs[winner]}" in refused
    st = read_status(run)  # the refused job wrote nothing: the status is the winner's own
    assert st["state"] == "completed" and st["job_id"] == jobs[winner] and st["step"] == 1500, st
    logged = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert logged == list(range(50, 1501, 50))  # one history, each step logged once


def _job_processes(job: str) -> list[int]:
    """Live processes whose environment says they belong to Slurm job ``job`` (root reads every environ)."""
    from procs import alive

    mark = f"SLURM_JOB_ID={job}\0".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if (env.startswith(mark) or b"\0" + mark in env) and alive(int(entry)):
                pids.append(int(entry))
    return pids


@pytest.mark.timeout(300)
def test_cancelled_job_leaves_no_process_of_distgan_behind(cluster, mnist_shards, tmp_path):
    from procs import wait_gone

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *_launch_args(run, mnist_shards, "--wait", "train.steps=100000",
                                                          "train.ckpt_every=100000", "log.every=20",
                                                          "data.num_workers=1", "log.sample_every=100000")],
                            cwd=ROOT, env=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_step(run, 40, proc)
        job = read_status(run)["job_id"]
        pids = _job_processes(job)
        pythons = [p for p in pids if b"python" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(pythons) >= 2, pids  # the task and its data-loader worker
        subprocess.run(["scancel", job], env=cluster, check=True)
        left = wait_gone(pids, 60)  # SIGTERM, then SIGKILL after the cluster's KillWait (5 s)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert left == [], f"processes of cancelled job {job} survived: {left}"
    assert _job_processes(job) == []


@pytest.mark.timeout(420)
def test_halving_sweep_runs_its_rungs_as_job_arrays_and_promotes_by_resuming(cluster, mnist_shards, tmp_path):
    sweep = _classifier_sweep(tmp_path, "halving", mnist_shards, 6, {"log.every": 1},
                              grid={"train.lr_d": [1e-4, 2e-3, 5e-3, 2e-2]}, seeds=[0],
                              strategy={"name": "halving", "eta": 2, "min_steps": 3})
    out = _py(cluster, "-m", "distgan.sweep", str(sweep), "--cluster", "slurm", "--profile", "local",
              "--max-parallel", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(re.findall(r"submitted job array", out.stdout + out.stderr)) == 2  # one array per rung
    state = json.loads((tmp_path / "sweep" / "halving.json").read_text())
    assert state["budgets"] == [3, 6] and state["steps"] == {"used": 2 * 3 + 2 * 6, "full_grid": 4 * 6}
    fates = sorted(c["fate"] for c in state["cells"].values())
    assert fates == ["completed", "completed", "pruned at rung 1", "pruned at rung 1"]
    for cell in state["cells"].values():
        run = tmp_path / "sweep" / "runs" / cell["runs"][0]
        st, log = read_status(run), (run / "logs" / "rank0.log").read_text()
        if cell["fate"] == "completed":  # promoted: resumed from its rung-1 checkpoint, not started again
            assert st["state"] == "completed" and st["step"] == 6 and "resumed from step 3 of 6" in log
        else:
            assert st["state"] == "paused" and st["step"] == 3 and "resumed from" not in log
    assert "## Successive halving" in (tmp_path / "sweep" / "results.md").read_text()
