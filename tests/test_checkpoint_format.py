"""Checkpoints written by earlier versions of distgan keep loading.

``tests/fixtures/run_format1`` is a complete run directory (config.yaml,
data_info.json, one checkpoint) written by the trainer whose checkpoint is a flat
mapping (``G``, ``D``, ``ema``, ``opt_d``/``opt_g``, ``sched_*``, ``scaler_*``,
``data``, ``rng``, ``step``, ...): a 2-step debug run (width 4, z 8, batch 4, EMA)
on the embedded MNIST shards. ``expected_samples.npz`` holds what its EMA generator
drew then (10 images, seed 3).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

import distgan
from distgan.checkpoint import load_file
from distgan.config import load_config
from distgan.rundir import config_path, resolve_checkpoint

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_format1"


def test_a_format1_run_samples_what_it_sampled_when_written():
    G, info = distgan.load_generator(FIXTURE)
    images = distgan.generate(G, info, 10, seed=3)
    expected = np.load(FIXTURE / "expected_samples.npz")["images"]
    assert images.shape == expected.shape == (10, 16, 16, 1) and images.dtype == expected.dtype
    # another CPU may round a convolution's last bit differently: a pixel may move by one level
    diff = np.abs(images.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_a_format1_checkpoint_resumes_where_it_stopped(mnist_shards, tmp_path, caplog):
    from distgan.train import train

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    cfg = load_config(config_path(run), [f"data.shards={mnist_shards}", "train.steps=4"])
    with caplog.at_level(logging.INFO, logger="distgan"):
        summary = train(cfg, run)
    text = caplog.text
    assert summary["step"] == 4 and summary["completed"]
    assert "resumed from step 2 of 4" in text
    assert "new RNG streams" not in text  # the RNG streams continued
    # its data position counts per-rank batches of the stream before lanes: that epoch restarts, said once
    assert "data stream changed since the checkpoint (global_batch: none -> 4, lanes: none -> 4)" in text
    state = load_file(resolve_checkpoint(run, "latest"))
    assert state["step"] == 4 and state["data"]["batches"] == 2 and state["data"]["lanes"] == 4
    adam_steps = {int(s["step"]) for s in state["opt_g"]["state"].values()}
    assert adam_steps == {4}  # the optimizer continued its moments (a fresh one would count 2)


def test_a_format1_run_exports(tmp_path):
    from distgan.export import main as export_main

    out = tmp_path / "g.safetensors"
    assert export_main(["--run", str(FIXTURE), "--format", "safetensors", "--out", str(out)]) == 0
    G, info = distgan.load_generator(out)
    expected = np.load(FIXTURE / "expected_samples.npz")["images"]
    diff = np.abs(distgan.generate(G, info, 10, seed=3).astype(int) - expected.astype(int))
    assert diff.max() <= 1
