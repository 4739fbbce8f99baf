"""GPU requests without --profile: the site's default profile, GPUs discovered from Slurm's GRES,
and a warning before a GPU-shaped preset goes out as a CPU job.

The cluster tests start a SECOND real local Slurm cluster (own base dir and ports,
so the shared one is untouched) whose two nodes declare 4 GPUs each as GRES
(stand-in device files: no GPU is needed to schedule GPU requests), and stop it
(purged) afterwards.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from distgan.launch import site
from distgan.launch.site import GpuDiscovery, cpu_job_warning, discover_gpus, gres_gpus

ROOT = Path(__file__).resolve().parents[1]
DOGS = ROOT / "configs" / "dogs_dcgan.yaml"


@pytest.mark.parametrize("gres, want", [("gpu:4", 4), ("gpu:a100:8(S:0-1)", 8), ("gpu:a100:8(S:0-1),tmpdisk:100", 8),
                                        ("gpu:a100:2,gpu:v100:2", 4), ("(null)", 0), ("tmpdisk:100", 0),
                                        ("mps:100", 0)])
def test_gres_strings(gres, want):
    assert gres_gpus(gres) == want


def _fake_sinfo(text: str):
    def run(cmd, **kw):
        assert cmd[:2] == ["sinfo", "-h"]
        return subprocess.CompletedProcess(cmd, 0, stdout=text, stderr="")
    return run


def test_discovery_uses_the_default_partition_and_lists_others():
    sinfo = _fake_sinfo("cpu*|(null)\ngpu|gpu:a100:8(S:0-1)\nmixed|gpu:4\nmixed|(null)\n")
    assert discover_gpus("", run=sinfo) == GpuDiscovery(0, "cpu", {"gpu": 8})
    assert discover_gpus("gpu", run=sinfo) == GpuDiscovery(8, "gpu", {})
    assert discover_gpus("mixed", run=sinfo).gpus_per_node == 0  # not every node could host 4 ranks
    assert discover_gpus("nope", run=sinfo) == GpuDiscovery(0, "", {"gpu": 8})


def test_default_profile_from_env_then_default_yaml(monkeypatch, tmp_path):
    monkeypatch.setattr(site, "PROFILE_DIR", tmp_path)
    monkeypatch.delenv(site.PROFILE_ENV, raising=False)
    assert site.default_profile() is None
    (tmp_path / "default.yaml").write_text("gpus_per_node: 2\n")
    assert site.default_profile() == "default"
    monkeypatch.setenv(site.PROFILE_ENV, "mysite")
    assert site.default_profile() == "mysite"


def test_cpu_job_warning_names_partitions_that_have_gpus(debug_cfg):
    from distgan.config import load_config
    from distgan.launch.profiles import resolve_resources

    dogs = load_config(DOGS)
    found = GpuDiscovery(0, "cpu", {"gpu": 8})
    text = cpu_job_warning(dogs, resolve_resources({}, nodes=4), "dogs.yaml", found)
    assert text.startswith("dogs.yaml is shaped for GPUs (64x64 images, model width 128)")
    assert "Partitions with GPUs here: gpu (8 per node); pass --partition NAME." in text
    assert cpu_job_warning(dogs, resolve_resources({}, nodes=4, gpus_per_node=8), "dogs.yaml", found) == ""
    assert cpu_job_warning(debug_cfg(), resolve_resources({}, nodes=4), "debug.yaml", found) == ""
    fp16 = load_config(DOGS, ["data.resolution=32", "train.precision=fp16"])
    assert "train.precision=fp16 (CUDA only)" in cpu_job_warning(fp16, resolve_resources({}), "x.yaml", None)


def _launch(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distgan.launch", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop(site.PROFILE_ENV, None)
    env.pop("SLURM_JOB_ID", None)
    env.update(extra)
    return env


def test_gpu_shaped_preset_as_cpu_job_is_named_before_submitting(mnist_shards, tmp_path):
    env = _env(PATH=os.path.dirname(sys.executable) + ":/usr/bin:/bin")  # no sinfo: nothing to discover
    if any(Path(p, "sinfo").exists() for p in env["PATH"].split(":")):
        env["PATH"] = os.path.dirname(sys.executable)
    proc = _launch("--config", str(DOGS), "--nodes", "4", "--emit-sbatch", str(tmp_path / "job.sbatch"),
                   "--run-dir", str(tmp_path / "run"), f"data.shards={mnist_shards}", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {DOGS} is shaped for GPUs (64x64 images, model width 128) but this job requests no GPUs: " \
           "it would train on 1 CPU task(s) per node" in proc.stderr
    assert "--gpus-per-node" not in (tmp_path / "job.sbatch").read_text()


def test_profile_from_environment_variable_requests_its_gpus(mnist_shards, tmp_path):
    env = _env(**{site.PROFILE_ENV: str(ROOT / "slurm" / "profiles" / "example-gpu.yaml")})
    proc = _launch("--config", str(DOGS), "--nodes", "4", "--emit-sbatch", str(tmp_path / "job.sbatch"),
                   "--run-dir", str(tmp_path / "run"), f"data.shards={mnist_shards}", env=env)
    assert proc.returncode == 0, proc.stderr
    script = (tmp_path / "job.sbatch").read_text()
    assert "#SBATCH --gpus-per-node=8" in script and "#SBATCH --partition=gpu" in script
    assert "#SBATCH --ntasks-per-node=8" in script and "warning" not in proc.stderr


# ----------------------------------------------------------------------------- a real GPU-GRES cluster

def _free_ports(n: int) -> int:
    """The first of ``n`` consecutive free TCP ports (the two slurmds take consecutive ones)."""
    import socket

    for start in range(17000, 30000, 7):
        try:
            socks = []
            for port in range(start, start + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports for the test cluster")


def _cluster_env(base: Path) -> dict:
    port = _free_ports(3)
    return _env(SLURM_CONF=str(base / "etc" / "slurm.conf"), DISTGAN_SLURM_BASE=str(base),
                DISTGAN_SLURM_PORT=str(port), DISTGAN_SLURMD_PORT=str(port + 1), DISTGAN_SLURM_GPUS="4",
                DISTGAN_SLURM_CPUS="8",
                PATH=f"{ROOT / 'slurm' / 'local-cluster' / 'bin'}:{os.environ['PATH']}")


@pytest.fixture(scope="module")
def gpu_cluster():
    if os.geteuid() != 0:
        pytest.fail("the GPU-GRES test cluster needs root (slurmd starts job steps as other users)")
    base = Path(tempfile.mkdtemp(prefix="dg-gres-", dir="/tmp"))
    env = _cluster_env(base)
    script = ROOT / "slurm" / "local-cluster"
    subprocess.run(["bash", str(script / "start.sh")], env=env, check=True, timeout=300, capture_output=True)
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script / "stop.sh"), "--purge"], env=env, timeout=120, capture_output=True)


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_emitted_script_requests_the_gres_gpus_and_slurm_accepts_it(gpu_cluster, mnist_shards, tmp_path):
    job = tmp_path / "job.sbatch"
    proc = _launch("--config", str(DOGS), "--nodes", "2", "--emit-sbatch", str(job), "--run-dir",
                   str(tmp_path / "run"), f"data.shards={mnist_shards}", env=gpu_cluster)
    assert proc.returncode == 0, proc.stderr
    assert "[launch] partition debug has 4 GPU(s) per node (Slurm GRES): requesting them" in proc.stdout
    assert "warning" not in proc.stderr
    script = job.read_text()
    assert "#SBATCH --gpus-per-node=4" in script and "#SBATCH --ntasks-per-node=4" in script
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["dist"]["expect_world_size"] == 8
    # the controller checks the request against the nodes' GRES without running anything
    test = subprocess.run(["sbatch", "--test-only", str(job)], env=gpu_cluster, capture_output=True, text=True,
                          timeout=60)
    assert "to start at" in test.stderr and "127.0.0.[1-2]" in test.stderr, test.stderr


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_submitted_job_carries_the_gpu_request(gpu_cluster, mnist_shards, tmp_path):
    proc = _launch("--config", str(DOGS), "--nodes", "2", "--cluster", "slurm", "--run-dir", str(tmp_path / "run"),
                   f"data.shards={mnist_shards}", "train.steps=1", env=gpu_cluster)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    job_id = re.search(r"\b(\d+)\b", proc.stdout.split("world size 8", 1)[1]).group(1)
    try:
        show = subprocess.run(["scontrol", "show", "job", job_id], env=gpu_cluster, capture_output=True, text=True,
                              timeout=30).stdout
        assert "NumNodes=2" in show and re.search(r"TresPerNode=gres:gpu:4", show), show
        assert "ntasks-per-node=4" in show.replace("NtasksPerN:B:S:C=4", "ntasks-per-node=4"), show
    finally:
        subprocess.run(["scancel", job_id], env=gpu_cluster, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # let the cancelled job leave the nodes before the cluster stops
            state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=gpu_cluster,
                                   capture_output=True, text=True, timeout=30).stdout.strip()
            if not state or state in ("CANCELLED", "COMPLETED", "FAILED"):
                break
            time.sleep(0.5)  # polling Slurm's queue, not standing in for synchronisation
