"""log.trackers: W&B (offline mode, local files) and MLflow (file store) receive what TensorBoard does.

Values are read back from what the libraries wrote: W&B's transaction log
(``run-ID.wandb``, a LevelDB-style log of protobuf records) and MLflow's
client over the file store.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from distgan.config import ConfigError, load_config
from distgan.train import train
from distgan.train.logger import RunLogger
from distgan.train.trackers import check_available

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def wandb_log(run_dir: Path) -> tuple[list[dict], dict]:
    """(history rows, config) of every offline W&B run in ``run_dir``, in file order."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows, config = [], {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, chunks = path.read_bytes(), 7, b""  # 7: the ':W&B' file header
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:  # a block's tail too short for a record header is padding
                pos += left
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if length == 0 and kind == 0:
                pos += left
                continue
            chunks = (b"" if kind in (1, 2) else chunks) + data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a full record, or the last fragment of one
                rec = pb.Record()
                rec.ParseFromString(chunks)
                which = rec.WhichOneof("record_type")
                if which == "history":
                    rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                 for i in rec.history.item})
                elif which == "config":
                    config.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                   for i in rec.config.update})
    return rows, config


def mlflow_run(run_dir: Path):
    import mlflow

    client = mlflow.tracking.MlflowClient((run_dir / "mlruns").resolve().as_uri())
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    return client, client.get_run(run_id)


def _cfg(shards, *extra):
    return load_config(ROOT / "configs" / "debug.yaml",
                       [f"data.shards={shards}", "log.progress=false", "log.trackers=[tensorboard,wandb,mlflow]",
                        "train.steps=10", "log.every=5", "log.sample_every=10", "train.ckpt_every=10", *extra])


def test_training_logs_scalars_images_and_config_to_wandb_and_mlflow(mnist_shards, tmp_path):
    run = tmp_path / "run"
    train(_cfg(mnist_shards), run)
    stats = {r["step"]: r for r in map(json.loads, (run / "stats.jsonl").read_text().splitlines())}
    assert sorted(stats) == [5, 10]

    rows, config = wandb_log(run)
    by_step = {}
    for r in rows:
        by_step.setdefault(r["_step"], {}).update(r)
    for step in (5, 10):
        for key in ("loss_d", "loss_g", "d_real", "images_per_s"):
            assert by_step[step][key] == pytest.approx(stats[step][key], rel=1e-6)
    assert by_step[10]["samples/_type"] == "images/separated"
    png = next(run.glob("wandb/offline-run-*/files/" + by_step[10]["samples/filenames"][0]))
    assert png.stat().st_size > 0
    assert config["train.steps"] == 10 and config["model.arch"] == "dcgan" and config["dist.world_size"] == 1

    client, mr = mlflow_run(run)
    hist = client.get_metric_history(mr.info.run_id, "loss_d")
    assert [(m.step, m.value) for m in hist] == [(s, pytest.approx(stats[s]["loss_d"], rel=1e-6)) for s in (5, 10)]
    assert mr.data.params["train.steps"] == "10" and mr.data.params["model.cond"] == "channels"
    images = [a.path for a in client.list_artifacts(mr.info.run_id, "images")]
    assert any("samples" in p and "step+10" in p and p.endswith(".png") for p in images)

    # re-running the same run directory continues the same tracker runs
    ids = json.loads((run / "trackers.json").read_text())
    train(_cfg(mnist_shards, "train.steps=15"), run)
    assert json.loads((run / "trackers.json").read_text()) == ids
    client, mr = mlflow_run(run)
    assert [m.step for m in client.get_metric_history(mr.info.run_id, "loss_d")] == [5, 10, 15]
    # MLflow params are write-once: the first value stays, the change is a tag
    assert mr.data.params["train.steps"] == "10" and mr.data.tags["changed_on_resume.train.steps"] == "15"
    assert {p.name.rsplit("-", 1)[1] for p in run.glob("wandb/offline-run-*")} == {ids["wandb"]}
    assert 15 in {r["_step"] for r in wandb_log(run)[0] if "loss_d" in r}


def test_metric_records_reach_both_trackers_with_provenance(debug_cfg, tmp_path):
    cfg = debug_cfg("log.trackers=[wandb,mlflow]")
    run = tmp_path / "run"
    run.mkdir()
    old = {"step": 5, "name": "fid", "value": 99.0, "provenance": {"metric": "fid"}}
    (run / "metrics.jsonl").write_text(json.dumps(old) + "\n")  # from before a resume: not sent again
    log = RunLogger(run, cfg, enabled=True)
    assert log.tb is None  # tensorboard not in the list
    log.start(0, 20)
    record = {"step": 20, "name": "classifier_fd", "value": 1.25, "lower_is_better": True,
              "provenance": {"metric": "classifier_fd", "feature_extractor": "mnist-cnn", "num_fake": 1000,
                             "weights_sha256": "ab" * 32, "seed": 0}}
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n" + '{"step": 20, "na')  # a line still being written
    log.metric_records()
    log.close()

    rows, _ = wandb_log(run)
    sent = [r for r in rows if "metric_records/classifier_fd" in r or "metrics/classifier_fd" in r]
    merged = {k: v for r in sent for k, v in r.items()}
    assert merged["metrics/classifier_fd"] == 1.25 and merged["_step"] == 20
    assert json.loads(merged["metric_records/classifier_fd"]) == record
    assert not any("metrics/fid" in r for r in rows)

    import mlflow

    client, mr = mlflow_run(run)
    history = client.get_metric_history(mr.info.run_id, "metrics/classifier_fd")
    assert [(m.step, m.value) for m in history] == [(20, 1.25)]
    stored = mlflow.artifacts.load_dict(f"{mr.info.artifact_uri}/metric_records/classifier_fd-step00000020.json")
    assert stored == record


def test_unknown_tracker_is_a_config_error_naming_the_key(mnist_shards):
    with pytest.raises(ConfigError, match=r"log.trackers.*'neptune'.*'tensorboard', 'wandb', 'mlflow'"):
        _cfg(mnist_shards, "log.trackers=[tensorboard,neptune]")


def test_missing_tracker_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ImportError, match=r"'mlflow'.*pip install 'distgan\[trackers\]'"):
        check_available(["tensorboard", "wandb", "mlflow"])
