"""Non-finite losses the way a user meets them: one bad batch is skipped, a diverging run stops
with its val-chosen checkpoint kept, and a run that diverges before any checkpoint is an error."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hybridmednet.config.loader import load_config
from hybridmednet.engine import trainer as trainer_module
from hybridmednet.engine.trainer import read_metrics_csv, train
from hybridmednet.errors import TrainingDivergedError
from tests.conftest import tiny_config


def poison_losses(monkeypatch, bad_calls):
    """Make the task loss NaN on the listed 0-based training calls (all calls from the first
    listed one on, when ``bad_calls`` is an int)."""
    real, calls = trainer_module.mixed_loss, {"n": 0}

    def loss(*args, **kwargs):
        value = real(*args, **kwargs)
        n, calls["n"] = calls["n"], calls["n"] + 1
        bad = n >= bad_calls if isinstance(bad_calls, int) else n in bad_calls
        return value * float("nan") if bad else value

    monkeypatch.setattr(trainer_module, "mixed_loss", loss)
    return calls


def config(tiny_npz, tmp_path, *overrides, epochs=3):
    return load_config(raw=tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=epochs), overrides=list(overrides))


def finite_weights(run_dir, tag):
    meta = json.loads((run_dir / "checkpoints" / f"{tag}.json").read_text())
    return all(torch.isfinite(t).all() for t in load_file(run_dir / "checkpoints" / meta["weights"]).values() if t.is_floating_point())


def test_one_nan_batch_is_skipped_and_counted(tiny_npz, tmp_path, monkeypatch):
    poison_losses(monkeypatch, {2})
    cfg = config(tiny_npz, tmp_path)
    summary = train(cfg, quiet=True)
    rows = read_metrics_csv(cfg.run_dir)
    assert [r.get("skipped_steps") or "" for r in rows] == ["1", "", ""]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)  # the skipped batch stays out of the mean
    assert summary["diverged"] is None and summary["epochs_run"] == 3
    assert finite_weights(cfg.run_dir, "last") and finite_weights(cfg.run_dir, "best")
    assert "non-finite loss or gradients; update skipped" in (cfg.run_dir / "train.log").read_text()


def test_divergence_stops_the_run_and_keeps_the_val_chosen_checkpoint(tiny_npz, tmp_path, monkeypatch):
    calls = poison_losses(monkeypatch, set())
    cfg = config(tiny_npz, tmp_path, "train.nonfinite_tolerance=2", epochs=5)
    train(cfg, quiet=True, stop_after_epoch=1)
    poison_losses(monkeypatch, 0)  # from epoch 2 on every loss is NaN
    summary = train(cfg, quiet=True, resume=True)
    assert calls["n"] > 0
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == 1
    assert "3 non-finite steps in a row" in summary["diverged"]
    assert finite_weights(cfg.run_dir, "best") and finite_weights(cfg.run_dir, "last")
    assert "training diverged in epoch 2" in (cfg.run_dir / "train.log").read_text()


def test_divergence_before_any_checkpoint_is_a_clear_error(tiny_npz, tmp_path, monkeypatch):
    poison_losses(monkeypatch, 0)
    cfg = config(tiny_npz, tmp_path, "train.nonfinite_tolerance=0")
    with pytest.raises(TrainingDivergedError, match="before any val-chosen checkpoint of a trained model.*train.grad_clip"):
        train(cfg, quiet=True)


def test_nonfinite_weights_do_not_crash_validation(tiny_npz, tmp_path, monkeypatch):
    """Weights that turn NaN (not through the loss) give an unscorable val split: the run stops."""
    cfg = config(tiny_npz, tmp_path, "train.ema=false")
    real = trainer_module.Trainer._optimizer_step

    def step(self, raw, optimizer, scaler):
        finite = real(self, raw, optimizer, scaler)
        with torch.no_grad():
            next(raw.parameters()).fill_(float("nan"))
        return finite

    monkeypatch.setattr(trainer_module.Trainer, "_optimizer_step", step)
    with pytest.raises(TrainingDivergedError, match="non-finite val probabilities"):
        train(cfg, quiet=True)
