"""Augmentation presets on ``uint8 (H, W, C)`` arrays, with albumentations.

Augmenting uint8 before the float conversion is several times faster on CPU than tensor
transforms. ``auto`` picks ``light`` at 32 px and below (28-px images lose too much to crops
and strong rotations) and ``medium`` above.
"""

from __future__ import annotations

import albumentations as A


def _light(size: int, channels: int) -> list:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.06, 0.06), scale=(0.92, 1.08), rotate=(-10, 10), p=0.5),
    ]


def _medium(size: int, channels: int) -> list:
    ops = [
        A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.85, 1.18), p=1.0),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(rotate=(-20, 20), p=0.5),
    ]
    if channels == 3:
        ops.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.15, hue=0.02, p=0.5))
    else:
        ops.append(A.RandomBrightnessContrast(0.2, 0.2, p=0.5))
    return ops


def _strong(size: int, channels: int) -> list:
    return _medium(size, channels) + [
        A.RandomRotate90(p=0.5),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15), p=0.3),
    ]


PRESETS = {"none": lambda size, channels: [], "light": _light, "medium": _medium, "strong": _strong}

# ``data.augment_extra``: albumentations ops added after the preset, each with its probability and
# its own options (checked by albumentations when the config loads)
EXTRA_OPS = {"elastic": "ElasticTransform", "grid_distortion": "GridDistortion", "gamma": "RandomGamma",
             "gaussian_noise": "GaussNoise", "gaussian_blur": "GaussianBlur", "clahe": "CLAHE",
             "brightness_contrast": "RandomBrightnessContrast", "coarse_dropout": "CoarseDropout",
             "rotate90": "RandomRotate90", "vertical_flip": "VerticalFlip"}


def extra_op(name: str, p: float, options: dict):
    """One extra albumentations op; a wrong option is a one-line error naming it."""
    from hybridmednet.errors import ConfigError

    if name not in EXTRA_OPS:
        raise ConfigError(f"data.augment_extra: unknown op {name!r}; choose from {', '.join(sorted(EXTRA_OPS))}")
    from hybridmednet.registry import check_options

    cls = getattr(A, EXTRA_OPS[name])
    options = check_options(cls, options, f"data.augment_extra {name}.options", f"albumentations {cls.__name__}",
                            frozenset({"p", "always_apply"}))
    try:
        return cls(p=p, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.augment_extra {name}: {' '.join(str(exc).split())[:200]}") from None


def resolve_preset(name: str, size: int) -> str:
    return ("light" if size <= 32 else "medium") if name == "auto" else name


def build_train_transform(name: str, size: int, channels: int, seed: int, extra=(), spatial_dims: int = 2):
    """The preset's ops, then each ``extra`` entry (objects with ``name``, ``p``, ``options``);
    volumes (``spatial_dims=3``) get the TorchIO presets of ``volume_transforms.py``."""
    if spatial_dims == 3:
        from hybridmednet.data.volume_transforms import build_volume_transform

        return build_volume_transform(resolve_preset(name, size), seed, extra)
    ops = PRESETS[resolve_preset(name, size)](size, channels) + [extra_op(e.name, e.p, e.options) for e in extra]
    return A.Compose(ops, seed=seed) if ops else None


def scaled_extra(extra, strength: float) -> list:
    """``augment_extra`` with every op's probability times ``strength`` (adaptive augmentation)."""
    return [op.model_copy(update={"p": min(1.0, op.p * strength)}) for op in extra]


def next_strength(strength: float, cfg, *, improved: bool, train_loss: float, previous_train_loss: float | None) -> float:
    """The seed's adaptive augmentation, from the val trend: no val improvement while the training
    loss still falls is overfitting, so augment harder (+ ``step``); no val improvement while the
    training loss rises means the task got too hard, so ease off (- ``step``); an improving epoch
    keeps the strength. Clipped to [low, high]."""
    if improved or previous_train_loss is None:
        return strength
    change = cfg.step if train_loss < previous_train_loss else -cfg.step
    return float(min(cfg.high, max(cfg.low, strength + change)))
