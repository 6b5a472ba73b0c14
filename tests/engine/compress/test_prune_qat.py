"""Pruned runs: sparsity survives fine-tuning, channel pruning shrinks the model, and both
reload, evaluate and export like any run."""

from __future__ import annotations

import shutil

import pytest
import torch

from hybridmednet.config.loader import load_config
from hybridmednet.deploy.export import export_run
from hybridmednet.engine.compress.prune import sparsity
from hybridmednet.engine.evaluate import evaluate_run
from hybridmednet.engine.run import Run
from hybridmednet.engine.trainer import train
from hybridmednet.errors import ConfigError
from hybridmednet.models.profile import count_parameters
from hybridmednet.output import as_output


def pruned_config(trained_run, name, method, amount):
    return load_config(trained_run / "config.yaml", [f"name={name}", f"model.init_checkpoint={trained_run}",
                                                      f"train.prune={{method: {method}, amount: {amount}}}",
                                                      "train.epochs=1", "train.lr=0.001"])


def test_magnitude_pruning_keeps_its_sparsity_through_fine_tuning(trained_run):
    cfg = pruned_config(trained_run, "pruned_mag", "magnitude", 0.6)
    train(cfg, quiet=True)
    model, original = Run.load(cfg.run_dir).model, Run.load(trained_run).model
    assert sparsity(original) < 0.05
    assert sparsity(model) >= 0.59  # EMA or raw, the zeros stayed zeros
    assert count_parameters(model) == count_parameters(original)  # same shapes: dense kernels do the same work
    assert evaluate_run(cfg.run_dir, "test", n_bootstrap=10)["n"] == 30
    assert export_run(cfg.run_dir, "onnx")["max_abs_diff"] < 1e-4


def test_channel_pruning_shrinks_the_model_and_rebuilds_without_its_starting_run(trained_run, tmp_path):
    pytest.importorskip("torch_pruning")
    source = tmp_path / "source"
    shutil.copytree(trained_run, source)
    cfg = pruned_config(source, "pruned_ch", "channel", 0.5)
    train(cfg, quiet=True)
    shutil.rmtree(source)  # the pruned run must load from what it holds itself
    run = Run.load(cfg.run_dir)
    model, meta = run.model, run.meta
    original = Run.load(trained_run).model
    assert count_parameters(model) < 0.5 * count_parameters(original)
    assert as_output(model(torch.zeros(2, 3, 16, 16))).logits.shape == (2, len(meta["class_names"]))
    assert export_run(cfg.run_dir, "onnx")["max_abs_diff"] < 1e-4


def test_pruning_needs_a_trained_starting_point(trained_run):
    with pytest.raises(ConfigError, match="init_checkpoint"):
        load_config(trained_run / "config.yaml", ["train.prune={method: magnitude, amount: 0.5}"])
    with pytest.raises(ConfigError, match="amount"):
        load_config(trained_run / "config.yaml", [f"model.init_checkpoint={trained_run}",
                                                  "train.prune={method: magnitude, amount: 1.5}"])


def test_quantization_aware_fine_tuning_then_static_int8(trained_run):
    from hybridmednet.deploy.quantize import quantize_run
    from hybridmednet.engine.compress.qat import enable_fake_quant, strip_fake_quant

    cfg = load_config(trained_run / "config.yaml", ["name=qat", f"model.init_checkpoint={trained_run}", "train.qat=true",
                                                    "train.epochs=1", "train.lr=0.0005"])
    train(cfg, quiet=True)
    model = Run.load(cfg.run_dir).model  # fake quant stripped: a plain model again
    original = Run.load(trained_run).model
    assert model.state_dict().keys() == original.state_dict().keys()
    assert any((a != b).any() for a, b in zip(model.state_dict().values(), original.state_dict().values()))
    report = quantize_run(cfg.run_dir, "static", n_calibration=32)
    assert report["size_mb"] > 0
    with pytest.raises(ConfigError, match="init_checkpoint"):
        load_config(trained_run / "config.yaml", ["train.qat=true"])
    # fake quantization really rounds: weights take at most 255 levels per output channel
    probe = enable_fake_quant(Run.load(trained_run).model).train()
    probe(torch.zeros(2, 3, 16, 16))
    conv = next(m for m in probe.modules() if isinstance(m, torch.nn.Conv2d))
    assert len(torch.unique(conv.weight[0])) <= 255
    strip_fake_quant(probe)
