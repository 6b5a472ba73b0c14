"""``MHFBlockV2``: the "MHF_block_v2" feature-refinement block, made safe to add to a trained
network.

The original MHF block multiplied features by attention maps directly, which changes a
pretrained backbone's activations the moment it is inserted. V2 keeps the same ingredients
(multi-scale channel attention and multi-kernel spatial attention) but wraps them in a gated,
zero-initialised residual, so at step 0 the block is the exact identity and fine-tuning starts
from the pretrained model's behaviour.
"""

from __future__ import annotations

import torch
from torch import nn

from hybridmednet.layers.attention import bottleneck_width, channel_pool

__all__ = ["MHFBlockV2"]


def _pointwise_mlp(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))


class MHFBlockV2(nn.Module):
    """Multi-scale channel attention, multi-kernel spatial attention, gated zero-init residual.

    1. Channel attention at two scales (as in MS-CAM, Dai et al. 2021): a *local* branch, a 1x1
       conv bottleneck applied at every position ``(B, C, H, W)``, and a *global* branch, the
       same bottleneck on the global-average-pooled descriptor ``(B, C, 1, 1)``. Their logits are
       mixed by a learnable softmax weight pair (``mix_logits``, starting at 50/50), then a
       sigmoid gates ``x``. No BatchNorm, so train and eval mode agree and batch size 1 works.
    2. Spatial attention: parallel 3x3 and 5x5 convs over the channel-mean and channel-max maps
       of the channel-refined features, summed, sigmoid; two receptive fields for lesions of
       different sizes.
    3. Gate: ``out = x + global_scale * channel_scale * (refined - x)``. ``global_scale`` is a
       scalar initialised to 0 (so ``block(x) == x`` exactly at init); ``channel_scale`` is
       per-channel, initialised to 1. The delta form, rather than ``x + s * refined``, makes the
       gate an interpolation: at ``s = 1`` the output is exactly ``refined`` and the activation
       scale never drifts to ``(1 + s) * x``, which downstream BatchNorm statistics of a
       pretrained model would not expect.

    At init only ``global_scale`` receives a gradient (the others are multiplied by it); once it
    moves off 0 every parameter trains, as with ReZero / LayerScale.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = bottleneck_width(channels, reduction)
        self.local_mlp = _pointwise_mlp(channels, hidden)
        self.global_mlp = _pointwise_mlp(channels, hidden)
        self.mix_logits = nn.Parameter(torch.zeros(2))
        self.spatial3 = nn.Conv2d(2, 1, 3, padding=1)
        self.spatial5 = nn.Conv2d(2, 1, 5, padding=2)
        self.global_scale = nn.Parameter(torch.zeros(1))
        self.channel_scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def refine(self, x: torch.Tensor) -> torch.Tensor:
        """The attention-refined features, before the gated residual."""
        mix = self.mix_logits.softmax(dim=0)
        channel_logits = mix[0] * self.local_mlp(x) + mix[1] * self.global_mlp(x.mean(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(channel_logits)
        pooled = channel_pool(x)
        return x * torch.sigmoid(self.spatial3(pooled) + self.spatial5(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.global_scale * self.channel_scale * (self.refine(x) - x)
