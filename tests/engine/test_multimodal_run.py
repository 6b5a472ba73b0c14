"""A multimodal run end to end on tiny data: train, evaluate (with and without clinical input),
predict from a CSV with clinical columns, export to ONNX; and the real HAM10000 metadata."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from hybridmednet.cli.main import main
from hybridmednet.config.loader import load_config
from hybridmednet.data.pipeline import prepare_data
from hybridmednet.deploy.export import export_run
from hybridmednet.engine.evaluate import evaluate_run
from hybridmednet.engine.trainer import train
from hybridmednet.errors import ConfigError, DataError
from tests.conftest import clinical_section, requires_shared_data, tiny_config


def _config(tiny_npz, clinical_npz, tmp_path, fusion="cross_attention", **clinical):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2)
    raw["data"]["clinical"] = clinical_section(clinical_npz, **clinical)
    raw["model"]["multimodal"] = {"fusion": fusion, "dim": 16, "heads": 2, "modality_dropout": 0.2, "agreement_weight": 0.1}
    path = tmp_path / "mm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture
def trained_run(tiny_npz, clinical_npz, tmp_path):
    cfg = _config(tiny_npz, clinical_npz, tmp_path)
    train(cfg, quiet=True)
    return cfg.run_dir


def test_train_evaluate_with_and_without_clinical_input(trained_run):
    with_text = evaluate_run(trained_run, "test", n_bootstrap=0)
    without = evaluate_run(trained_run, "test", n_bootstrap=0, without_clinical=True)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"test", "test_without_clinical"} <= set(metrics)
    assert 0 <= without["metrics"]["acc"] <= 1 and 0 <= with_text["metrics"]["acc"] <= 1
    meta = json.loads(next((trained_run / "checkpoints").glob("best*.json")).read_text())
    assert meta["clinical_spec"]["encoder"] == "scratch" and "[CLS]" in meta["clinical_spec"]["vocab"]
    summary = json.loads((trained_run / "data_summary.json").read_text())
    assert 0 < summary["clinical_records"]["train"] <= summary["n"]["train"]


def _test_probabilities(run, *, without_clinical=False):
    from hybridmednet.engine.run import Run

    loaded = Run.load(run)
    part = loaded.prepare(("test",)).splits["test"]
    extras = part.clinical | ({"clinical_present": np.zeros(len(part), np.float32)} if without_clinical else {})
    return loaded.predict(part.images, extras)


def test_the_clinical_input_changes_the_prediction(trained_run):
    assert not np.allclose(_test_probabilities(trained_run), _test_probabilities(trained_run, without_clinical=True))


def test_evaluation_uses_the_checkpoints_spec_not_a_refit(trained_run, clinical_npz):
    """A metadata file edited after training (a new body site on every training row) must not
    change the trained model's vocabulary: evaluation reads the spec from the checkpoint."""
    meta = json.loads(next((trained_run / "checkpoints").glob("best*.json")).read_text())
    before = evaluate_run(trained_run, "test", n_bootstrap=0)
    rows = clinical_npz.read_text().splitlines()
    clinical_npz.write_text("\n".join([rows[0]] + [r.replace(",back,", ",elbow,") if r.startswith("train,") else r
                                                    for r in rows[1:]]) + "\n")
    cfg = load_config(trained_run / "config.yaml")
    assert "elbow" in prepare_data(cfg.data, splits_wanted=("test",)).clinical_spec["vocab"]  # a refit would move ids
    data = prepare_data(cfg.data, splits_wanted=("test",), clinical_spec=meta["clinical_spec"])
    assert data.clinical_spec == meta["clinical_spec"]
    after = evaluate_run(trained_run, "test", n_bootstrap=0)["metrics"]
    assert json.dumps(after, sort_keys=True) == json.dumps(before["metrics"], sort_keys=True)  # NaN-safe equality


def test_vocabulary_holds_only_training_words(tiny_npz, clinical_npz, tmp_path):
    rows = clinical_npz.read_text().splitlines()
    clinical_npz.write_text("\n".join([rows[0]] + [r.replace(",back,", ",scalp,") if not r.startswith("train,") else r
                                                    for r in rows[1:]]) + "\n")
    data = prepare_data(_config(tiny_npz, clinical_npz, tmp_path).data)
    assert "scalp" not in data.clinical_spec["vocab"] and "back" in data.clinical_spec["vocab"]


def test_ensembles_build_each_runs_own_clinical_inputs(trained_run, tiny_npz, tmp_path):
    """A multimodal run beside an image-only one: each gets the inputs its model takes."""
    from hybridmednet.engine.ensemble import ensemble_probabilities

    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1)
    raw["name"] = "image_only"
    image_only = load_config(raw=raw)
    train(image_only, quiet=True)
    probs, part, *_ = ensemble_probabilities([trained_run, image_only.run_dir], "test")
    single = _test_probabilities(trained_run)
    assert probs.shape == single.shape and not np.allclose(probs, single)
    same, *_ = ensemble_probabilities([trained_run, trained_run], "test")
    np.testing.assert_allclose(same, single, atol=1e-5)


def test_predict_reads_clinical_columns_from_the_csv(trained_run, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    rows = [{"path": f"img{i}.png", "age": age, "sex": "male", "site": "back"} for i, age in enumerate(["40", "", "61"])]
    for row, image in zip(rows, images):
        Image.fromarray(image).save(tmp_path / row["path"])
    table = tmp_path / "cases.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(trained_run), str(table), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert main(["predict", str(trained_run), str(tmp_path / "img0.png")]) == 2
    assert "clinical inputs" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("path,age\nimg0.png,40\n")
    assert main(["predict", str(trained_run), str(tmp_path / "bad.csv")]) == 2
    assert "'sex'" in capsys.readouterr().err


def test_onnx_export_takes_the_clinical_inputs(trained_run):
    pytest.importorskip("onnxruntime")
    report = export_run(trained_run, "onnx")
    assert report["max_abs_diff"] < 1e-3
    assert report["metadata"]["clinical_inputs"] == ["clinical_present", "token_ids", "text_mask"]
    from hybridmednet.deploy.onnx_runtime import OnnxClassifier

    with pytest.raises(DataError, match="multimodal"):
        OnnxClassifier(report["path"])


@pytest.mark.parametrize("command", [["explain", "{run}", "x.png"], ["quantize", "{run}"], ["benchmark", "{run}"]])
def test_image_only_commands_refuse_multimodal_runs(trained_run, command, capsys):
    assert main([c.format(run=trained_run) for c in command]) == 2
    assert "multimodal" in capsys.readouterr().err


def test_dx_type_in_the_template_stops_training(tiny_npz, clinical_npz, tmp_path):
    cfg = _config(tiny_npz, clinical_npz, tmp_path, template=["{age:.0f}-year-old", "confirmed by {dx_type}"])
    with pytest.raises(ConfigError, match="dx_type"):
        train(cfg, quiet=True)


@requires_shared_data("ham10000", "HAM10000_metadata.csv")
@requires_shared_data("medmnist", "dermamnist.npz")
@pytest.mark.integration
def test_dermamnist_ids_get_their_ham10000_text():
    from hybridmednet.data.clinical import load_clinical_values, render_texts

    cfg = load_config("configs/dermamnist_clinical.yaml").data.clinical
    values = load_clinical_values(cfg, cfg.table, ["train/0", "test/0"])
    texts = render_texts(cfg, values, np.ones(2, bool))
    assert all(t and "lesion on the" in t and "year-old" in t for t in texts), texts
    with pytest.raises(ConfigError, match="dx_type"):
        from hybridmednet.data.clinical import check_no_leak

        check_no_leak(cfg.model_copy(update={"template": ["{dx_type}"]}))


def test_a_resumed_run_keeps_its_clinical_spec(trained_run, clinical_npz):
    meta = json.loads((trained_run / "checkpoints" / "last.json").read_text())
    clinical_npz.write_text(clinical_npz.read_text().replace(",back,", ",elbow,"))
    train(load_config(trained_run / "config.yaml", ["train.epochs=3"]), quiet=True, resume=True)
    after = json.loads((trained_run / "checkpoints" / "last.json").read_text())
    assert after["epoch"] == 3 and after["clinical_spec"] == meta["clinical_spec"]


@pytest.mark.parametrize("strategy,fusion", [("global_local", "concat"), ("dual_expert", "cross_attention"),
                                             ("multi_view", "joint_attention")])
def test_view_strategies_run_from_config_to_onnx(tiny_npz, clinical_npz, tmp_path, strategy, fusion):
    """A views run is an ordinary run: its backbones are built at the views' size from config, it
    trains, evaluates and exports with one image input at the data's size."""
    pytest.importorskip("onnxruntime")
    cfg = _config(tiny_npz, clinical_npz, tmp_path, fusion=fusion)
    cfg = load_config(tmp_path / "mm.yaml", ["data.image_size=32", "train.epochs=1",
                                             f"model.multimodal.views={{strategy: {strategy}, size: 16}}"])
    train(cfg, quiet=True)
    assert 0 <= evaluate_run(cfg.run_dir, "test", n_bootstrap=0)["metrics"]["acc"] <= 1
    report = export_run(cfg.run_dir, "onnx")
    assert report["max_abs_diff"] < 1e-3 and report["metadata"]["preprocessing"]["image_size"] == 32


def test_views_must_divide_the_image_size(tiny_npz, clinical_npz, tmp_path):
    _config(tiny_npz, clinical_npz, tmp_path)
    with pytest.raises(ConfigError, match="must divide data.image_size 24"):
        load_config(tmp_path / "mm.yaml", ["data.image_size=24", "model.multimodal.views={strategy: multi_view, size: 16}"])
