"""The HTML report on a tiny trained run: every section present, self-contained, and it loads in
a real headless Chromium with no console errors and a non-blank screenshot."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from hybridmednet.config.loader import load_config
from hybridmednet.engine.trainer import train
from tests.conftest import tiny_config

SECTIONS = ("data", "training", "metrics", "calibration", "uncertainty", "operating", "risk", "conformal", "subgroups",
            "gallery", "card")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("pytorch_grad_cam")
    from hybridmednet.report import build_report
    from tests.conftest import pattern_images

    tmp = tmp_path_factory.mktemp("report")
    arrays, meta_rows = {}, ["split,index,sex,age"]
    for split, n, seed in (("train", 40, 0), ("val", 20, 1), ("test", 20, 2)):
        x, y = pattern_images(n, 3, 16, 3, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
        meta_rows += [f"{split},{i},{'male' if i % 2 else 'female'},{30 + i}" for i in range(3 * n)]
    np.savez(tmp / "tinymnist.npz", **arrays)
    (tmp / "meta.csv").write_text("\n".join(meta_rows) + "\n")
    raw = tiny_config(tmp, tmp / "runs", epochs=3)
    raw["eval"]["risk_groups"] = {"odd": ["1"]}
    raw["eval"]["subgroups"] = {"path": str(tmp / "meta.csv"), "id_template": "{split}/{index}",
                                "columns": {"sex": "sex", "age_band": "age"}, "age_columns": ["age_band"]}
    cfg = load_config(raw=raw)
    train(cfg, quiet=True)
    path = build_report(cfg.run_dir, n_bootstrap=50, subgroup_bootstrap=50)
    return path, cfg.run_dir


def test_report_has_every_section_and_is_self_contained(report):
    path, run = report
    html = path.read_text()
    for section in SECTIONS:
        assert f"id='{section}'" in html, section
    assert not re.search(r"""(src|href)=['"]https?://""", html)  # no external resources
    assert html.count("data:image/png;base64,") >= 10
    for words in ("Leakage audit", "Temperature fitted on validation", "Abstention threshold", "Youden", "Flag rule",
                  "Intended use", "Limitations", "Ethical considerations", "correct (most confident)"):
        assert words in html, words
    data = json.loads((run / "report_data.json").read_text())
    assert data["calibration"]["fitted_on"] == "val" and data["operating_points"]["chosen_on"] == "val"
    assert set(data["subgroups"]["attributes"]) == {"sex", "age_band"}
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and calibration["chosen_on"] == "val"
    risk = data["risk_groups"]["odd"]
    assert risk["chosen_on"] == "val" and risk["val"]["sensitivity"] >= 0.90 and "sensitivity" in risk["test"]["ci95"]
    conformal = data["conformal"]
    assert conformal["n_calibration"] == 60 and set(conformal["all_methods"]) >= {"lac", "aps (Mondrian)", "raps"}
    assert "_calibration" not in conformal and len(calibration["conformal"]["scores"]) == 60
    assert "Conformal" in html and "missed on test" in html


def test_predict_writes_conformal_sets_and_risk_flags(report, tmp_path):
    import csv

    from hybridmednet.engine.predict import predict_files

    _, run = report
    images = np.load(run.parents[1] / "tinymnist.npz")["test_images"][:6]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    result = predict_files(run, [str(tmp_path)], tmp_path / "p.csv")
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    threshold = json.loads((run / "calibration.json").read_text())["risk_groups"]["odd"]["threshold"]
    assert all(r["conformal_set"] and set(r["conformal_set"].split("|")) <= {"0", "1", "2"} for r in rows)
    assert result["mean_set_size"] == np.mean([len(r["conformal_set"].split("|")) for r in rows])
    assert all(r["flag_odd"] == str(float(r["prob_odd"]) >= threshold).lower() for r in rows)


def test_predict_abstains_above_the_val_threshold(report, tmp_path):
    from hybridmednet.engine.predict import predict_files

    _, run = report
    images = np.load(run.parents[1] / "tinymnist.npz")["test_images"][:8]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    result = predict_files(run, [str(tmp_path)], tmp_path / "p.csv", abstain=True)
    rows = list(__import__("csv").DictReader(open(tmp_path / "p.csv")))
    threshold = json.loads((run / "calibration.json").read_text())["abstain_threshold"]
    assert result["n_abstained"] == sum(float(r["uncertainty"]) > threshold for r in rows)
    assert all(r["abstained"] == str(float(r["uncertainty"]) > threshold).lower() for r in rows)
    assert all(0.0 <= float(r["uncertainty"]) <= 1.0 for r in rows) and len(rows) == 8
    assert all(abs(sum(float(r[f"prob_{c}"]) for c in "012") - 1) < 1e-4 for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_loads_in_headless_chromium(report, tmp_path):
    path, _ = report
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0", "--window-size=1200,3000"]
    out = subprocess.run(["chromium", *flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), out.stderr[-2000:]
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line]
    assert console == []
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # not blank: text, tables and figures
    assert (pixels < 128).mean() > 0.01
