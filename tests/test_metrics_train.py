"""Metrics inside training (metrics.jsonl, TensorBoard, best checkpoint) and the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distgan.metrics.__main__ import main
from distgan.rundir import METRICS, read_jsonl


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, mnist_shards):
    """A 6-step debug run evaluated at steps 3 and 6 with the classifier metric."""
    from distgan.config import load_config
    from distgan.train import train

    cache = tmp_path_factory.getbasetemp() / "metrics_cache"
    cache.mkdir(exist_ok=True)
    run_dir = tmp_path_factory.mktemp("runs") / "metrics_run"
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml", [
        f"data.shards={mnist_shards}", "log.progress=false", "train.steps=6", "train.ckpt_every=4",
        "train.ema=true", "metrics.names=[classifier]", "metrics.every=3", "metrics.num_fake=100",
        "metrics.num_real=500", f"metrics.cache_dir={cache}"])
    train(cfg, run_dir)
    return run_dir, cache


@pytest.mark.timeout(300)
def test_loop_writes_records_tensorboard_and_best(trained_run):
    from distgan.rundir import resolve_checkpoint

    run_dir, _ = trained_run
    recs = read_jsonl(run_dir / METRICS)
    assert [(r["step"], r["name"]) for r in recs] == [(3, "classifier_fd"), (3, "classifier_acc"),
                                                      (6, "classifier_fd"), (6, "classifier_acc")]
    for r in recs:
        assert r["ema"] is True and r["provenance"]["num_fake"] == 100
        assert r["provenance"]["num_real"] == (500 if r["name"] == "classifier_fd" else 0)  # acc: no real images
        assert r["provenance"]["classifier_heldout_accuracy"] > 0.97
    fd = {r["step"]: r["value"] for r in recs if r["name"] == "classifier_fd"}
    best = resolve_checkpoint(run_dir, "best")
    assert best.is_file()
    assert best.name == f"step_{min(fd, key=fd.get):08d}.pt"  # step 3 has no regular checkpoint: saved for best
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    text = (run_dir / "logs" / "rank0.log").read_text()
    assert "step 3 metrics: classifier_fd=" in text and "reference statistics:" in text  # routed to the run log
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("metrics/classifier_fd")] == [3, 6]


@pytest.mark.timeout(300)
def test_a_resume_evaluates_what_the_checkpointed_step_was_due_and_never_recorded(trained_run, tmp_path):
    """A process that dies while evaluating the final step (its checkpoint written first) leaves a run at
    its last step without the final record: the next attempt evaluates it instead of ending without it."""
    import shutil

    from distgan.config import load_config
    from distgan.train import train

    src, _ = trained_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    recs = read_jsonl(run_dir / METRICS)
    final = {r["name"]: r["value"] for r in recs if r["step"] == 6}
    # the process died while evaluating step 6: its checkpoint is there, its records are not
    (run_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in recs if r["step"] != 6))
    cfg = load_config(run_dir / "config.yaml")
    result = train(cfg, run_dir)
    assert result["completed"] and result["step"] == 6
    again = read_jsonl(run_dir / METRICS)
    assert [(r["step"], r["name"]) for r in again] == [(3, "classifier_fd"), (3, "classifier_acc"),
                                                       (6, "classifier_fd"), (6, "classifier_acc")]
    for r in again[2:]:  # the same generator and evaluation seed: the record it would have written
        assert r["value"] == pytest.approx(final[r["name"]], rel=1e-6)
    train(cfg, run_dir)  # nothing missing: resuming a finished run evaluates nothing again
    assert len(read_jsonl(run_dir / METRICS)) == 4


@pytest.mark.timeout(300)
def test_reference_statistics_come_from_metrics_real_shards(trained_run, mnist_shards, tmp_path):
    """metrics.real_shards (a held-out split) is what the training-time metrics compare against."""
    from distgan.config import load_config
    from distgan.shards import write_shards
    from distgan.shards.records import SourceOptions
    from distgan.train import train

    _, cache = trained_run
    held_out = tmp_path / "held_out"  # 240 digits: a count the training shards (5,000) cannot give
    write_shards("mnist-embedded", None, held_out, shard_size=120, opts=SourceOptions(limit=240), progress=False)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml", [
        f"data.shards={mnist_shards}", "log.progress=false", "train.steps=2", "metrics.names=[classifier]",
        "metrics.num_fake=50", f"metrics.real_shards={held_out}",
        f"metrics.cache_dir={cache}"])
    train(cfg, tmp_path / "run")
    fd = [r for r in read_jsonl(tmp_path / "run" / METRICS) if r["name"] == "classifier_fd"]
    assert [r["step"] for r in fd] == [2]
    assert fd[0]["provenance"]["num_real"] == 240  # all of the held-out split (metrics.num_real=0)


@pytest.mark.timeout(300)
def test_cli_evaluates_a_run(trained_run, capsys):
    run_dir, cache = trained_run
    assert main(["classifier", "--run", str(run_dir), "--checkpoint", "best", "--num", "64", "--no-ema"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in out] == ["classifier_fd", "classifier_acc"]
    assert out[0]["ema"] is False and out[0]["provenance"]["num_fake"] == 64
    assert out[0]["provenance"]["checkpoint"].endswith(".pt")
    assert main(["kid", "--run", str(run_dir), "--num", "64", "--kid-features", "classifier", "--append"]) == 0
    kid = json.loads(capsys.readouterr().out.splitlines()[0])
    assert kid["name"] == "kid" and np.isfinite(kid["value"]) and kid["provenance"]["feature_extractor"].startswith(
        "classifier")
    assert read_jsonl(run_dir / METRICS)[-1]["name"] == "kid"
    assert main(["fid", "--run", str(run_dir), "--checkpoint", "99"]) == 2
    assert "checkpoint '99' not found" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_cli_stats_and_fid_with_the_real_inception(trained_run, tmp_path, capsys):
    """Real Inception end to end on a handful of images: stats .npz, then FID against it."""
    from distgan.metrics import load_stats
    from distgan.metrics.inception import PACKAGED_SHA256

    run_dir, _ = trained_run
    out = tmp_path / "ref.npz"
    assert main(["stats", "--shards", _shards(run_dir), "--out", str(out), "--num", "6", "--resolution", "16"]) == 0
    st = load_stats(out)
    assert st["mu"].shape == (2048,) and st["sigma"].shape == (2048, 2048) and int(st["count"]) == 6
    capsys.readouterr()
    assert main(["fid", "--run", str(run_dir), "--num", "6", "--real", str(out)]) == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rec["name"] == "fid" and rec["value"] > 0 and rec["provenance"]["weights_sha256"] == PACKAGED_SHA256
    assert rec["provenance"]["num_real"] == 6 and rec["provenance"]["resize"].startswith("uint8")
    assert rec["provenance"]["inception_backend"] == "onnxruntime"  # the CPU default where it is installed
    assert main(["fid", "--run", str(run_dir), "--num", "6", "--real", str(out), "--inception-backend", "torch"]) == 0
    on_torch = json.loads(capsys.readouterr().out.splitlines()[0])
    assert on_torch["provenance"]["inception_backend"] == "torch"
    assert on_torch["value"] == pytest.approx(rec["value"], rel=1e-3)
    # Inception statistics cannot stand in for the classifier's, nor mu/sigma for KID's features
    assert main(["classifier", "--run", str(run_dir), "--num", "6", "--real", str(out)]) == 2
    assert "statistics come from 'inception_v3_tf2015_pool3'" in capsys.readouterr().err
    assert main(["kid", "--run", str(run_dir), "--num", "6", "--real", str(out)]) == 2
    assert "the metrics kid need the real images' features" in capsys.readouterr().err


def _shards(run_dir) -> str:
    from distgan.config import load_config

    return load_config(run_dir / "config.yaml").data.shards


@pytest.mark.timeout(300)
def test_final_metrics_run_once_at_the_horizon_with_their_own_sample_count(mnist_shards, tmp_path):
    """metrics.final: nothing at a stop_at budget, once at train.steps with metrics.final_num_fake samples beside
    the periodic records, and again on resume when the process died while computing it."""
    from distgan.config import load_config
    from distgan.train import train

    run_dir = tmp_path / "run"
    overrides = [f"data.shards={mnist_shards}", "log.progress=false", "train.steps=4", "train.ckpt_every=2",
                 "metrics.names=[classifier]", "metrics.every=2", "metrics.num_fake=100", "metrics.num_real=500",
                 "metrics.final=[kid]", "metrics.kid_features=classifier", "metrics.final_num_fake=160",
                 f"metrics.cache_dir={tmp_path / 'cache'}"]
    debug = Path(__file__).resolve().parents[1] / "configs" / "debug.yaml"
    assert train(load_config(debug, [*overrides, "train.stop_at=2"]), run_dir)["paused"]
    assert {r["name"] for r in read_jsonl(run_dir / METRICS)} == {"classifier_fd", "classifier_acc"}
    assert train(load_config(debug, overrides), run_dir)["completed"]
    recs = read_jsonl(run_dir / METRICS)
    final = [r for r in recs if r["name"] == "kid"]
    assert [(r["step"], r["provenance"]["num_fake"]) for r in final] == [(4, 160)]
    assert sorted((r["step"], r["provenance"]["num_fake"]) for r in recs if r["name"] == "classifier_fd") == \
        [(2, 100), (4, 100)]
    # the process died while computing the final metrics: the next attempt computes them from step 4
    (run_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in recs if r["name"] != "kid"))
    assert train(load_config(debug, overrides), run_dir)["completed"]
    again = [r for r in read_jsonl(run_dir / METRICS) if r["name"] == "kid"]
    assert len(again) == 1 and again[0]["value"] == pytest.approx(final[0]["value"], rel=1e-6)
    train(load_config(debug, overrides), run_dir)
    assert len(read_jsonl(run_dir / METRICS)) == len(recs)  # nothing missing: nothing evaluated again


@pytest.mark.parametrize("final, words", [
    ("[classifier]", ["metrics.final", "classifier is in both"]),
    ("[fdi]", ["metrics.final", "unknown metric 'fdi'"]),
    ("[intra_fid]", ["metrics.final", "intra_fid", "model.cond=none"]),
])
def test_bad_final_metrics_are_refused_naming_the_key(final, words):
    from distgan.config import ConfigError, load_config
    from distgan.launch.common import check_run_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml",
                      ["metrics.names=[classifier]", f"metrics.final={final}", "model.cond=none"])
    with pytest.raises(ConfigError) as e:
        check_run_config(cfg)
    assert all(w in str(e.value) for w in words), str(e.value)
