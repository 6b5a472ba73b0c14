from pathlib import Path

import pytest
import yaml

from hybridmednet.config.loader import apply_overrides, load_config, parse_override, save_config
from hybridmednet.config.schema import ExperimentConfig
from hybridmednet.errors import ConfigError

PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
RAW = {"name": "x", "data": {"source": {"kind": "medmnist", "flag": "dermamnist"}}}


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_validates(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name == preset.stem or preset.stem.startswith("demo")


def test_presets_cover_every_shared_dataset():
    names = {p.stem for p in PRESETS}
    assert {"dermamnist", "pneumoniamnist", "breastmnist", "adrenalmnist3d", "chest_xray", "ham10000"} <= names


def test_overrides_are_parsed_as_yaml():
    assert parse_override("train.epochs=30") == (["train", "epochs"], 30)
    assert parse_override("model.kwargs={widths: [8, 16]}") == (["model", "kwargs"], {"widths": [8, 16]})
    cfg = load_config(raw=RAW, overrides=["train.epochs=7", "train.ema=false", "data.augment=none"])
    assert (cfg.train.epochs, cfg.train.ema, cfg.data.augment) == (7, False, "none")


def test_overrides_do_not_mutate_input():
    apply_overrides(RAW, ["train.epochs=3"])
    assert "train" not in RAW


@pytest.mark.parametrize("override, expected", [
    ("train.epoch=3", "unknown config key 'train.epoch'; valid keys here: epochs, lr"),
    ("train.epochs=abc", "config key 'train.epochs'"),
    ("data.source.flg=x", "unknown config key 'data.source.flg'; valid keys here: kind, root, flag"),
    ("data.augment=heavy", "'auto', 'none', 'light', 'medium' or 'strong'"),
    ("data.source.kind=zip", "'medmnist', 'folder', 'csv'"),
    ("model.drop_rate=2", "config key 'model.drop_rate'"),
    ("bogus=1", "unknown config key 'bogus'"),
])
def test_errors_name_the_key_and_choices(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(raw=RAW, overrides=[override])
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="train.epochs is a value"):
        load_config(raw=RAW, overrides=["train.epochs=3", "train.epochs.x=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_data_root_placeholder_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDMEDNET_DATA", str(tmp_path))
    cfg = load_config(raw=RAW)
    assert cfg.data.source.root == str(tmp_path / "medmnist")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(raw=RAW, overrides=["train.epochs=4"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["epochs"] == 4
