import logging
from pathlib import Path

import pytest
import yaml

from distgan.config import Config, ConfigError, config_hash, config_to_dict, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_preset_and_overrides_are_typed():
    cfg = load_config(ROOT / "configs" / "debug.yaml",
                      ["train.lr_d=5e-4", "model.z_dim=64", "train.ema=true", "metrics.names=[fid,kid]",
                       "model.cond=none"])
    assert cfg.train.lr_d == 5e-4 and isinstance(cfg.train.lr_d, float)
    assert cfg.model.z_dim == 64 and cfg.train.ema is True
    assert cfg.metrics.names == ["fid", "kid"]
    assert cfg.model.cond == "none"
    assert cfg.data.resolution == 16  # from the preset


def test_round_trip_reproduces_config(tmp_path):
    cfg = load_config(ROOT / "configs" / "mnist_cdcgan.yaml", ["train.lr_g=1e-3", "data.attributes=[Male]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)


@pytest.mark.parametrize("override, words", [
    ("train.foo=1", ["train.foo", "unknown", "lr_d"]),
    ("nosection.x=1", ["nosection.x", "unknown", "train"]),
    ("train.lr_d=fast", ["train.lr_d", "'fast'", "number"]),
    ("train.steps=0", ["train.steps", "0", ">= 1"]),
    ("train.steps=2.5", ["train.steps", "2.5", "integer"]),
    ("model.cond=rainbow", ["model.cond", "rainbow", "'channels'"]),
    ("train.ema=maybe", ["train.ema", "maybe", "boolean"]),
    ("model.dropout=1.5", ["model.dropout", "1.5", "<= 1.0"]),
    ("train", ["not of the form key=value"]),
    ("train=3", ["section"]),
])
def test_bad_overrides_name_key_value_and_expectation(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"batch_size": "many"}}))
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "bad.yaml" in str(e.value) and "train.batch_size" in str(e.value) and "integer" in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_field_has_a_doc():
    import dataclasses

    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            assert f.metadata.get("doc"), f"{section.name}.{f.name} has no doc"


def test_old_config_with_retired_data_channels_loads(tmp_path, caplog):
    """A config.yaml written by a version that still had ``data.channels`` loads; the key is ignored."""
    old = config_to_dict(Config())
    old["data"]["channels"] = 3
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="distgan.config"):
        cfg = load_config(path)
    assert cfg == Config() and not hasattr(cfg.data, "channels")
    assert "'data.channels'" in caplog.text and "no longer used" in caplog.text
