"""Long-tail training from config: LDAM-DRW and the logit-adjusted loss train, and classifier
re-training (cRT: frozen backbone, balanced sampling, from a trained run) changes the head only."""

import json

import torch
from safetensors.torch import load_file

from hybridmednet.config.loader import load_config
from hybridmednet.engine.trainer import train
from tests.conftest import tiny_config


def best_weights(run_dir):
    meta = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    return load_file(run_dir / "checkpoints" / meta["weights"])


def test_long_tail_losses_and_classifier_retraining(tiny_npz, tmp_path):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=2, ema=False)
    ldam = load_config(raw=raw, overrides=["name=ldam", "train.loss=ldam", "train.loss_kwargs={drw_epoch: 1}"])
    assert train(ldam, quiet=True)["epochs_run"] == 2
    base = load_config(raw=raw, overrides=["name=base", "train.loss=logit_adjusted"])
    train(base, quiet=True)
    crt = load_config(raw=raw, overrides=["name=crt", f"model.init_checkpoint={base.run_dir}",
                                          "train.freeze_backbone_epochs=2", "data.balanced_sampling=true"])
    train(crt, quiet=True)
    before, after = best_weights(base.run_dir), best_weights(crt.run_dir)
    backbone = [k for k in before if not k.startswith("head.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["head.weight"], after["head.weight"])
