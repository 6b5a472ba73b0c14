"""AdaptiveFusion: starts as the mean, weights sum to 1 and follow the input, bf16 and ONNX."""


import pytest
import torch

from tests.onnx_utils import assert_onnx_matches

from hybridmednet.layers.fusion import AdaptiveFusion


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _trained_fusion(channels: int, num_inputs: int) -> AdaptiveFusion:
    """A fusion whose zero-initialised output layer has moved, as after some training."""
    fusion = AdaptiveFusion(channels, num_inputs=num_inputs, reduction=2)
    torch.nn.init.normal_(fusion.mlp[-1].weight, std=0.5)
    torch.nn.init.normal_(fusion.mlp[-1].bias, std=0.5)
    return fusion


def _maps(num_inputs: int, shape=(4, 8, 6, 6)) -> list[torch.Tensor]:
    return [torch.randn(*shape) * (i + 1) for i in range(num_inputs)]


@pytest.mark.parametrize("num_inputs", [2, 3])
def test_fusion_starts_as_the_mean_of_its_inputs(num_inputs):
    maps = _maps(num_inputs)
    fusion = AdaptiveFusion(8, num_inputs=num_inputs)
    out = fusion(*maps)
    assert out.shape == maps[0].shape
    torch.testing.assert_close(fusion.last_weights, torch.full((4, num_inputs, 8), 1 / num_inputs))
    torch.testing.assert_close(out, torch.stack(maps).mean(0))


@pytest.mark.parametrize("num_inputs", [2, 3])
def test_weights_sum_to_one_and_give_the_output(num_inputs):
    maps = _maps(num_inputs)
    fusion = _trained_fusion(8, num_inputs)
    out = fusion(*maps)
    weights = fusion.last_weights
    assert weights.shape == (4, num_inputs, 8)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4, 8))
    expected = sum(weights[:, i, :, None, None] * m for i, m in enumerate(maps))
    torch.testing.assert_close(out, expected)


def test_weights_depend_on_the_input_per_sample_and_per_channel():
    fusion = _trained_fusion(8, 2)
    fusion(*_maps(2))
    first = fusion.last_weights.clone()
    fusion(*_maps(2))
    assert (first - fusion.last_weights).abs().max() > 1e-3  # another batch, other weights
    assert (first[0] - first[1]).abs().max() > 1e-3  # per sample
    assert (first[0, 0, 0] - first[0, 0, 1:]).abs().max() > 1e-3  # per channel


def test_a_list_and_separate_arguments_are_the_same_call():
    fusion, maps = _trained_fusion(8, 3), _maps(3)
    torch.testing.assert_close(fusion(maps), fusion(*maps))


def test_wrong_number_of_inputs_is_an_error():
    with pytest.raises(ValueError, match="expected 3 inputs, got 2"):
        AdaptiveFusion(8, num_inputs=3)(*_maps(2))
    with pytest.raises(ValueError, match="num_inputs must be >= 2"):
        AdaptiveFusion(8, num_inputs=1)


def test_gradients_reach_every_parameter_and_input():
    fusion = _trained_fusion(8, 2)
    maps = [m.requires_grad_() for m in _maps(2)]
    out = fusion(*maps)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(m.grad.abs().sum() > 0 for m in maps)


def test_bf16_autocast_weights_still_sum_to_one():
    fusion, maps = _trained_fusion(8, 3).eval(), _maps(3)
    with torch.no_grad():
        reference = fusion(*maps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fusion(*maps)
    assert low.shape == reference.shape
    torch.testing.assert_close(fusion.last_weights.sum(dim=1), torch.ones(4, 8))
    assert ((low.float() - reference).norm() / reference.norm()).item() < 0.02


@pytest.mark.parametrize("num_inputs", [2, 3])
def test_onnx_export_matches_pytorch(num_inputs, tmp_path):
    assert_onnx_matches(_trained_fusion(8, num_inputs), tuple(_maps(num_inputs, (2, 8, 5, 5))), tmp_path)
