"""3D end to end, as a user meets it: a folder of NIfTI files and DICOM series trains, evaluates,
exports and predicts through the ordinary commands; resume is exact with TorchIO augmentation."""

import base64
import csv
import gzip
import io
import json

import numpy as np
import pytest
import torch

from hybridmednet.cli.main import main
from hybridmednet.config.loader import load_config
from hybridmednet.engine.trainer import train
from hybridmednet.errors import DataError
from tests.conftest import checkpoint_weights
from tests.data.volume_files import sphere, write_dicom_series, write_nifti

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def volume_folder(tmp_path_factory):
    """Class ``ball``: bright spheres (NIfTI, 2 mm slices); class ``shell``: hollow spheres stored
    as CT DICOM series (HU, 0.8 mm pixels). The split layout keeps val/test fixed."""
    root = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3), ("test", 3)):
        for i in range(n):
            r = rng.uniform(4, 6)
            write_nifti(root / split / "ball" / f"b{i}.nii.gz", sphere(16, r, 1.0) + rng.normal(0, 0.05, (16, 16, 16)),
                        (2.0, 1.0, 1.0))
            shell = sphere(16, r, 400.0, -1000.0) - sphere(16, r - 2, 1400.0, 0.0)
            write_dicom_series(root / split / "shell" / f"s{i}", shell)
    return root


def config(folder, runs, name="vol", **train_kw):
    raw = {"name": name, "output_dir": str(runs), "seed": 0,
           "data": {"source": {"kind": "folder", "root": str(folder)}, "spatial_dims": 3, "image_size": 16,
                    "channels": 1, "augment": "light", "batch_size": 4, "eval_batch_size": 8, "cache": False},
           "model": {"name": "small_cnn_3d", "kwargs": {"widths": [8, 8, 16, 16]}},
           "train": {"epochs": 3, "lr": 0.003, "precision": "fp32", "warmup_epochs": 0, "threads": 1,
                     "early_stopping_patience": None, **train_kw},
           "eval": {"n_bootstrap": 50}}
    return load_config(raw=raw)


def test_a_volume_folder_trains_evaluates_exports_and_predicts(volume_folder, tmp_path, capsys):
    cfg = config(volume_folder, tmp_path / "runs")
    cfg_path = tmp_path / "vol.yaml"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))
    assert main(["train", "--config", str(cfg_path), "--quiet"]) == 0
    run = cfg.run_dir
    meta = json.loads((run / "checkpoints" / "best.json").read_text())
    assert meta["preprocessing"]["spatial_dims"] == 3 and meta["preprocessing"]["volume"]["interpolation"] == "linear"
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 6 and "auc" in metrics["test"]["ci95"]
    assert main(["export", str(run)]) == 0
    inputs = [str(volume_folder / "test" / "ball" / "b0.nii.gz"), str(volume_folder / "test" / "shell" / "s0")]
    assert main(["predict", str(run), *inputs, "--out", str(tmp_path / "torch.csv")]) == 0
    from hybridmednet.deploy.onnx_runtime import main as runtime_main

    assert runtime_main([str(run), *inputs, "--out", str(tmp_path / "onnx.csv")]) == 0
    rows = {name: list(csv.DictReader(open(tmp_path / f"{name}.csv"))) for name in ("torch", "onnx")}
    assert [r["path"] for r in rows["torch"]] == inputs  # a series folder is one input
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert float(a["prob_ball"]) == pytest.approx(float(b["prob_ball"]), abs=1e-4)
    # a whole folder of volumes as input: NIfTI files and series folders found inside it
    assert main(["predict", str(run), str(volume_folder / "val"), "--out", str(tmp_path / "val.csv")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "val.csv")))) == 6


def test_a_series_with_a_missing_slice_is_an_error_naming_it(volume_folder, tmp_path):
    from hybridmednet.data.inputs import load_inputs

    broken = write_dicom_series(tmp_path / "broken_series", sphere(16, 5, 300.0))
    (broken / "slice007.dcm").unlink()
    prep = {"image_size": 16, "channels": 1, "resize": "center_crop", "spatial_dims": 3,
            "volume": {"interpolation": "linear", "intensity": "percentile", "window": None}}
    with pytest.raises(DataError, match="broken_series: slice\\(s\\) missing"):
        load_inputs([str(broken)], prep)
    images, kept, failed = load_inputs([str(broken), str(volume_folder / "test" / "shell" / "s1")], prep, skip_bad=True)
    assert images.shape == (1, 16, 16, 16, 1) and failed[0][0] == str(broken)


def test_resume_of_a_volume_run_is_exact(volume_folder, tmp_path):
    full = config(volume_folder, tmp_path / "runs", name="full", epochs=3)
    train(full, quiet=True)
    part = config(volume_folder, tmp_path / "runs", name="part", epochs=3)
    train(part, quiet=True, stop_after_epoch=1)
    train(part, quiet=True, resume=True)

    a, b = checkpoint_weights(full.run_dir), checkpoint_weights(part.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_volume_run_is_served_from_nifti_and_zipped_dicom_uploads_with_a_slice_montage(volume_folder, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hybridmednet.engine.run import Run
    from hybridmednet.serve.app import Settings, create_app
    from hybridmednet.serve.backends import load_backend

    cfg = config(volume_folder, tmp_path / "runs", name="served", epochs=1)
    train(cfg, quiet=True)
    path = volume_folder / "test" / "ball" / "b1.nii.gz"
    backend = load_backend(cfg.run_dir, "torch")
    with TestClient(create_app([backend], Settings(max_upload_mb=5, max_pixels=4_000_000))) as client:
        for data in (path.read_bytes(), gzip.decompress(path.read_bytes())):  # .nii.gz and .nii
            response = client.post("/v1/predict", files={"file": ("b1.nii.gz", data, "application/gzip")})
            assert response.status_code == 200, response.text
            served = response.json()["results"][0]["probabilities"]["ball"]
        expected = float(predict_one(Run.load(cfg.run_dir), path)[0, 0])
        assert served == pytest.approx(expected, abs=1e-5)  # the same pipeline as `predict`
        bad = client.post("/v1/predict", files={"file": ("x.nii.gz", b"\x1f\x8b not a volume", "application/gzip")})
        assert bad.status_code == 400 and "not a readable NIfTI volume" in bad.json()["error"]
        png = client.post("/v1/predict", files={"file": ("x.png", b"\x89PNG", "image/png")})
        assert png.status_code == 415 and "this model reads volumes" in png.json()["error"]
        series = volume_folder / "test" / "shell" / "s1"
        response = client.post("/v1/predict", files={"file": ("s1.zip", zipped(series), "application/zip")})
        assert response.status_code == 200, response.text  # a DICOM series, zipped: the same pipeline as `predict`
        expected = float(predict_one(Run.load(cfg.run_dir), series)[0, 0])
        assert response.json()["results"][0]["probabilities"]["ball"] == pytest.approx(expected, abs=1e-5)
        gap = client.post("/v1/predict", files={"file": ("s1.zip", zipped(series, skip="slice007.dcm"), "application/zip")})
        assert gap.status_code == 400 and "missing in the series" in gap.json()["error"] and "slice006.dcm" in gap.json()["error"]
        empty = client.post("/v1/predict", files={"file": ("x.zip", zipped(volume_folder / "test" / "ball"), "application/zip")})
        assert empty.status_code == 400 and "no .dcm file" in empty.json()["error"]
        explained = client.post("/v1/explain", files={"file": ("b1.nii.gz", path.read_bytes(), "application/gzip")})
        assert explained.status_code == 200, explained.text
        from PIL import Image

        overlay = Image.open(io.BytesIO(base64.b64decode(explained.json()["results"][0]["overlay_png"])))
        assert overlay.width == 3 * overlay.height  # axial | coronal | sagittal


def zipped(folder, skip=None) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in sorted(folder.iterdir()):
            if f.name != skip:
                archive.write(f, f"{folder.name}/{f.name}")
    return buffer.getvalue()


def predict_one(run, path):
    from hybridmednet.data.inputs import load_inputs

    images, _, _ = load_inputs([str(path)], run.preprocessing)
    return run.predict(images)  # uncalibrated: the served run has no calibration.json
