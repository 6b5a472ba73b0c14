"""A sweep on tiny data: one factor at a time, seeds, seed-level intervals, reuse of finished runs."""

import json

import pytest
import yaml

from hybridmednet.cli.main import main
from hybridmednet.errors import ConfigError
from hybridmednet.tune.sweep import parse_vary
from tests.conftest import tiny_config


def test_sweep_varies_one_factor_at_a_time_with_seed_intervals(tiny_npz, tmp_path, capsys):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1)))
    out = tmp_path / "sweep"
    argv = ["sweep", "--config", str(config), "--vary", "train.lr=0.001,0.005", "--vary", "train.label_smoothing=0.0",
            "--seeds", "0,1", "--out", str(out), "--n-bootstrap", "50"]
    assert main(argv) == 0
    record = json.loads((out / "sweep.json").read_text())
    lr = record["factors"]["train.lr"]
    assert [r["value"] for r in lr] == [0.005, 0.001] and lr[0]["is_base"]  # the base value first, shared
    smoothing = record["factors"]["train.label_smoothing"]
    assert [r["value"] for r in smoothing] == [0.1, 0.0]
    assert smoothing[0]["runs"] == lr[0]["runs"]  # one base run per seed for every factor
    for row in lr + smoothing:
        assert row["test_acc_ci95"][0] <= row["test_acc"] <= row["test_acc_ci95"][1]
        assert "seed-mean" in row["test_ci_method"]
        assert row["train_wall_s"] > 0
    assert smoothing[0]["train_wall_s"] == lr[0]["train_wall_s"]  # the shared base runs, counted once each
    assert (out / "sweep_train_lr.png").stat().st_size > 1000
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["base_s0", "base_s1", "train.label_smoothing-0.0_s0", "train.label_smoothing-0.0_s1",
                    "train.lr-0.001_s0", "train.lr-0.001_s1"]
    stamp = (out / "runs" / "base_s0" / "train_summary.json").stat().st_mtime
    assert main(argv) == 0  # a second call reuses every finished run
    assert (out / "runs" / "base_s0" / "train_summary.json").stat().st_mtime == stamp


def test_vary_errors_are_one_line():
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_vary(["train.lr"])
