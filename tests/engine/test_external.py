"""External validation: a trained run scored on another labelled dataset made by the test (a folder
with other class-name spelling, an ISIC-style one-hot CSV lacking a class), with the val-chosen
operating points and the calibration shift reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hybridmednet.cli.main import main
from hybridmednet.engine.external import external_evaluate
from hybridmednet.errors import DataError
from tests.conftest import pattern_images


@pytest.fixture
def external_folder(tmp_path):
    """The same bar patterns at another size (20 px), class folders spelled differently."""
    x, y = pattern_images(6, 3, 20, 3, seed=9)
    root = tmp_path / "ext"
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / ["Zero", "ONE", "two"][label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_a_folder_with_other_spellings_is_matched_and_scored(trained_run, external_folder):
    with pytest.raises(DataError, match=r"class 'ONE' matches none of the model's classes .* --class-map ONE=<model class>"):
        external_evaluate(trained_run, str(external_folder), n_bootstrap=20)
    result = external_evaluate(trained_run, str(external_folder), class_map=["zero=0", "one=1", "TWO=2"], n_bootstrap=20)
    assert result["n"] == 18 and result["split"] == "all" and result["classes_missing_from_data"] == []
    assert result["class_mapping"] == {"ONE": "1", "Zero": "0", "two": "2"}
    assert result["operating_points_from_val"]["chosen_on"] == "val"
    assert result["operating_points_from_val"]["reported_on"] == "external data"
    assert "ece" in result["calibration_shift"]["ece_raw"] and "note" in result["calibration_shift"]  # no report yet
    saved = json.loads(open(result["out"]).read())
    assert saved["checkpoint_sha256"] == json.loads((trained_run / "checkpoints" / "best.json").read_text())["weights_sha256"]


def test_an_isic_style_one_hot_csv_missing_a_class_is_reported(trained_run, tmp_path, capsys):
    x, y = pattern_images(5, 3, 16, 3, seed=4)
    keep = y < 2  # the data has no class "2"
    rows = ["image,0,1"]
    for i, (img, label) in enumerate(zip(x[keep], y[keep])):
        Image.fromarray(img).save(tmp_path / f"ISIC_{i}.jpg", quality=95)
        rows.append(f"ISIC_{i},{int(label == 0)},{int(label == 1)}")
    (tmp_path / "truth.csv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", str(trained_run), "--data", str(tmp_path / "truth.csv"), "--n-bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert '"classes_missing_from_data": [\n    "2"\n  ]' in printed and "wrote" in printed
    result = json.loads((trained_run / "external_truth.csv.json").read_text())
    assert result["n"] == int(keep.sum()) and result["operating_points_from_val"]["per_class"]["2"]["skipped"]
    assert np.isfinite(result["metrics"]["acc"])
