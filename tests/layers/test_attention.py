"""Attention blocks: shapes, gradients, identity at init, bounded memory, bf16 and ONNX parity."""


import pytest
import torch

from tests.onnx_utils import assert_onnx_matches
import torch.nn.functional as F

from hybridmednet.layers.attention import CBAM, CrossBranchAttention, CrossScaleAttention, MultiHeadSelfAttention2d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _cross_branch() -> CrossBranchAttention:
    block = CrossBranchAttention(16, context_channels=8)
    torch.nn.init.constant_(block.gamma, 0.5)  # off its zero init, so the attention path counts
    return block


# name -> (build the block, its inputs); the query map always comes first.
CASES = {
    "cbam": (lambda: CBAM(16, reduction=4), lambda: (torch.randn(2, 16, 8, 8),)),
    "self_attention": (lambda: MultiHeadSelfAttention2d(16, num_heads=4), lambda: (torch.randn(2, 16, 6, 5),)),
    "cross_scale": (lambda: CrossScaleAttention(16, num_heads=2, context_channels=8),
                    lambda: (torch.randn(2, 16, 16, 16), torch.randn(2, 8, 14, 14))),
    "cross_scale_self": (lambda: CrossScaleAttention(16, num_heads=4), lambda: (torch.randn(2, 16, 14, 14),)),
    "cross_branch": (_cross_branch, lambda: (torch.randn(2, 16, 8, 8), torch.randn(2, 8, 16, 16))),
}


@pytest.mark.parametrize("name", CASES)
def test_output_keeps_query_shape_and_changes_features(name):
    build, make_inputs = CASES[name]
    inputs = make_inputs()
    out = build()(*inputs)
    assert out.shape == inputs[0].shape
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, inputs[0])


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_every_parameter(name):
    build, make_inputs = CASES[name]
    block = build()
    out = block(*make_inputs())
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", CASES)
def test_bf16_autocast_matches_fp32(name):
    build, make_inputs = CASES[name]
    block, inputs = build().eval(), make_inputs()
    with torch.no_grad():
        reference = block(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(*inputs)
    assert low.shape == reference.shape
    assert ((low.float() - reference).norm() / reference.norm()).item() < 0.02


@pytest.mark.parametrize("name", CASES)
def test_onnx_export_matches_pytorch(name, tmp_path):
    build, make_inputs = CASES[name]
    assert_onnx_matches(build(), make_inputs(), tmp_path)


# --- CBAM ----------------------------------------------------------------------------------------

def test_cbam_only_attenuates():
    x = torch.randn(2, 8, 7, 7)
    out = CBAM(8, reduction=2, spatial_kernel=3)(x)
    assert (out.abs() <= x.abs()).all()
    assert (out.abs() < x.abs()).any()


def test_cbam_rejects_an_even_spatial_kernel():
    with pytest.raises(ValueError, match="spatial_kernel must be odd"):
        CBAM(8, spatial_kernel=4)


# --- MultiHeadSelfAttention2d ---------------------------------------------------------------------

def test_stored_attention_path_computes_the_same_function():
    fused = MultiHeadSelfAttention2d(16, num_heads=4).eval()
    explicit = MultiHeadSelfAttention2d(16, num_heads=4, store_attention=True).eval()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(explicit(x), fused(x), rtol=1e-5, atol=1e-5)
    assert fused.last_attention is None
    assert explicit.last_attention.shape == (2, 5, 6)
    torch.testing.assert_close(explicit.last_attention.sum(dim=(1, 2)), torch.ones(2))


def test_self_attention_has_no_positional_encoding():
    block = MultiHeadSelfAttention2d(8, num_heads=2).eval()
    x = torch.randn(1, 8, 4, 6)
    torch.testing.assert_close(block(x.flip(-1)), block(x).flip(-1), rtol=1e-5, atol=1e-5)


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadSelfAttention2d(10, num_heads=4)


# --- CrossScaleAttention -------------------------------------------------------------------------

@pytest.mark.parametrize("context_hw, kv_tokens", [((64, 64), 49), ((32, 20), 49), ((5, 6), 30)])
def test_cross_scale_attention_matrix_is_bounded_by_kv_size(context_hw, kv_tokens):
    block = CrossScaleAttention(8, num_heads=2, kv_size=7, context_channels=4, store_attention=True)
    out = block(torch.randn(1, 8, 64, 64), torch.randn(1, 4, *context_hw))
    assert out.shape == (1, 8, 64, 64)
    assert block.last_attention.shape == (1, 64 * 64, kv_tokens)  # 4096 queries x at most 7*7 keys
    torch.testing.assert_close(block.last_attention.sum(-1), torch.ones(1, 4096))


def test_cross_scale_without_context_attends_to_its_own_pooled_map():
    block = CrossScaleAttention(8, num_heads=2, kv_size=4, store_attention=True)
    x = torch.randn(2, 8, 16, 16)
    out = block(x)
    assert block.last_attention.shape == (2, 256, 16)
    torch.testing.assert_close(out, block(x, x))


# --- CrossBranchAttention ------------------------------------------------------------------------

@pytest.mark.parametrize("context_shape", [None, (2, 8, 6, 6), (2, 8, 12, 12)])
def test_cross_branch_starts_as_identity(context_shape):
    block = CrossBranchAttention(8, context_channels=8)
    assert block.gamma.item() == 0.0
    x = torch.randn(2, 8, 6, 6)
    context = None if context_shape is None else torch.randn(*context_shape)
    assert torch.equal(block(x, context), x)


@pytest.mark.parametrize("channels, inner", [(4, 1), (16, 2), (64, 8)])
def test_cross_branch_query_key_width_is_an_eighth(channels, inner):
    block = CrossBranchAttention(channels)
    assert block.query.out_channels == block.key.out_channels == inner
    assert block.value.out_channels == channels


def test_cross_branch_pools_a_larger_context_to_the_query_size():
    block = _cross_branch().eval()
    x, context = torch.randn(2, 16, 8, 8), torch.randn(2, 8, 16, 16)
    torch.testing.assert_close(block(x, context), block(x, F.avg_pool2d(context, 2)))


def test_cross_branch_stores_the_key_attention_map():
    block = CrossBranchAttention(16, context_channels=8, store_attention=True)
    block(torch.randn(3, 16, 5, 7), torch.randn(3, 8, 5, 7))
    assert block.last_attention.shape == (3, 5, 7)
    torch.testing.assert_close(block.last_attention.sum(dim=(1, 2)), torch.ones(3))


def test_cross_branch_needs_a_context_when_its_width_differs():
    with pytest.raises(ValueError, match="context is required"):
        CrossBranchAttention(16, context_channels=8)(torch.randn(1, 16, 4, 4))
