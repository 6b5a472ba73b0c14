"""MHFBlockV2: exact identity at init, gated interpolation towards the refined map, bf16, ONNX."""


import numpy as np
import pytest
import torch

from tests.onnx_utils import assert_onnx_matches

from hybridmednet.layers.mhf import MHFBlockV2


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _opened(channels: int, global_scale: float = 0.5) -> MHFBlockV2:
    """A block whose zero-initialised gate has opened, as after some training."""
    block = MHFBlockV2(channels, reduction=4)
    torch.nn.init.constant_(block.global_scale, global_scale)
    torch.nn.init.uniform_(block.channel_scale, 0.5, 1.5)
    return block


@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (2, 32, 16, 16)])
@pytest.mark.parametrize("train", [True, False])
def test_block_is_the_exact_identity_at_init(shape, train):
    block = MHFBlockV2(shape[1]).train(train)
    assert block.global_scale.item() == 0.0
    assert torch.equal(block.channel_scale, torch.ones(1, shape[1], 1, 1))
    x = torch.randn(*shape)
    assert torch.equal(block(x), x)


def test_at_init_only_the_global_scale_learns():
    block = MHFBlockV2(16)
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    (out * torch.randn_like(out)).sum().backward()
    assert block.global_scale.grad.abs().item() > 0
    others = [p.grad for name, p in block.named_parameters() if name != "global_scale"]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in others)


@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (2, 32, 16, 16)])
def test_gradients_reach_every_parameter_once_the_gate_opens(shape):
    block = _opened(shape[1])
    out = block(torch.randn(*shape))
    assert out.shape == shape
    (out * torch.randn_like(out)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_fully_open_gate_gives_the_refined_map():
    block = MHFBlockV2(8, reduction=2)
    torch.nn.init.ones_(block.global_scale)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), block.refine(x))


def test_the_gate_interpolates_between_input_and_refined_map():
    block = _opened(8, global_scale=0.25)
    x = torch.randn(2, 8, 6, 6)
    scale = 0.25 * block.channel_scale
    torch.testing.assert_close(block(x), (1 - scale) * x + scale * block.refine(x))


def test_refinement_only_attenuates():
    block = MHFBlockV2(8, reduction=2)
    x = torch.randn(2, 8, 6, 6)
    refined = block.refine(x)
    assert (refined.abs() <= x.abs()).all()
    assert (refined.abs() < x.abs()).any()


def test_local_and_global_channel_branches_start_equally_mixed():
    block = MHFBlockV2(8)
    torch.testing.assert_close(block.mix_logits.softmax(0), torch.tensor([0.5, 0.5]))
    x = torch.randn(2, 8, 6, 6)
    before = block.refine(x)
    with torch.no_grad():
        block.mix_logits.copy_(torch.tensor([4.0, -4.0]))
    assert (block.refine(x) - before).abs().max() > 1e-4


def test_bf16_autocast_matches_fp32():
    block, x = _opened(16).eval(), torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        reference = block.refine(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_refined, low = block.refine(x), block(x)
    assert low.shape == x.shape and torch.isfinite(low).all()
    assert ((low_refined.float() - reference).norm() / reference.norm()).item() < 0.02


def test_onnx_export_matches_pytorch(tmp_path):
    x = torch.randn(2, 16, 8, 8)
    expected = assert_onnx_matches(_opened(16), (x,), tmp_path)
    assert np.abs(expected - x.numpy()).max() > 1e-2  # the gate is open: not a trivial identity check
