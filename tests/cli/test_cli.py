"""The CLI: one-line errors with exit status 2, and a train -> evaluate -> predict round trip."""

import json
import subprocess
import sys

import pytest
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
    assert main(["train", "--config", str(tmp_path)]) == 2  # a folder given as --config: one line, no traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder, not a config file" in err and f"--data {tmp_path}" in err


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


def test_train_straight_from_an_image_folder(image_folder, tmp_path, capsys):
    """``train --data FOLDER``: source, classes, channels and size inferred, printed, saved in the run."""
    args = ["train", "--data", str(image_folder), "--quiet", "--set", f"output_dir={tmp_path / 'runs'}",
            "--set", "train.epochs=1", "--set", "data.cache=false", "--set", "eval.n_bootstrap=10"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "inferred data: folder source" in err and "inferred classes (2): a (12), b (12)" in err
    assert "inferred image size: 28 px" in err and "inferred channels: 3" in err
    saved = yaml.safe_load((tmp_path / "runs" / "folder" / "config.yaml").read_text())
    assert saved["data"]["source"] == {**saved["data"]["source"], "kind": "folder", "root": str(image_folder)}
    assert saved["data"]["image_size"] == 28 and saved["data"]["channels"] == 3


def test_train_takes_config_or_data_not_both(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", "x", "--config", "dermamnist"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_distill_trains_a_student_from_the_command_line(trained_run, tmp_path, capsys):
    cfg = tiny_config(trained_run.parent.parent, tmp_path / "runs", epochs=1)
    cfg["name"] = "student"
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--teacher", str(trained_run), "--method", "kd:temperature=2",
                 "--method", "fitnet:weight=0.5,student_layer=stages.2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["distill"]["methods"] == ["kd", "fitnet"] and summary["distill"]["weights"] == [1.0, 0.5]
    saved = yaml.safe_load((tmp_path / "runs" / "student" / "config.yaml").read_text())
    assert saved["train"]["distill"]["methods"][0] == {"name": "kd", "weight": 1.0, "temperature": 2}
    assert main(["distill", "--config", str(path), "--teacher", str(trained_run), "--method", "kd:temperature"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
