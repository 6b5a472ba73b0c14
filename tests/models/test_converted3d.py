"""2D -> 3D models start from a 2D small_cnn run's weights."""

import pytest
import torch

from hybridmednet.errors import CheckpointError
from hybridmednet.models import create_model


@pytest.mark.parametrize("name", ["acs_small_cnn", "i3d_small_cnn"])
def test_2d_weights_load_into_the_3d_model(name):
    torch.manual_seed(0)
    flat = create_model("small_cnn", num_classes=2, in_chans=3)  # a 2.5D run: three slices as channels
    model = create_model(name, num_classes=2, in_chans=1)
    model.load_state_dict(model.adapt_init_weights(flat.state_dict()))
    stem2d, stem3d = flat.stem[0].weight, model.stem[0].weight
    if name == "acs_small_cnn":
        torch.testing.assert_close(stem3d, stem2d.sum(1, keepdim=True))  # 2D kernels kept, channels summed
    else:
        torch.testing.assert_close(stem3d.sum(2), stem2d.sum(1, keepdim=True))  # inflated: depth sums to the 2D kernel
    torch.testing.assert_close(model.stages[1].conv1[0].weight.reshape(-1)[:5] if name == "acs_small_cnn"
                               else model.stages[1].conv1[0].weight.sum(2).reshape(-1)[:5],
                               flat.stages[1].conv1[0].weight.reshape(-1)[:5])
    assert model(torch.randn(2, 1, 16, 16, 16)).shape == (2, 2)


def test_another_class_count_keeps_the_new_head_and_a_wrong_model_is_refused():
    flat = create_model("small_cnn", num_classes=7, in_chans=3)
    model = create_model("acs_small_cnn", num_classes=2, in_chans=1)
    adapted = model.adapt_init_weights(flat.state_dict())
    assert adapted["head.weight"].shape == (2, 256)
    with pytest.raises(CheckpointError, match="stem.0.weight has shape .* start from a small_cnn run"):
        model.adapt_init_weights(create_model("small_cnn_3d", num_classes=2).state_dict())
