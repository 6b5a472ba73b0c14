"""3D augmentation presets on ``uint8 (D, H, W, 1)`` volumes, with TorchIO.

The 3D twin of ``transforms.py``: the same ``data.augment`` preset names and the same
``data.augment_extra`` entries (name, probability, options), from a library made for volumes.
``light``: flips on every axis and a small affine (the default at 32 voxels and below, where
MedMNIST 3D lives); ``medium`` adds noise, blur and gamma; ``strong`` adds elastic deformation and
a bias field. MR artefacts (ghosting, motion, spikes) are ``augment_extra`` options.

TorchIO draws its parameters from torch's global generator; :class:`VolumeAugment` seeds a forked
generator per volume from its own stream, so an epoch's augmentations depend only on
``(seed, epoch)``, as the 2D pipeline's do (exact resume).
"""

from __future__ import annotations

import numpy as np
import torch

from hybridmednet.errors import ConfigError

EXTRA_OPS_3D = {"flip": "RandomFlip", "affine": "RandomAffine", "elastic": "RandomElasticDeformation",
                "gaussian_noise": "RandomNoise", "gaussian_blur": "RandomBlur", "gamma": "RandomGamma",
                "bias_field": "RandomBiasField", "ghosting": "RandomGhosting", "motion": "RandomMotion",
                "spike": "RandomSpike", "anisotropy": "RandomAnisotropy"}


def _presets(name: str) -> list:
    import torchio as tio

    light = [tio.RandomFlip(axes=(0, 1, 2), flip_probability=0.5),
             tio.RandomAffine(scales=0.08, degrees=10, translation=2, p=0.3)]
    medium = light + [tio.RandomNoise(std=(0, 6), p=0.3), tio.RandomBlur(std=(0, 0.6), p=0.2),
                      tio.RandomGamma(log_gamma=0.2, p=0.3)]
    strong = medium + [tio.RandomElasticDeformation(max_displacement=2, p=0.3), tio.RandomBiasField(coefficients=0.3, p=0.2)]
    return {"none": [], "light": light, "medium": medium, "strong": strong}[name]


def extra_op_3d(name: str, p: float, options: dict):
    """One TorchIO transform for ``data.augment_extra`` with ``data.spatial_dims=3``; an unknown
    name or option is a one-line error naming it."""
    if name not in EXTRA_OPS_3D:
        raise ConfigError(f"data.augment_extra: unknown 3D op {name!r}; with data.spatial_dims=3 choose from "
                          f"{', '.join(sorted(EXTRA_OPS_3D))}")
    import torchio as tio

    from hybridmednet.registry import declared_options

    cls = getattr(tio, EXTRA_OPS_3D[name])
    declared = declared_options(cls)
    unknown = sorted(set(options) - set(declared) - {"kwargs"})
    if unknown:
        raise ConfigError(f"data.augment_extra {name}.options: TorchIO {cls.__name__} has no option(s) {unknown}; "
                          f"its options: {', '.join(k for k in declared if k != 'kwargs')}")
    try:
        return cls(p=p, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.augment_extra {name}: {' '.join(str(exc).split())[:200]}") from None


class VolumeAugment:
    """An albumentations-like callable over one volume: ``augment(image=v)["image"]``."""

    def __init__(self, transforms: list, seed: int):
        import torchio as tio

        self.transform = tio.Compose(transforms)
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> dict:
        seed = int(self.rng.integers(2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.transform(torch.from_numpy(np.moveaxis(image, -1, 0).astype(np.float32)))
        return {"image": np.moveaxis(np.rint(out.numpy()).clip(0, 255).astype(np.uint8), 0, -1)}


def build_volume_transform(name: str, seed: int, extra=()) -> VolumeAugment | None:
    ops = _presets(name) + [extra_op_3d(e.name, e.p, e.options) for e in extra]
    return VolumeAugment(ops, seed) if ops else None
