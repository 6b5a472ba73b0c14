"""``FPNNeck``: turn a backbone's multi-scale feature maps into one map for a classifier head.

A classifier that reads only the last stage sees a 2x2 map at 64 px and misses small lesions
that earlier, finer stages still resolve. The FPN top-down path (Lin et al., 2017) gives every
level the semantics of the deepest one; the learned scale weights (EfficientDet's weighted
fusion, Tan et al., 2020) then let training decide how much each scale contributes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.layers.fusion import _as_tuple
from hybridmednet.layers.pooling import pool_to

__all__ = ["FPNNeck"]


class FPNNeck(nn.Module):
    """FPN top-down fusion, then a softmax-weighted sum of all levels at the coarsest size.

    ``forward(*features)`` takes the levels finest first (strides 4, 8, 16, 32: the order of
    timm's ``features_only`` output), as separate arguments or one list, with channels
    ``in_channels[i]``. Steps:

    1. lateral 1x1 conv of each level to ``out_channels``;
    2. top-down: from the coarsest level, nearest-upsample and add into the next finer one;
    3. a 3x3 smoothing conv per level (removes upsampling aliasing);
    4. every level is average-pooled to the coarsest level's size and the levels are summed
       with weights ``softmax(scale_logits)`` (initialised equal). Fusing at the coarsest size
       is the cheap choice: pooling costs nothing compared with upsampling every level to the
       finest, and a classifier head pools globally anyway.

    Returns ``(B, out_channels, h, w)`` with ``(h, w)`` the coarsest level's size.
    ``last_scale_weights`` holds the ``(num_levels,)`` weights used (detached, sum to 1).

    ONNX: step 4 exports when every level's size is a whole multiple of the coarsest one (true
    for power-of-two strides at input sizes divisible by the largest stride).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"FPNNeck needs at least 2 levels, got {len(in_channels)}")
        self.num_levels = len(in_channels)
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.scale_logits = nn.Parameter(torch.zeros(self.num_levels))
        self.last_scale_weights: torch.Tensor | None = None

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        levels = _as_tuple(features)
        if len(levels) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature levels, got {len(levels)}")
        laterals = [conv(f) for conv, f in zip(self.lateral, levels)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            merged.insert(0, lateral + F.interpolate(merged[0], size=lateral.shape[-2:], mode="nearest"))
        smoothed = [conv(m) for conv, m in zip(self.smooth, merged)]
        # Sizes are read from the inputs: after the top-down resize, ONNX tracing no longer knows them.
        pooled = [pool_to(m, levels[-1].shape[-2:]) for m, level in zip(smoothed, levels)]
        weights = self.scale_logits.softmax(dim=0)
        self.last_scale_weights = weights.detach()
        return (torch.stack(pooled, dim=0) * weights.reshape(-1, 1, 1, 1, 1)).sum(dim=0)
