"""Named intermediate outputs: the default layers distillers and few-shot embeddings tap."""

from __future__ import annotations

import pytest
import torch

from hybridmednet.engine.taps import FeatureTaps, last_spatial_layer, spatial_stages
from hybridmednet.errors import ConfigError
from hybridmednet.models import create_model


def small(size=16):
    return create_model("small_cnn", 3, 3, image_size=size, widths=[4, 8, 8, 16]), torch.zeros(2, 3, size, size)


def test_spatial_stages_are_the_deepest_resolutions_shallow_to_deep():
    model, x = small(32)
    stages = spatial_stages(model, x, count=3)
    taps = FeatureTaps(model, set(stages), "test")
    with taps.capture() as out:
        model.eval()(x)
    sides = [out[n].shape[-1] for n in stages]
    assert sides == sorted(sides, reverse=True) and len(set(sides)) == 3  # three sizes, shallow (large) to deep
    assert min(sides) > 1 and stages[-1] in (last_spatial_layer(model, x), f"{last_spatial_layer(model, x)}.3")


def test_too_many_stages_is_an_error_naming_the_layers():
    model, x = small(16)
    with pytest.raises(ConfigError, match="resolutions, 9 wanted.*stem"):
        spatial_stages(model, x, count=9)
