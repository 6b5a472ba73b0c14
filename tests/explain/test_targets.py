"""CAM target layers: one registered resolver per family (subclasses inherit it), token reshapes
for transformers, and the fallback for other CNNs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.explain.targets import find_target, list_target_families, nhwc_to_nchw, register_target
from hybridmednet.models import create_model


def test_registered_families_and_subclasses_resolve_by_class_name():
    assert {"SmallCNN", "ResNet", "ConvNeXt", "EfficientNet", "VisionTransformer"} <= set(list_target_families())
    model = create_model("small_cnn", 3, 3)
    target = find_target(model)
    assert any(target.layer is m for m in model.modules()) and target.family == "small_cnn"

    class MyCNN(type(model)):  # a user's subclass keeps its parent's rule
        pass

    assert find_target(MyCNN(3, 3)).family == "small_cnn"


def test_a_family_cannot_register_twice():
    with pytest.raises(ValueError, match="CAM target family 'ResNet' is registered twice"):
        register_target("ResNet")(lambda model: None)


def test_nhwc_features_become_nchw_and_token_grids_are_squared():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (B, H, W, C)
    assert torch.equal(nhwc_to_nchw(x), x.permute(0, 3, 1, 2))
    tokens = torch.randn(2, 9, 6)  # (B, N, C) with N a square: a 3x3 grid
    assert nhwc_to_nchw(tokens).shape == (2, 6, 3, 3)


def test_unknown_models_without_a_spatial_conv_are_refused():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(ConfigError, match="no CAM target layer for Sequential"):
        find_target(mlp, (3, 2, 2))
