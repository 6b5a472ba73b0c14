"""Every registered model builds, runs forward and backward with 1 and 3 channels."""

import pytest
import torch

from hybridmednet.errors import ConfigError
from hybridmednet.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_registered_model_forward_backward(name, in_chans):
    model = create_model(name, num_classes=5, in_chans=in_chans)
    x = torch.randn(2, in_chans, 28, 28, requires_grad=False)
    logits = model(x)
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_timm_model_with_small_stem():
    model = create_model("resnet18", num_classes=3, in_chans=1, image_size=28)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    big = create_model("resnet18", num_classes=3, image_size=224)
    assert big.conv1.kernel_size == (7, 7)


def test_small_stem_on_a_model_without_one_is_an_error():
    with pytest.raises(ConfigError, match="needs a ResNet-style stem"):
        create_model("mobilenetv3_small_050", num_classes=2, small_stem=True)


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="unknown model 'resnet_nope'; registered: small_cnn"):
        create_model("resnet_nope", num_classes=2)


def test_timm_pretrained_from_local_file(tmp_path):
    from safetensors.torch import save_file

    source = create_model("resnet18", num_classes=1000)
    save_file(source.state_dict(), tmp_path / "r18.safetensors")
    model = create_model("resnet18", num_classes=4, pretrained_file=str(tmp_path / "r18.safetensors"))
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 4
