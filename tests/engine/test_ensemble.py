"""Seed ensembles and flip TTA: the average of the runs' own predictions, refused across data sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hybridmednet.cli.main import main
from hybridmednet.config.loader import load_config
from hybridmednet.engine.ensemble import ensemble_probabilities, evaluate_ensemble
from hybridmednet.engine.evaluate import evaluate_run
from hybridmednet.engine.run_dir import RunDir
from hybridmednet.engine.trainer import train
from hybridmednet.errors import ConfigError
from tests.conftest import tiny_config


def _train(tiny_npz, tmp_path, name, seed, **data):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2) | {"name": name, "seed": seed}
    raw["data"] |= data
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    train(cfg, quiet=True)
    return cfg.run_dir


def _probs_csv(run_dir, split):
    evaluate_run(run_dir, split, n_bootstrap=0)
    lines = (run_dir / f"predictions_{split}.csv").read_text().splitlines()[1:]
    return np.array([[float(v) for v in line.split(",")[2:-1]] for line in lines])


def test_ensemble_is_the_mean_of_the_single_runs(tiny_npz, tmp_path):
    a, b = _train(tiny_npz, tmp_path, "a", 0), _train(tiny_npz, tmp_path, "b", 1)
    probs, part, classes, multilabel, members = ensemble_probabilities([a, b], "test")
    assert [m["checkpoint_sha256"] for m in members] == [RunDir(Path(r)).checkpoint_sha256() for r in (a, b)]
    expected = (_probs_csv(a, "test") + _probs_csv(b, "test")) / 2
    assert probs.shape == (len(part), len(classes)) and not multilabel
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_flip_tta_averages_flipped_inputs(tiny_npz, tmp_path):
    a = _train(tiny_npz, tmp_path, "a", 0)
    plain, *_ = ensemble_probabilities([a], "val")
    flipped, *_ = ensemble_probabilities([a], "val", flips=("none", "h"))
    assert flipped.shape == plain.shape and not np.allclose(flipped, plain)
    np.testing.assert_allclose(flipped.sum(1), 1.0, atol=1e-5)


def test_runs_on_different_data_are_refused(tiny_npz, tmp_path):
    a = _train(tiny_npz, tmp_path, "a", 0)
    b = _train(tiny_npz, tmp_path, "b", 0, image_size=12)
    with pytest.raises(ConfigError, match="image size"):
        evaluate_ensemble([a, b], "test", n_bootstrap=0)


def test_cli_writes_the_ensemble_metrics(tiny_npz, tmp_path, capsys):
    a, b = _train(tiny_npz, tmp_path, "a", 0), _train(tiny_npz, tmp_path, "b", 1)
    out = tmp_path / "ens.json"
    assert main(["evaluate", str(a), str(b), "--split", "val", "--tta", "none,h", "--n-bootstrap", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["runs"] == [str(a), str(b)] and result["flips"] == ["none", "h"] and 0 <= result["metrics"]["acc"] <= 1
    assert str(out) in capsys.readouterr().out


def test_without_clinical_is_refused_for_ensembles(tiny_npz, tmp_path, capsys):
    a = _train(tiny_npz, tmp_path, "a", 0)
    assert main(["evaluate", str(a), str(a), "--without-clinical"]) == 2
    assert "--without-clinical" in capsys.readouterr().err
