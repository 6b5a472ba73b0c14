"""The CLI: one-line errors with exit status 2, and a train -> evaluate -> predict round trip."""

import json
import subprocess
import sys

import yaml

from hybridmednet.cli.main import main
from tests.conftest import tiny_config


def test_config_typo_is_one_line_exit_2(capsys):
    assert main(["train", "--config", "dermamnist", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'train.epoch'" in err


def test_missing_run_and_config(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    assert "small_cnn" in capsys.readouterr().out.split()


def test_train_evaluate_predict_round_trip(tiny_npz, tmp_path, capsys):
    cfg = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--quiet"]) == 0
    run = tmp_path / "runs" / "tiny"
    assert main(["evaluate", str(run), "--split", "test", "--n-bootstrap", "20"]) == 0
    assert "test" in json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "hybridmednet", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout
