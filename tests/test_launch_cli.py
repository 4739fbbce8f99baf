"""Launch decisions without starting anything: cluster choice, profiles, Slurm env, sbatch scripts."""
from pathlib import Path

import pytest
import yaml

from distgan.launch.__main__ import LaunchError, choose_cluster, main
from distgan.launch.env import expand_hostlist, job_port, slurm_dist_env
from distgan.launch.profiles import ProfileError, load_profile, resolve_resources
from distgan.launch.sbatch import sbatch_script

ROOT = Path(__file__).resolve().parents[1]


def test_more_than_one_node_without_slurm_is_a_clear_error(capsys, tmp_path):
    with pytest.raises(LaunchError, match="--nodes 2 needs Slurm"):
        choose_cluster("local", 2)
    code = main(["--config", str(ROOT / "configs/debug.yaml"), "--cluster", "local", "--nodes", "2",
                 "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert "--nodes 2 needs Slurm" in capsys.readouterr().err
    assert choose_cluster("local", 1) == "local"


def test_auto_stays_local_inside_a_slurm_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert choose_cluster("auto", 1) == "local"


def test_slurm_env_gives_every_task_the_same_rendezvous(monkeypatch):
    monkeypatch.setattr("distgan.launch.env.expand_hostlist", lambda nl: ["gpu07", "gpu08"])
    base = {"SLURM_NTASKS": "16", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NODELIST": "gpu[07-08]"}
    envs = [slurm_dist_env({**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r % 8)}) for r in (0, 9)]
    assert envs[0]["MASTER_ADDR"] == envs[1]["MASTER_ADDR"] == "gpu07"
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] == str(job_port("4242"))
    assert (envs[1]["RANK"], envs[1]["LOCAL_RANK"], envs[1]["WORLD_SIZE"], envs[1]["LOCAL_WORLD_SIZE"]) == \
        ("9", "1", "16", "8")
    assert slurm_dist_env({}) == {}


def test_hostlist_fallback_parser(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the built-in parser
    assert expand_hostlist("node[01-03,07],login") == ["node01", "node02", "node03", "node07", "login"]


def test_profile_plus_flags_and_bad_keys(tmp_path):
    res = resolve_resources(load_profile("example-gpu"), nodes=4)
    assert (res.nodes, res.gpus_per_node, res.world_size, res.partition) == (4, 8, 32, "gpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"partition": "gpu", "gpus_per_nod": 8}))
    with pytest.raises(ProfileError, match="unknown Slurm setting 'gpus_per_nod'"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="'time_min'.*expected int"):
        resolve_resources({"time_min": "soon"})
    with pytest.raises(ProfileError, match="profile 'nope' not found"):
        load_profile("nope")


def test_emit_sbatch_writes_a_complete_script(tmp_path, capsys):
    script = tmp_path / "job.sbatch"
    code = main(["--config", str(ROOT / "configs/debug.yaml"), "--profile", "example-gpu", "--nodes", "2",
                 "--run-dir", str(tmp_path / "run"), "--emit-sbatch", str(script), "train.steps=5"])
    assert code == 0
    text = script.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --account=my_project", "#SBATCH --qos=normal",
                 "#SBATCH --constraint=a100", "#SBATCH --exclusive", "#SBATCH --signal=USR1@120",
                 "#SBATCH --requeue", "module load cuda/12.4", "-m distgan.launch.worker"):
        assert line in text, line
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 5 and cfg["dist"]["expect_world_size"] == 16
    res = resolve_resources({}, procs_per_node=2)
    assert "#SBATCH --ntasks-per-node=2" in sbatch_script(tmp_path, res, "x")


def test_a_global_batch_the_launched_world_cannot_share_is_refused_before_submitting(tmp_path, capsys):
    script = tmp_path / "job.sbatch"
    code = main(["--config", str(ROOT / "configs/debug.yaml"), "--profile", "example-gpu", "--nodes", "2",
                 "--run-dir", str(tmp_path / "run"), "--emit-sbatch", str(script), "train.global_batch=24"])
    assert code != 0 and not script.exists() and not (tmp_path / "run" / "config.yaml").exists()
    err = capsys.readouterr().err
    assert "train.global_batch" in err and "24 samples cannot be shared equally by 16 ranks" in err
    assert "Traceback" not in err


def test_preempt_signals_reach_the_run_config_and_term_is_refused(tmp_path, capsys):
    from distgan.config import ConfigError, load_config

    profile = tmp_path / "site.yaml"
    profile.write_text("procs_per_node: 2\npreempt_signals: [HUP, USR2]\n")
    script = tmp_path / "job.sbatch"
    assert main(["--config", str(ROOT / "configs/debug.yaml"), "--profile", str(profile), "--run-dir",
                 str(tmp_path / "run"), "--emit-sbatch", str(script)]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["dist"]["stop_signals"] == ["TERM", "USR1", "HUP", "USR2"]  # the ranks of the script stop on them
    with pytest.raises(ProfileError, match="TERM is what Slurm sends on preemption, requeue and cancel alike"):
        resolve_resources({"preempt_signals": ["TERM"]})
    with pytest.raises(ProfileError, match=r"preempt_signals': got 'SIGHUP', expected names from HUP, INT"):
        resolve_resources({"preempt_signals": ["SIGHUP"]})
    with pytest.raises(ConfigError, match=r"dist.stop_signals.*expected a list of signal names from HUP"):
        load_config(ROOT / "configs/debug.yaml", ["dist.stop_signals=[KILL]"]).validate()
