"""3D augmentation: TorchIO presets keep shape and dtype, are deterministic per seed, and check options."""

import numpy as np
import pytest

from hybridmednet.config.schema import AugmentOp
from hybridmednet.data.transforms import build_train_transform
from hybridmednet.data.volume_transforms import EXTRA_OPS_3D, extra_op_3d
from hybridmednet.errors import ConfigError

VOLUME = (np.random.default_rng(0).random((16, 16, 16, 1)) * 255).astype(np.uint8)


@pytest.mark.parametrize("preset", ["light", "medium", "strong"])
def test_presets_keep_the_volume_and_repeat_with_the_seed(preset):
    augment = build_train_transform(preset, 16, 1, seed=3, spatial_dims=3)
    first = [augment(image=VOLUME)["image"] for _ in range(3)]
    augment.set_random_seed(3)
    again = [augment(image=VOLUME)["image"] for _ in range(3)]
    assert all(a.shape == VOLUME.shape and a.dtype == np.uint8 for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, VOLUME) for a in first)


def test_none_is_no_transform():
    assert build_train_transform("none", 16, 1, seed=0, spatial_dims=3) is None


@pytest.mark.parametrize("name", sorted(EXTRA_OPS_3D))
def test_every_extra_op_runs(name):
    augment = build_train_transform("none", 16, 1, seed=0, extra=[AugmentOp(name=name, p=1.0)], spatial_dims=3)
    assert augment(image=VOLUME)["image"].shape == VOLUME.shape


def test_unknown_op_or_option_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown 3D op 'clahe'"):
        extra_op_3d("clahe", 0.5, {})
    with pytest.raises(ConfigError, match="RandomMotion has no option\\(s\\) \\['sigma'\\]; its options: degrees"):
        extra_op_3d("motion", 0.5, {"sigma": 1})
