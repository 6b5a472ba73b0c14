"""Blocks for ``(B, C, D, H, W)`` volumes: 3D CBAM attention, ACS convolutions, and the conversion of
a 2D network (and its weights) into a 3D one.

* :class:`CBAM3d` - CBAM (Woo et al. 2018) with a 3D spatial gate: channel attention from the
  pooled descriptors, then a ``k^3`` convolution over the channel-mean and channel-max volumes
  (the seeds' "3D spatial attention block").
* :class:`ACSConv` - Yang et al., "Reinforcing 2D networks for 3D medical image analysis" (ACS
  convolutions, IEEE JBHI 2021): a 2D kernel kept as is and applied axially, coronally and
  sagittally, each view producing a third of the output channels, so 2D weights (a 2D run's, or a
  2D pretrained network's) are reused unchanged in 3D.
* :func:`inflate_conv` - I3D-style inflation (Carreira & Zisserman 2017): a ``k x k`` kernel
  repeated ``k`` times along depth and divided by ``k``, so a volume of identical slices gives the
  2D network's response.
* :func:`convert_to_3d` - every ``Conv2d`` of a module becomes one of the two, and BatchNorm,
  pooling and channel dropout become their 3D versions, with their state kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.layers.attention import bottleneck_width, channel_pool


class CBAM3d(nn.Module):
    """CBAM over volumes; like :class:`~hybridmednet.layers.attention.CBAM` it only attenuates."""

    def __init__(self, channels: int, reduction: int = 8, spatial_kernel: int = 5):
        super().__init__()
        if spatial_kernel % 2 == 0:
            raise ValueError(f"spatial_kernel must be odd to keep the spatial size, got {spatial_kernel}")
        hidden = bottleneck_width(channels, reduction)
        self.channel_mlp = nn.Sequential(nn.Conv3d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv3d(hidden, channels, 1))
        self.spatial_conv = nn.Conv3d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.channel_mlp(x.mean(dim=(2, 3, 4), keepdim=True))
        peak = self.channel_mlp(x.amax(dim=(2, 3, 4), keepdim=True))
        x = x * torch.sigmoid(avg + peak)
        return x * torch.sigmoid(self.spatial_conv(channel_pool(x)))


def _split(out_channels: int, per_group: int) -> list[int]:
    """Output channels of the axial, coronal and sagittal views, in whole groups."""
    units = out_channels // per_group
    return [(units // 3 + (1 if i < units % 3 else 0)) * per_group for i in range(3)]


class ACSConv(nn.Module):
    """A 2D convolution's weights applied to volumes along the three orthogonal planes.

    ``weight`` keeps the 2D shape ``(out, in / groups, k, k)``, so ``state_dict`` keys and shapes
    equal the 2D layer's. Output channels are split into three parts (whole groups, so depthwise
    layers stay depthwise): the axial part convolves with a ``(1, k, k)`` kernel, the coronal with
    ``(k, 1, k)``, the sagittal with ``(k, k, 1)``; stride and padding act on every axis."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        # groups == 1: every output reads every input, so any channel split works; grouped layers
        # split in whole groups
        self.parts = _split(out_channels, 1 if groups == 1 else out_channels // groups)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d) -> ACSConv:
        k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        if len({*k}) != 1 or len({*s}) != 1 or len({*d}) != 1 or isinstance(p, str) or len({*p}) != 1:
            raise ValueError(f"ACS conversion needs square kernels, strides and paddings; got {conv}")
        out = cls(conv.in_channels, conv.out_channels, k[0], s[0], p[0], d[0], conv.groups, conv.bias is not None)
        with torch.no_grad():
            out.weight.copy_(conv.weight)
            if conv.bias is not None:
                out.bias.copy_(conv.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_per_group, in_per_group = self.out_channels // self.groups, self.in_channels // self.groups
        outputs, start = [], 0
        for axis, size in enumerate(self.parts):
            if size == 0:
                continue
            groups = 1 if self.groups == 1 else size // out_per_group
            first_group = start // out_per_group
            inputs = x if self.groups == 1 else x[:, first_group * in_per_group:(first_group + groups) * in_per_group]
            weight = self.weight[start:start + size].unsqueeze(2 + axis)
            padding = tuple(0 if a == axis else self.padding for a in range(3))
            dilation = tuple(1 if a == axis else self.dilation for a in range(3))
            bias = None if self.bias is None else self.bias[start:start + size]
            outputs.append(F.conv3d(inputs, weight, bias, self.stride, padding, dilation, groups))
            start += size
        return torch.cat(outputs, dim=1)


def inflate_conv(conv: nn.Conv2d) -> nn.Conv3d:
    """I3D inflation of a 2D convolution (weights repeated along depth / k)."""
    k = conv.kernel_size[0]
    pad = conv.padding if isinstance(conv.padding, str) else (conv.padding[0],) + tuple(conv.padding)
    out = nn.Conv3d(conv.in_channels, conv.out_channels, (k,) + tuple(conv.kernel_size), (conv.stride[0],) + tuple(conv.stride),
                    pad, (conv.dilation[0],) + tuple(conv.dilation), conv.groups, conv.bias is not None)
    with torch.no_grad():
        out.weight.copy_(inflate_weight(conv.weight, k))
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


def inflate_weight(weight: torch.Tensor, depth: int) -> torch.Tensor:
    """``(out, in, k, k) -> (out, in, depth, k, k)``, summing to the 2D kernel along depth."""
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


def _batchnorm_3d(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    out = nn.BatchNorm3d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    out.load_state_dict(bn.state_dict())
    return out


def _pool_size(value):
    return value[0] if isinstance(value, tuple) else value


def convert_to_3d(module: nn.Module, mode: str) -> nn.Module:
    """Replace, in place, every 2D layer of ``module`` by its 3D counterpart (``mode``: ``acs`` or
    ``inflate`` for convolutions), keeping weights and statistics; returns ``module``. Modules that
    call 2D functions directly (not through these layers) are not converted: their forward fails
    on volumes, which the registry's tests catch."""
    if mode not in ("acs", "inflate"):
        raise ValueError(f"mode must be 'acs' or 'inflate', got {mode!r}")
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            new = ACSConv.from_conv2d(child) if mode == "acs" else inflate_conv(child)
        elif isinstance(child, nn.BatchNorm2d):
            new = _batchnorm_3d(child)
        elif isinstance(child, nn.MaxPool2d):
            new = nn.MaxPool3d(_pool_size(child.kernel_size), _pool_size(child.stride), _pool_size(child.padding))
        elif isinstance(child, nn.AvgPool2d):
            new = nn.AvgPool3d(_pool_size(child.kernel_size), _pool_size(child.stride), _pool_size(child.padding))
        elif isinstance(child, nn.AdaptiveAvgPool2d):
            new = nn.AdaptiveAvgPool3d(_pool_size(child.output_size))
        elif isinstance(child, nn.Dropout2d):
            new = nn.Dropout3d(child.p)
        else:
            convert_to_3d(child, mode)
            continue
        setattr(module, name, new)
    return module
