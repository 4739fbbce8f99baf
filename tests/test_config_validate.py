"""Combinations no run can train with are refused when the config is loaded.

``load_config`` runs ``Config.validate`` (model, data, engine); the launchers also check the
metrics against their registry (``check_run_config``). Each refusal is one ConfigError line
naming the key, and the command-line tools refuse such a config before a run directory, a
process or a job exists.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distgan.config import Config, ConfigError, load_config, set_key
from distgan.launch.common import check_run_config

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"  # dcgan, model.cond=channels, 16 px

REFUSED = [  # overrides on debug.yaml -> (the key the message names, words it must contain)
    (["model.cond=multilabel", "model.cond_d=acgan"], "model.cond_d", ["'acgan'", "not classes"]),
    (["model.arch=pix2pix", "model.cond=projection"], "model.cond", ["'projection'", "source image"]),
    (["model.arch=pix2pix", "model.cond=none", "model.cond_norm=true"], "model.cond_norm", ["pix2pix"]),
    (["data.resolution=30"], "data.resolution", ["model.arch=dcgan", "got 30"]),
    (["model.arch=upsample", "data.resolution=9"], "data.resolution", ["model.arch=upsample"]),
    (["model.arch=pix2pix", "model.cond=none", "data.resolution=24"], "data.resolution", ["power of two"]),
    (["model.arch=mlp", "model.norm=instance"], "model.norm", ["'instance'", "mlp"]),
    (["model.arch=mlp", "model.norm=none", "model.norm_d=instance"], "model.norm_d", ["mlp"]),
    (["model.arch=mlp", "model.cond=multilabel"], "model.cond", ["'multilabel'", "label branch"]),
    (["model.cond_norm=true", "model.norm=none"], "model.norm", ["categorical BN"]),
    (["model.cond=cbn", "model.norm_g=none"], "model.norm_g", ["categorical BN"]),
    (["data.attributes=[Male,Smiling,Male]"], "data.attributes", ["Male repeated"]),
    (["model.cond=multilabel", "data.attributes=[a,b,c,d,e,f,g,h,i]"], "data.attributes", ["at most 8"]),
    (["train.engine=deepspeed", "train.precision=fp16"], "train.precision", ["'fp16'", "deepspeed"]),
    (["train.sync_free=true"], "train.sync_free", ["fused_adam=False"]),
    (["train.sync_free=true", "train.fused_adam=true", "train.engine=deepspeed"], "train.sync_free",
     ["engine=deepspeed"]),
    (["train.reuse_fakes=true", "train.n_critic=2", "train.grad_accum=2"], "train.reuse_fakes",
     ["train.n_critic=2, train.grad_accum=2"]),
    (["train.reuse_fakes=true", "model.arch=pix2pix", "model.cond=none"], "train.reuse_fakes",
     ["model.arch=pix2pix"]),
    (["train.r1_gamma=1", "train.compile=true"], "train.r1_gamma", ["double backward", "train.compile=True"]),
    (["train.r1_gamma=1", "train.engine=deepspeed", "train.precision=fp16"], "train.precision", ["deepspeed"]),
    (["train.r1_gamma=1", "train.engine=deepspeed"], "train.r1_gamma", ["train.engine=deepspeed"]),
    (["train.r1_gamma=1", "train.precision=fp16"], "train.r1_gamma", ["train.precision=fp16"]),
]


@pytest.mark.parametrize("overrides, key, words", REFUSED, ids=[" ".join(o) for o, _, _ in REFUSED])
def test_refusal_is_one_line_naming_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as e:
        load_config(DEBUG, overrides)
    msg = str(e.value)
    assert msg.startswith(f"config key '{key}': ") and "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


OWNED_NAMES_REFUSED = [  # overrides on debug.yaml -> words the message must contain (the key first)
    (["metrics.names=[fdi]"], ["metrics.names", "'fdi'", "fid, classifier"]),
    (["metrics.names=[fid]", "metrics.main=kid"], ["metrics.main", "'kid'", "fid"]),
    (["metrics.names=[classifier]", "metrics.main=classifier_acc/Male"], ["metrics.main", "classifier_acc"]),
    (["metrics.main=fid"], ["metrics.main", "metrics.names is empty"]),
    (["metrics.names=[fid,intra_fid]", "model.cond=none"], ["metrics.names", "intra_fid", "model.cond=none"]),
    (["metrics.names=[intra_fid]", "model.cond=multilabel", "model.cond_norm=true"],
     ["metrics.names", "intra_fid", "class-conditional"]),
    (["train.stop_on=[mode_colapse]"], ["train.stop_on", "'mode_colapse'", "mode_collapse"]),
]


@pytest.mark.parametrize("overrides, words", OWNED_NAMES_REFUSED, ids=[" ".join(o) for o, _ in OWNED_NAMES_REFUSED])
def test_launchers_refuse_names_their_owners_do_not_offer(overrides, words):
    cfg = load_config(DEBUG, overrides)  # the config alone is fine: the names are the registry's (or health's)
    with pytest.raises(ConfigError) as e:
        check_run_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.index(words[0]) < msg.index(words[1]), msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("overrides", [
    ["metrics.names=[classifier,kid]", "metrics.main=classifier"],  # a config name: its first record
    ["metrics.names=[classifier]", "metrics.main=classifier_acc"],
    ["metrics.names=[precision_recall]", "metrics.main=recall"],
    ["metrics.names=[intra_fid]", "model.cond=projection"],
    ["model.arch=mlp", "model.cond=multilabel", "model.cond_g=embed_concat", "model.norm=none"],
    ["model.arch=pix2pix", "model.cond=none", "data.resolution=32"],
    ["model.arch=upsample", "data.resolution=28"],
    ["data.resolution=28"],  # dcgan 7 * 2^2
    ["train.engine=deepspeed", "train.precision=bf16"],
    ["train.sync_free=true", "train.fused_adam=true"],
    ["train.reuse_fakes=true"],
    ["train.r1_gamma=10", "train.precision=bf16", "train.reuse_fakes=true"],
    ["train.stop_on=[mode_collapse,d_win]"],
    # devices are the ranks' business: a login node without CUDA loads a config for a GPU job
    ["train.precision=fp16"],
])
def test_possible_combinations_load(overrides):
    cfg = load_config(DEBUG, overrides)
    assert check_run_config(cfg) is cfg


def test_a_config_built_in_code_is_checked_by_validate():
    cfg = Config()
    assert cfg.validate() is cfg
    cfg.data.resolution = 30
    with pytest.raises(ConfigError, match="data.resolution"):
        cfg.validate()


@pytest.mark.parametrize("overrides", [
    ["model.cond=multilabel", "model.cond_d=acgan"],
    ["model.arch=pix2pix", "model.cond=projection"],
    ["data.resolution=30"],
    ["model.arch=upsample", "data.resolution=9"],
    ["model.arch=mlp", "model.norm=instance"],
    ["model.arch=mlp", "model.cond=multilabel"],
    ["model.cond_norm=true", "model.norm=none"],
])
def test_the_model_builders_refuse_what_validate_refuses(overrides):
    """validate checks the builders' own rules early: building the same models fails too."""
    from distgan.models import DataInfo, build_models

    cfg = Config()
    for text in ["data.resolution=16", *overrides]:
        key, value = text.split("=", 1)
        set_key(cfg, key, yaml.safe_load(value))  # set_key checks each field; validate is not run
    with pytest.raises(ConfigError):
        cfg.validate()
    info = DataInfo(channels=1, resolution=cfg.data.resolution, num_classes=10, attributes=["Male", "Smiling"])
    with pytest.raises(ValueError):
        build_models(cfg.model, info)


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.timeout(120)
def test_launch_refuses_an_unknown_metric_before_the_run_dir_exists(tmp_path):
    # one error line (exit 2) and nothing written: no run directory, no process, no job
    run_dir = tmp_path / "D"
    proc = subprocess.run([sys.executable, "-m", "distgan.launch", "--config", str(DEBUG), "metrics.names=[fdi]",
                           "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "metrics.names" in _one_error_line(proc.stderr) and "'fdi'" in proc.stderr
    assert not run_dir.exists()


@pytest.mark.timeout(120)
def test_sweep_refuses_a_variant_with_an_unknown_metric_before_writing(tmp_path):
    out = tmp_path / "sweep"
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "bad", "base": str(DEBUG), "overrides": {"train.steps": 2},
        "variants": {"ok": {"metrics.names": ["classifier"]}, "typo": {"metrics.names": ["fdi"]}},
        "metric": "classifier_fd", "lower_is_better": True, "out": str(out)}))
    proc = subprocess.run([sys.executable, "-m", "distgan.sweep", str(sweep), "--cluster", "local"],
                          capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "variant=typo" in line and "metrics.names" in line and "'fdi'" in line
    assert not out.exists()


@pytest.mark.timeout(120)
def test_fp16_without_cuda_is_refused_by_the_preflight_not_by_the_config(tmp_path):
    # a login node without GPUs loads the config of a GPU job: the device is the ranks' to check
    assert load_config(DEBUG, ["train.precision=fp16"]).train.precision == "fp16"
    proc = subprocess.run([sys.executable, "-m", "distgan.launch", "--config", str(DEBUG), "--cluster", "local",
                           "--check", "--run-dir", str(tmp_path / "run"), "train.precision=fp16"],
                          capture_output=True, text=True, timeout=100, cwd=tmp_path,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "preflight FAILED" in out, out
    assert "rank 0 on " in out and "train.precision=fp16 needs a CUDA device" in out
