"""FPNNeck on ResNet-like pyramids (strides 4..32 at 64 px): shape, scale weights, bf16, ONNX."""


import pytest
import torch

from tests.onnx_utils import assert_onnx_matches

from hybridmednet.layers.neck import FPNNeck

# A 64 px image through a ResNet-style backbone at strides 4, 8, 16, 32 (channels scaled down).
PYRAMIDS = {
    "4_levels": ([8, 16, 32, 64], [16, 8, 4, 2]),
    "3_levels": ([16, 32, 64], [8, 4, 2]),
    "3_levels_odd": ([8, 16, 32], [15, 8, 4]),  # not whole multiples: adaptive pooling fallback
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _features(name: str, batch: int = 2) -> list[torch.Tensor]:
    channels, sizes = PYRAMIDS[name]
    return [torch.randn(batch, c, s, s) for c, s in zip(channels, sizes)]


def _trained_neck(name: str, out_channels: int = 12) -> FPNNeck:
    neck = FPNNeck(PYRAMIDS[name][0], out_channels)
    torch.nn.init.normal_(neck.scale_logits)  # off the equal-weight init
    return neck


@pytest.mark.parametrize("name", PYRAMIDS)
def test_output_is_one_map_at_the_coarsest_size(name):
    neck = FPNNeck(PYRAMIDS[name][0], out_channels=12)
    coarsest = PYRAMIDS[name][1][-1]
    assert neck(*_features(name)).shape == (2, 12, coarsest, coarsest)
    levels = len(PYRAMIDS[name][0])
    torch.testing.assert_close(neck.last_scale_weights, torch.full((levels,), 1 / levels))


@pytest.mark.parametrize("name", PYRAMIDS)
def test_scale_weights_are_softmax_normalised(name):
    neck = _trained_neck(name)
    neck(_features(name))
    weights = neck.last_scale_weights
    assert (weights > 0).all() and len(set(weights.tolist())) == len(weights)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(weights, neck.scale_logits.detach().softmax(0))


def test_top_down_path_carries_coarse_context_into_the_finest_level():
    neck = FPNNeck(PYRAMIDS["4_levels"][0], 12)
    with torch.no_grad():
        neck.scale_logits.copy_(torch.tensor([50.0, -50.0, -50.0, -50.0]))  # read the finest level only
    features = _features("4_levels")
    before = neck(features)
    features[-1] = torch.randn_like(features[-1])  # change only the stride-32 map
    assert (neck(features) - before).abs().max() > 1e-3


def test_a_list_and_separate_arguments_are_the_same_call():
    neck, features = _trained_neck("4_levels"), _features("4_levels")
    torch.testing.assert_close(neck(features), neck(*features))


def test_wrong_number_of_levels_is_an_error():
    with pytest.raises(ValueError, match="expected 4 feature levels, got 3"):
        FPNNeck(PYRAMIDS["4_levels"][0], 8)(*_features("4_levels")[:3])
    with pytest.raises(ValueError, match="at least 2 levels"):
        FPNNeck([8], 8)


@pytest.mark.parametrize("name", ["4_levels", "3_levels_odd"])
def test_gradients_reach_every_parameter_and_level(name):
    neck = _trained_neck(name)
    features = [f.requires_grad_() for f in _features(name)]
    out = neck(features)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert all(f.grad.abs().sum() > 0 for f in features)


def test_bf16_autocast_matches_fp32():
    neck, features = _trained_neck("4_levels").eval(), _features("4_levels")
    with torch.no_grad():
        reference = neck(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = neck(features)
    assert low.shape == reference.shape
    assert ((low.float() - reference).norm() / reference.norm()).item() < 0.02


@pytest.mark.parametrize("name", ["4_levels", "3_levels"])
def test_onnx_export_matches_pytorch(name, tmp_path):
    assert_onnx_matches(_trained_neck(name), tuple(_features(name)), tmp_path)
