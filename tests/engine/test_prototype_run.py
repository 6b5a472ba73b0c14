"""The full multi-prototype head from config: mixed attention and the uncertainty weighting of the
task loss against the prototype terms train, log their weights, and resume exactly."""

import csv

import pytest
import torch

from hybridmednet.config.loader import load_config
from hybridmednet.engine.trainer import train
from hybridmednet.errors import ConfigError
from tests.conftest import tiny_config
from tests.engine.test_trainer import weights as best_weights

PROTOTYPE = ["model.name=hybridmednet_small28",
             "model.kwargs={widths: [8, 16, 16, 32], head_width: 32, stem_width: 8, head: prototype, "
             "head_kwargs: {mixed_attention: true, attention_heads: 2, window: 2, contrastive_weight: 0.1}}",
             "train.loss_weighting=uncertainty"]


def test_prototype_head_with_mixed_attention_and_learned_loss_weights_resumes_exactly(tiny_npz, tmp_path):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2, ema=False)
    full = load_config(raw=raw, overrides=["name=full", *PROTOTYPE])
    train(full, quiet=True)
    rows = list(csv.DictReader(open(full.run_dir / "metrics.csv")))
    weights = [(float(r["weight_task"]), float(r["weight_auxiliary"])) for r in rows]
    assert all(w != (1.0, 1.0) for w in weights) and weights[0] != weights[1]  # learned, moving

    cut = load_config(raw=raw, overrides=["name=cut", *PROTOTYPE])
    train(cut, quiet=True, stop_after_epoch=1)  # interrupted after epoch 1
    train(cut, resume=True, quiet=True)
    again = list(csv.DictReader(open(cut.run_dir / "metrics.csv")))
    assert [(r["weight_task"], r["weight_auxiliary"], r["train_loss"]) for r in again] == \
        [(r["weight_task"], r["weight_auxiliary"], r["train_loss"]) for r in rows]
    a, _ = best_weights(full.run_dir, "last")
    b, _ = best_weights(cut.run_dir, "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_uncertainty_weighting_without_auxiliary_terms_is_a_config_error(tiny_npz, tmp_path):
    cfg = load_config(raw=tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=1),
                      overrides=["train.loss_weighting=uncertainty"])
    with pytest.raises(ConfigError, match="model 'small_cnn' gives none; use a prototype or MoE head"):
        train(cfg, quiet=True)
