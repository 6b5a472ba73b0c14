"""Mixup / CutMix and the extra augmentations: what they do, config checks, exact resume."""


import numpy as np
import pytest
import torch

from hybridmednet.config.loader import load_config
from hybridmednet.config.schema import MixConfig
from hybridmednet.data.transforms import build_train_transform
from hybridmednet.engine.mixing import mix_batch
from hybridmednet.engine.trainer import read_metrics_csv, train
from hybridmednet.errors import ConfigError
from tests.conftest import checkpoint_weights, tiny_config


def test_mixup_is_a_convex_combination_with_partner_targets():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 4, 4), torch.arange(8)
    mixed, (y_b, lam) = mix_batch(x, y, MixConfig(mixup_alpha=0.4))
    order = y_b  # targets are the indices, so the partner targets are the permutation
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[order])
    assert 0 <= lam <= 1


def test_cutmix_pastes_a_box_and_lam_is_its_true_area():
    torch.manual_seed(1)
    x, y = torch.zeros(4, 1, 10, 10), torch.arange(4)
    x += torch.arange(4).view(4, 1, 1, 1).float()  # image i is constant i
    mixed, (y_b, lam) = mix_batch(x, y, MixConfig(mixup_alpha=0.0, cutmix_alpha=1.0))
    for i in range(4):
        from_partner = (mixed[i] == y_b[i].float()).float().mean().item() if y_b[i] != i else 1 - lam
        assert from_partner == pytest.approx(1 - lam)


def test_extra_augmentations_are_built_and_checked():
    class Op:
        def __init__(self, name, p=1.0, options=None):
            self.name, self.p, self.options = name, p, options or {}

    transform = build_train_transform("none", 16, 3, 0, [Op("gamma", options={"gamma_limit": (50, 150)}), Op("clahe")])
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    out = transform(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    with pytest.raises(ConfigError, match="unknown op 'swirl'"):
        build_train_transform("none", 16, 3, 0, [Op("swirl")])


def test_config_refuses_bad_extra_ops_and_an_empty_mix(tiny_npz, tmp_path):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs")
    with pytest.raises(ConfigError, match="augment_extra"):
        load_config(raw=raw, overrides=["data.augment_extra=[{name: elastic, options: {not_an_option: 1}}]"])
    with pytest.raises(ConfigError, match="mixup_alpha > 0 or cutmix_alpha"):
        load_config(raw=raw, overrides=["train.mix={mixup_alpha: 0}"])


def test_training_with_mixing_and_extra_ops_resumes_exactly(tiny_npz, tmp_path):
    overrides = ["train.mix={mixup_alpha: 0.4, cutmix_alpha: 1.0, prob: 0.8}",
                 "data.augment_extra=[{name: gaussian_noise, p: 0.5}, {name: brightness_contrast, p: 0.5}]"]
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=3)
    full = load_config(raw=raw, overrides=["name=full", *overrides])
    train(full, quiet=True)
    part = load_config(raw=raw, overrides=["name=part", *overrides])
    train(part, quiet=True, stop_after_epoch=1)
    train(part, quiet=True, resume=True)

    a, b = checkpoint_weights(full.run_dir), checkpoint_weights(part.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in read_metrics_csv(full.run_dir)] == [r["train_loss"] for r in read_metrics_csv(part.run_dir)]


def test_adaptive_augmentation_follows_the_val_trend_and_resumes(tiny_npz, tmp_path):
    from hybridmednet.config.schema import AdaptiveAugmentConfig
    from hybridmednet.data.transforms import next_strength

    cfg = AdaptiveAugmentConfig(start=0.5, step=0.25, low=0.0, high=1.0)
    assert next_strength(0.5, cfg, improved=True, train_loss=0.1, previous_train_loss=0.5) == 0.5
    assert next_strength(0.5, cfg, improved=False, train_loss=0.1, previous_train_loss=0.5) == 0.75  # overfitting
    assert next_strength(0.5, cfg, improved=False, train_loss=0.9, previous_train_loss=0.5) == 0.25  # too hard
    assert next_strength(1.0, cfg, improved=False, train_loss=0.1, previous_train_loss=0.5) == 1.0
    overrides = ["data.augment_extra=[{name: gaussian_noise, p: 0.8}]", "data.adaptive_augment={start: 0.5, step: 0.5}"]
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs", epochs=4)
    full = load_config(raw=raw, overrides=["name=full", *overrides])
    train(full, quiet=True)
    strengths = [float(r["aug_strength"]) for r in read_metrics_csv(full.run_dir)]
    assert strengths[0] == 0.5 and len(strengths) == 4
    part = load_config(raw=raw, overrides=["name=part", *overrides])
    train(part, quiet=True, stop_after_epoch=2)
    train(part, quiet=True, resume=True)
    assert [float(r["aug_strength"]) for r in read_metrics_csv(part.run_dir)] == strengths
    assert [r["train_loss"] for r in read_metrics_csv(part.run_dir)] == [r["train_loss"] for r in read_metrics_csv(full.run_dir)]
    with pytest.raises(ConfigError, match="augment_extra, which is empty"):
        train(load_config(raw=raw, overrides=["name=empty", "data.adaptive_augment={start: 0.5}"]), quiet=True)


def test_mixing_refuses_a_clean_teacher_view(tiny_npz, tmp_path):
    raw = tiny_config(tiny_npz.parent, tmp_path / "runs")
    raw["train"]["distill"] = {"teacher": str(tmp_path), "methods": [{"name": "kd"}], "teacher_view": "clean"}
    with pytest.raises(ConfigError, match="teacher_view: augmented"):
        load_config(raw=raw, overrides=["train.mix={mixup_alpha: 0.2}"])
