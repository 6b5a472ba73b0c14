"""Training on a tiny synthetic npz: learning, resume equivalence, checkpoints, CSV, evaluate, predict."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hybridmednet.config.loader import load_config
from hybridmednet.engine.evaluate import evaluate_run
from hybridmednet.engine.predict import predict_files
from hybridmednet.engine.trainer import read_metrics_csv, train
from hybridmednet.errors import CheckpointError, ConfigError, DataError
from tests.conftest import tiny_config


def cfg_for(tiny_npz, tmp_path, overrides=(), **train_kw):
    return load_config(raw=tiny_config(tiny_npz.parent, tmp_path / "runs", **train_kw), overrides=list(overrides))


def weights(run_dir, tag):
    meta = json.loads((run_dir / "checkpoints" / f"{tag}.json").read_text())
    return load_file(run_dir / "checkpoints" / meta["weights"]), meta


def test_training_learns_and_writes_the_run_directory(tiny_npz, tmp_path):
    cfg = cfg_for(tiny_npz, tmp_path, epochs=4)
    summary = train(cfg, quiet=True)
    run = cfg.run_dir
    for name in ("config.yaml", "train.log", "metrics.csv", "data_summary.json", "train_summary.json",
                 "checkpoints/best.json", "checkpoints/last.json"):
        assert (run / name).exists(), name
    rows = read_metrics_csv(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "train_img_s", "val_auc", "val_ema_auc", "lr", "selected"} <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    _, meta = weights(run, "best")
    assert meta["class_names"] == ["0", "1", "2"] and meta["preprocessing"]["image_size"] == 16
    assert meta["variant"] in ("raw", "ema") and "val_metrics" in meta and "config" in meta
    assert summary["best_val_score"] > 0.9  # the bar patterns are easy
    data_summary = json.loads((run / "data_summary.json").read_text())
    assert data_summary["n"] == {"train": 120, "val": 30, "test": 30}


def test_resume_matches_an_uninterrupted_run(tiny_npz, tmp_path):
    full = cfg_for(tiny_npz, tmp_path, ["name=full"], epochs=4)
    train(full, quiet=True)
    part = cfg_for(tiny_npz, tmp_path, ["name=part"], epochs=4)
    train(part, quiet=True, stop_after_epoch=2)  # interrupted after epoch 2
    assert weights(part.run_dir, "last")[1]["epoch"] == 2
    train(part, quiet=True, resume=True)
    a, meta_a = weights(full.run_dir, "last")
    b, meta_b = weights(part.run_dir, "last")
    assert meta_a["epoch"] == meta_b["epoch"] == 4
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows_a, rows_b = read_metrics_csv(full.run_dir), read_metrics_csv(part.run_dir)
    assert [r["val_auc"] for r in rows_a] == [r["val_auc"] for r in rows_b]


def test_existing_run_needs_resume_or_overwrite(tiny_npz, tmp_path):
    cfg = cfg_for(tiny_npz, tmp_path, epochs=1)
    train(cfg, quiet=True)
    with pytest.raises(CheckpointError, match="already holds a trained run; pass --resume"):
        train(cfg, quiet=True)
    train(cfg, quiet=True, overwrite=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg_for(tiny_npz, tmp_path, ["name=fresh"], epochs=1), quiet=True, resume=True)


def test_early_stopping_accumulation_and_balanced_sampling(tiny_npz, tmp_path):
    cfg = cfg_for(tiny_npz, tmp_path, ["data.balanced_sampling=true", "train.monitor=loss"], epochs=30,
                  early_stopping_patience=2, accumulation_steps=2, lr=0.05, ema=False)
    summary = train(cfg, quiet=True)
    assert summary["epochs_run"] < 30
    assert summary["epochs_run"] - summary["best_epoch"] == 2


def test_multilabel_training_uses_bce(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        labels = (rng.random((n, 3)) < 0.4).astype(np.uint8)
        images = rng.integers(0, 40, (n, 16, 16, 3), dtype=np.uint8)
        for k in range(3):
            images[labels[:, k] == 1, 4 * k + 2:4 * k + 4, :] = 240
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(tmp_path / "tinymnist.npz", **arrays)
    cfg = cfg_for(tmp_path / "tinymnist.npz", tmp_path, epochs=3)
    train(cfg, quiet=True)
    result = evaluate_run(cfg.run_dir, "test", n_bootstrap=20)
    assert "mean_auc" in result["metrics"] and len(result["metrics"]["per_label"]) == 3


def test_evaluate_writes_metrics_with_cis_and_predictions(tiny_npz, tmp_path):
    cfg = cfg_for(tiny_npz, tmp_path, epochs=3)
    train(cfg, quiet=True)
    result = evaluate_run(cfg.run_dir, "test", n_bootstrap=50)
    saved = json.loads((cfg.run_dir / "metrics.json").read_text())
    assert saved["test"]["metrics"]["acc"] == result["metrics"]["acc"]
    for key in ("acc", "balanced_acc", "macro_f1", "auc"):
        lo, hi = saved["test"]["ci95"][key]
        assert lo <= result["metrics"][key] <= hi
    assert saved["test"]["checkpoint"]["selected_on"] == "val auc"
    assert {"per_class", "confusion_matrix"} <= set(result["metrics"])
    with open(cfg.run_dir / "predictions_test.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 and abs(sum(float(rows[0][f"prob_{c}"]) for c in "012") - 1) < 1e-4


def test_predict_images_folder_and_csv(tiny_npz, tmp_path):
    cfg = cfg_for(tiny_npz, tmp_path, epochs=3)
    train(cfg, quiet=True)
    with np.load(tiny_npz) as data:
        images, labels = data["test_images"], data["test_labels"][:, 0]
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(images[i]).resize((32, 32)).save(folder / f"{i}.png")  # other size: resized like training
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"new/{i}.png\n" for i in range(3)))
    out = tmp_path / "pred.csv"
    assert predict_files(cfg.run_dir, [str(folder)], out)["n_predicted"] == 6
    rows = list(csv.DictReader(open(out)))
    assert [r["path"].split("/")[-1] for r in rows] == [f"{i}.png" for i in range(6)]
    assert all(r["predicted"] in ("0", "1", "2") for r in rows)
    agree = np.mean([r["predicted"] == str(labels[int(r["path"][-5])]) for r in rows])
    assert agree >= 0.5
    assert predict_files(cfg.run_dir, [str(tmp_path / "list.csv"), str(folder / "0.png")], out)["n_predicted"] == 4
    (folder / "bad.png").write_text("not an image")
    with pytest.raises(DataError, match="bad.png"):
        predict_files(cfg.run_dir, [str(folder)], out)
    sha = json.loads((cfg.run_dir / "checkpoints" / "best.json").read_text())["weights_sha256"]
    assert predict_files(cfg.run_dir, [str(folder)], out, skip_bad=True) == {
        "n_predicted": 6, "n_skipped": 1, "out": str(out), "checkpoint_sha256": sha, "calibrated": False}
    with pytest.raises(DataError, match="no calibration.json"):
        predict_files(cfg.run_dir, [str(folder / "0.png")], out, abstain=True)
    assert "cannot read image" in open(out).read()


def test_hierarchical_training_with_a_taxonomy(tiny_npz, tmp_path):
    taxonomy = "data.taxonomy={even: ['0', '2'], odd: ['1']}"
    cfg = cfg_for(tiny_npz, tmp_path, ["model.name=hybridmednet_small28", "model.kwargs={widths: [8, 16, 16, 32], head_width: 32, stem_width: 8}",
                                        taxonomy], epochs=2)
    train(cfg, quiet=True)
    tensors, meta = weights(cfg.run_dir, "best")
    assert meta["coarse_names"] == ["even", "odd"] and meta["fine_to_coarse"] == [0, 1, 0]
    assert any(k.startswith("head.coarse.") for k in tensors)
    result = evaluate_run(cfg.run_dir, "test", n_bootstrap=10)
    rows = list(csv.DictReader(open(cfg.run_dir / "predictions_test.csv")))
    assert result["metrics"]["acc"] == pytest.approx(np.mean([r["predicted"] == r["target"] for r in rows]))


@pytest.mark.parametrize("taxonomy, message", [
    ("{a: ['0', '1']}", r"classes \['2'\] belong to no coarse group"),
    ("{a: ['0', '1', '2'], b: ['2']}", "'2' is in both 'a' and 'b'"),
    ("{a: ['0', '1', '2', 'x']}", "'x' is not a class"),
])
def test_taxonomy_errors(tiny_npz, tmp_path, taxonomy, message):
    from hybridmednet.errors import ConfigError

    cfg = cfg_for(tiny_npz, tmp_path, ["model.name=hybridmednet_small28", f"data.taxonomy={taxonomy}"], epochs=1)
    with pytest.raises(ConfigError, match=message):
        train(cfg, quiet=True)


def test_taxonomy_needs_a_model_with_a_coarse_head(tiny_npz, tmp_path):
    from hybridmednet.errors import ConfigError

    cfg = cfg_for(tiny_npz, tmp_path, ["data.taxonomy={a: ['0'], b: ['1', '2']}"], epochs=1)
    with pytest.raises(ConfigError, match="needs a model with a coarse head"):
        train(cfg, quiet=True)


def test_freeze_schedule_and_backbone_lr_scale(tiny_npz, tmp_path):
    cfg = cfg_for(tiny_npz, tmp_path, ["model.name=resnet18_fpn", "model.kwargs={neck_channels: 16}",
                                        "train.freeze_backbone_epochs=1", "train.backbone_lr_scale=0.1"], epochs=2, ema=False)
    cfg.data.image_size = 32
    train(cfg, quiet=True, stop_after_epoch=1)
    after_frozen, _ = weights(cfg.run_dir, "last")
    full = cfg_for(tiny_npz, tmp_path, ["name=init", "model.name=resnet18_fpn", "model.kwargs={neck_channels: 16}"], epochs=1)
    full.data.image_size = 32
    from hybridmednet.engine.run_dir import build_model_from_config

    torch.manual_seed(cfg.seed)
    initial = build_model_from_config(full, 3).state_dict()
    backbone_w = "backbone.layer1.0.conv1.weight"
    assert torch.equal(after_frozen[f"model.{backbone_w}"], initial[backbone_w])  # frozen in epoch 1
    assert not torch.equal(after_frozen["model.head.fc.weight"], initial["head.fc.weight"])  # head trained
    train(cfg, quiet=True, resume=True)
    unfrozen, meta = weights(cfg.run_dir, "last")
    assert not torch.equal(unfrozen[f"model.{backbone_w}"], initial[backbone_w])  # released in epoch 2
    groups = meta["optimizer"]["param_groups"]
    assert {g["name"] for g in groups} >= {"backbone", "head"}
    lrs = {g["name"]: g["initial_lr"] for g in groups}
    assert abs(lrs["backbone"] - 0.1 * lrs["head"]) < 1e-12


def test_a_monitor_the_task_lacks_is_refused_before_training(tiny_npz, tmp_path):
    cfg = cfg_for(tiny_npz, tmp_path, ["train.monitor=mean_auc"], epochs=1)
    with pytest.raises(ConfigError, match=r"train.monitor=mean_auc: a single-label task does not compute it; choose one of auc"):
        train(cfg, quiet=True)
    assert not (cfg.run_dir / "checkpoints").exists()


@pytest.mark.parametrize("overrides", [["train.optimizer=sgd", "train.nesterov=true", "train.schedule=plateau",
                                        "train.plateau_patience=0"],
                                       ["train.optimizer=adam", "train.schedule=onecycle"]])
def test_other_optimizers_and_schedules_resume_exactly(tiny_npz, tmp_path, overrides):
    full = cfg_for(tiny_npz, tmp_path, ["name=full", *overrides], epochs=3)
    train(full, quiet=True)
    part = cfg_for(tiny_npz, tmp_path, ["name=part", *overrides], epochs=3)
    train(part, quiet=True, stop_after_epoch=1)
    train(part, quiet=True, resume=True)
    a, b = weights(full.run_dir, "last")[0], weights(part.run_dir, "last")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lrs = [float(r["lr"]) for r in read_metrics_csv(full.run_dir)]
    assert lrs == [float(r["lr"]) for r in read_metrics_csv(part.run_dir)]
