"""3D blocks: ACS and inflated convolutions reproduce the 2D kernel's response where they should."""

import pytest
import torch
from torch import nn

from hybridmednet.layers.volumetric import CBAM3d, ACSConv, convert_to_3d, inflate_conv


def test_acs_axial_part_is_the_2d_conv_on_each_axial_slice():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    acs = ACSConv.from_conv2d(conv)
    assert acs.parts == [2, 2, 2] and acs.state_dict()["weight"].shape == conv.weight.shape
    x = torch.randn(2, 3, 5, 7, 7)
    out = acs(x)
    assert out.shape == (2, 6, 5, 7, 7)
    for z in range(5):  # the axial third: a (1, k, k) kernel, i.e. the 2D conv slice by slice
        torch.testing.assert_close(out[:, :2, z], conv(x[:, :, z])[:, :2], atol=1e-5, rtol=1e-5)
    for w in range(7):  # the sagittal third: the 2D kernel over (D, H) planes
        torch.testing.assert_close(out[:, 4:, :, :, w], conv(x[..., w])[:, 4:], atol=1e-5, rtol=1e-5)


def test_acs_keeps_depthwise_convolutions_depthwise_and_strides_every_axis():
    conv = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False)
    acs = ACSConv.from_conv2d(conv)
    assert acs(torch.randn(1, 6, 8, 8, 8)).shape == (1, 6, 4, 4, 4)


def test_inflated_conv_on_identical_slices_is_the_2d_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    inflated = inflate_conv(conv)
    image = torch.randn(1, 2, 6, 6)
    volume = image[:, :, None].repeat(1, 1, 5, 1, 1)
    out = inflated(volume)
    torch.testing.assert_close(out[:, :, 2], conv(image), atol=1e-5, rtol=1e-5)  # interior slice: no padding effect


def test_convert_keeps_batchnorm_statistics_and_converts_pools():
    bn = nn.BatchNorm2d(4)
    bn.running_mean.fill_(0.3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), bn, nn.MaxPool2d(2), nn.Dropout2d(0.1), nn.AdaptiveAvgPool2d(1))
    convert_to_3d(net, "inflate")
    assert isinstance(net[1], nn.BatchNorm3d) and float(net[1].running_mean[0]) == pytest.approx(0.3)
    assert isinstance(net[2], nn.MaxPool3d) and isinstance(net[3], nn.Dropout3d) and isinstance(net[4], nn.AdaptiveAvgPool3d)
    assert net(torch.randn(2, 1, 8, 8, 8)).shape == (2, 4, 1, 1, 1)
    with pytest.raises(ValueError, match="mode must be"):
        convert_to_3d(net, "nope")


def test_cbam3d_keeps_the_shape_and_only_attenuates():
    x = torch.rand(2, 8, 4, 4, 4)
    out = CBAM3d(8)(x)
    assert out.shape == x.shape and bool((out <= x + 1e-6).all())
