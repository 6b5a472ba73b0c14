"""select on tiny runs: the best-val candidate within the limits, and an unmeetable limit said so."""

import json

import pytest
import yaml

from hybridmednet.cli.main import main
from hybridmednet.errors import ConfigError
from hybridmednet.tune.select import parse_constraints, select_model
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # exports and times each candidate


def test_select_names_the_best_model_that_fits_and_says_when_none_does(tiny_npz, tmp_path, capsys):
    small = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1)
    small["name"] = "small"
    wide = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1)
    wide["name"], wide["model"]["kwargs"] = "wide", {"widths": [32, 64, 64, 128]}
    paths = []
    for cfg in (small, wide):
        path = tmp_path / f"{cfg['name']}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        paths.append(str(path))
    record = select_model(paths, "params_m<=0.1", tmp_path / "sel", iters=20, threads=1)
    rows = {r["candidate"]: r for r in record["candidates"]}
    assert record["selected"] == paths[0]  # the wide model breaks the parameter limit
    assert rows[paths[1]]["verdict"].startswith("fails params_m")
    assert rows[paths[0]]["verdict"].startswith("selected")
    assert main(["select", "--candidates", *paths, "--constraints", "latency_ms_p95<=0.000001", "--out",
                 str(tmp_path / "sel2"), "--iters", "20", "--threads", "1"]) == 0
    assert "selected: none (no candidate meets" in capsys.readouterr().out
    saved = json.loads((tmp_path / "sel2" / "select.json").read_text())
    assert saved["selected"] is None and all(not r["meets"] for r in saved["candidates"])


def test_a_candidate_that_cannot_build_stops_the_selection_before_anything_trains(tiny_npz, tmp_path):
    good = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1)
    bad = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1)
    good["name"], bad["name"] = "good", "convnext16"
    bad["model"] = {"name": "convnext_tiny_fpn", "pretrained": False}  # its stride-32 stage cannot run at 16 px
    paths = []
    for cfg in (good, bad):
        path = tmp_path / f"{cfg['name']}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        paths.append(str(path))
    with pytest.raises(ConfigError, match=r"convnext16\.yaml: model 'convnext_tiny' cannot run at 16 px.*nothing was trained"):
        select_model(paths, "params_m<=100", tmp_path / "sel", iters=20, threads=1)
    assert not (tmp_path / "runs" / "good").exists()


def test_constraints_are_checked():
    assert parse_constraints("latency_ms_p95<=10, file_mb<100") == [("latency_ms_p95", "<=", 10.0), ("file_mb", "<", 100.0)]
    with pytest.raises(ConfigError, match="NAME<=VALUE"):
        parse_constraints("speed<=3")
