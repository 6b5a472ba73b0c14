"""Every fusion strategy: output shape, gradients into both modalities, masked tokens ignored."""

from __future__ import annotations

import pytest
import torch

from hybridmednet.errors import ConfigError
from hybridmednet.layers.modality_fusion import (
    FUSIONS,
    MultiLevelFusion,
    TokenAttention,
    create_fusion,
)

D = 16


def _inputs(b=3, n=5, t=4):
    torch.manual_seed(0)
    img_tokens = torch.randn(b, n, D, requires_grad=True)
    txt_tokens = torch.randn(b, t, D, requires_grad=True)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 2:] = False
    return img_tokens, txt_tokens, mask


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_shapes_and_gradients(name):
    fusion = create_fusion(name, D, heads=2, rank=3)
    img_tokens, txt_tokens, mask = _inputs()
    out = fusion(img_tokens, img_tokens.mean(1), txt_tokens, mask, txt_tokens.mean(1))
    assert out.shape == (3, fusion.out_dim)
    out.square().sum().backward()
    assert txt_tokens.grad.abs().sum() > 0
    if name != "clinical_only":
        assert img_tokens.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["cross_attention", "co_attention", "ssm"])
def test_masked_text_tokens_do_not_matter(name):
    fusion = create_fusion(name, D, heads=2).eval()
    img_tokens, txt_tokens, mask = _inputs()
    changed = txt_tokens.detach().clone()
    changed[0, 2:] = 100.0  # padding positions of sample 0
    a = fusion(img_tokens, img_tokens.mean(1), txt_tokens, mask, txt_tokens.mean(1))
    b = fusion(img_tokens, img_tokens.mean(1), changed, mask, txt_tokens.mean(1))
    torch.testing.assert_close(a[0], b[0])


def test_attention_keeps_batch_and_tokens_dynamic():
    attn = TokenAttention(D, 4)
    for b, t in ((1, 1), (4, 7)):
        assert attn(torch.randn(b, 3, D), torch.randn(b, t, D), torch.ones(b, t, dtype=torch.bool)).shape == (b, 3, D)


def test_multi_level_weights_are_per_sample_and_sum_to_one():
    fusion = MultiLevelFusion(D, levels=3)
    imgs = [torch.randn(2, D, requires_grad=True) for _ in range(3)]
    out = fusion(imgs, [torch.randn(2, D) for _ in range(3)])
    assert out.shape == (2, D)
    torch.testing.assert_close(fusion.last_weights.sum(1), torch.ones(2))
    out.sum().backward()
    assert all(i.grad.abs().sum() > 0 for i in imgs)


def test_unknown_fusion_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown fusion .sum_of_squares.; choose one of add, bilinear"):
        create_fusion("sum_of_squares", D)


def test_stage_fusions_are_the_ones_the_config_knows():
    from hybridmednet.config.schema import STAGE_FUSIONS as CONFIG_STAGE_FUSIONS
    from hybridmednet.layers.modality_fusion import STAGE_FUSIONS

    assert set(STAGE_FUSIONS) == set(CONFIG_STAGE_FUSIONS) and not set(STAGE_FUSIONS) & set(FUSIONS)


def test_the_ssm_fusion_reads_image_tokens_in_order():
    """A sequence model, unlike a pooled operator, sees the order of the image tokens."""
    fusion = create_fusion("ssm", D, depth=2).eval()
    img_tokens, txt_tokens, mask = _inputs()
    a = fusion(img_tokens, None, txt_tokens, mask, None)
    b = fusion(img_tokens.flip(1), None, txt_tokens, mask, None)
    assert not torch.allclose(a, b)
