"""``small_cnn_3d``: the fast default for volumes, a compact residual 3D CNN with 3D CBAM attention.

A 3x3x3 stride-2 stem (28^3 -> 14^3), then four stages of basic residual blocks (the first at
14^3, each later one halving the grid: 7, 4, 2) while widening; a :class:`CBAM3d` block after
each of the last two stages (``attention``) reweights channels and voxels. 3D convolutions run
several times less efficiently than 2D ones on a CPU, so the model is sized for MedMNIST 3D on 2
cores: about 0.07 GMAC per 28^3 volume (``stem_stride=1`` keeps 28^3 for the first stage, ~8x
the compute).
"""

from __future__ import annotations

import torch
from torch import nn

from hybridmednet.layers.volumetric import CBAM3d
from hybridmednet.models._registry import register_model
from hybridmednet.models.small_cnn import StemStagesClassifier


def conv3_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class BasicBlock3d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop_path: float = 0.0):
        super().__init__()
        from timm.layers import DropPath

        self.conv1 = conv3_bn_relu(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm3d(cout))
        nn.init.zeros_(self.conv2[1].weight)  # starts as identity, like small_cnn's blocks
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop_path(self.conv2(self.conv1(x))) + self.shortcut(x))


class SmallCNN3d(StemStagesClassifier):
    def __init__(self, num_classes: int, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128),
                 stem_stride: int = 2, attention: bool = True, drop_rate: float = 0.1, drop_path_rate: float = 0.0):
        super().__init__()
        self.stem = conv3_bn_relu(in_chans, widths[0], stem_stride)
        stages, cin = [], widths[0]
        for i, width in enumerate(widths):
            rate = drop_path_rate * i / max(len(widths) - 1, 1)
            block = [BasicBlock3d(cin, width, 1 if i == 0 else 2, rate)]
            if attention and i >= len(widths) - 2:
                block.append(CBAM3d(width))
            stages.append(nn.Sequential(*block))
            cin = width
        self.stages = nn.Sequential(*stages)
        self._add_head(cin, num_classes, drop_rate, nn.AdaptiveAvgPool3d(1))


@register_model(options=SmallCNN3d, spatial_dims=3)
def small_cnn_3d(num_classes: int, in_chans: int = 1, drop_rate: float = 0.1, **kwargs) -> SmallCNN3d:
    """About 0.9M parameters; the default 3D model."""
    return SmallCNN3d(num_classes, in_chans, drop_rate=drop_rate, **kwargs)
