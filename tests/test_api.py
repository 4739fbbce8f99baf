"""distgan.load_generator / generate on a short debug run: what the run dir records and what loads."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT

import distgan
from distgan.api import SampleError, generate, load_generator
from distgan.rundir import available_checkpoints, resolve_checkpoint


@pytest.fixture(scope="module")
def run(debug_run):
    """The session's 20-step debug run (tests/conftest.py), shared read-only."""
    return debug_run


def test_trainer_records_data_info(run):
    info = json.loads((run / "data_info.json").read_text())
    assert info["classes"] == [str(i) for i in range(10)]
    assert info["channels"] == 1 and info["resolution"] == 16 and info["normalize"] == "minmax"
    assert len(info["mean"]) == len(info["std"]) == 1 and 0 < info["mean"][0] < 1


def test_load_generator_latest(run):
    G, info = distgan.load_generator(run)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert (info.z_dim, info.channels, info.resolution, info.step) == (16, 1, 16, 20)
    assert info.condition == "classes" and info.classes == [str(i) for i in range(10)] and info.y_dim == 10
    assert info.ema is False and info.checkpoint.endswith("step_00000020.pt")
    assert info.config.model.width == 8
    ref = torch.load(run / "checkpoints" / "step_00000020.pt", weights_only=True)["G"]
    for k, v in G.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_checkpoint_by_step_and_errors(run):
    G10, info10 = load_generator(run, checkpoint=10)
    G20, _ = load_generator(run, checkpoint="latest")
    assert info10.step == 10
    w10, w20 = G10.state_dict()["out.weight"], G20.state_dict()["out.weight"]
    assert not torch.equal(w10, w20)
    assert available_checkpoints(run) == ["latest", "10", "20"]
    assert resolve_checkpoint(run, "20").name == "step_00000020.pt"
    with pytest.raises(SampleError, match=r"checkpoint '7' not found .*available: latest, 10, 20"):
        load_generator(run, checkpoint=7)
    with pytest.raises(SampleError, match="checkpoint 'best' not found"):
        load_generator(run, checkpoint="best")
    with pytest.raises(SampleError, match="holds no EMA weights"):
        load_generator(run, ema=True)
    with pytest.raises(SampleError, match="not a distgan run directory"):
        load_generator(run / "checkpoints")


def test_corrupt_data_info_and_checkpoint_are_named(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "step_00000020.pt").write_bytes(b"not a zip")
    with pytest.raises(SampleError, match=r"step_00000020.pt is unreadable.*available: latest, 10, 20"):
        load_generator(copy)
    (copy / "data_info.json").write_text("{")
    with pytest.raises(SampleError, match="data_info.json is not valid JSON"):
        load_generator(copy, checkpoint=10)


def test_generate_and_bound_sample_agree(run):
    G, info = load_generator(run)
    a = generate(G, info, 12, labels=[1, "2", 3], seed=5)
    b = G.sample(12, labels=[1, 2, 3], seed=5)
    assert a.dtype == np.uint8 and a.shape == (12, 16, 16, 1)
    assert np.array_equal(a, b)


def test_import_distgan_is_light():
    code = "import sys, distgan; assert 'torch' not in sys.modules, 'torch imported'; print(distgan.__all__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "load_generator" in out.stdout


@pytest.mark.timeout(120)
def test_load_in_fresh_process_needs_only_the_run_dir(run, tmp_path):
    """Copy the run elsewhere, point its shards nowhere: a fresh process still loads and samples it,
    without importing the training stack, and gets exactly the images this process gets."""
    copy = tmp_path / "moved_run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["data"]["shards"] = str(tmp_path / "no_such_shards")
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = (
        "import sys, numpy as np, distgan\n"
        f"G, info = distgan.load_generator({str(copy)!r})\n"
        "imgs = distgan.generate(G, info, 20, labels=[0, 9], seed=3)\n"
        f"np.save({str(tmp_path / 'fresh.npy')!r}, imgs)\n"
        "bad = [m for m in sys.modules if m.startswith(('distgan.train', 'distgan.data', 'accelerate'))]\n"
        "assert not bad, bad\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-2000:]
    G, info = load_generator(run)
    assert np.array_equal(np.load(tmp_path / "fresh.npy"), generate(G, info, 20, labels=[0, 9], seed=3))


def test_ema_weights_by_default_when_kept(mnist_shards, tmp_path):
    from distgan.config import load_config
    from distgan.train import train

    cfg = load_config(ROOT / "configs" / "debug.yaml", [f"data.shards={mnist_shards}", "log.progress=false",
                                                        "train.steps=6", "train.ckpt_every=6", "train.ema=true",
                                                        "train.ema_decay=0.5"])
    train(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000006.pt", weights_only=True)
    G, info = load_generator(tmp_path / "run")
    assert info.ema and torch.equal(G.state_dict()["out.weight"], state["ema"]["out.weight"])
    G_raw, info_raw = load_generator(tmp_path / "run", ema=False)
    assert not info_raw.ema and torch.equal(G_raw.state_dict()["out.weight"], state["G"]["out.weight"])
    assert not torch.equal(state["ema"]["out.weight"], state["G"]["out.weight"])


def test_best_pointer(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "best").write_text("step_00000010.pt\n")
    assert available_checkpoints(copy) == ["latest", "best", "10", "20"]
    _, info = load_generator(copy, checkpoint="best")
    assert info.step == 10


def test_broken_config_is_named(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["model"]["no_such_key"] = 1
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SampleError, match=r"cannot read .*config.yaml: unknown config key 'model.no_such_key'"):
        load_generator(copy)
