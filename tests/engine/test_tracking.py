"""Experiment tracking: per-epoch metrics and the config reach TensorBoard and MLflow."""

import pytest

from hybridmednet.config.loader import load_config
from hybridmednet.engine.trainer import train
from tests.conftest import tiny_config


def test_tensorboard_gets_every_epoch(tiny_npz, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(raw=tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2),
                      overrides=["tracking={kind: tensorboard}"])
    train(cfg, quiet=True)
    events = EventAccumulator(str(cfg.run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_auc")] == [1, 2]
    assert "final/best_val_score" in events.Tags()["scalars"]


def test_mlflow_gets_params_metrics_and_the_run_dir(tiny_npz, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(raw=tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2),
                      overrides=[f"tracking={{kind: mlflow, uri: '{uri}', experiment: tiny}}"])
    train(cfg, quiet=True)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["train.lr"] == "0.005" and run.data.tags["run_dir"] == str(cfg.run_dir)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == [1, 2]
    assert run.info.status == "FINISHED"
