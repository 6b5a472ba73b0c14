"""3D ResNet-18 / 34 from MONAI (``monai.networks.nets.ResNet``, Hara et al. 2018 layout).

MONAI's network is used as is (a well-kept implementation); the wrapper only adds dropout before
its classifier and exposes the stem options that matter at MedMNIST's 28^3: ``conv1_t_size`` /
``conv1_t_stride`` (the stem kernel and stride, 7 and 2 by default) and ``no_max_pool`` (False:
the stem and max-pool take 28^3 to 7^3, the cheap setting; True keeps 14^3 for layer 1, about 4x
the compute).
"""

from __future__ import annotations

from torch import nn

from hybridmednet.models._registry import register_model


class MonaiResNet3d(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 1, depth: int = 18, conv1_t_size: int = 7,
                 conv1_t_stride: int = 2, no_max_pool: bool = False, drop_rate: float = 0.1):
        super().__init__()
        from monai.networks import nets

        builder = {18: nets.resnet18, 34: nets.resnet34}[depth]
        self.net = builder(spatial_dims=3, n_input_channels=in_chans, num_classes=num_classes,
                           conv1_t_size=conv1_t_size, conv1_t_stride=conv1_t_stride, no_max_pool=no_max_pool)
        self.num_features = self.net.fc.in_features
        self.net.fc = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes))

    def forward(self, x):
        return self.net(x)


@register_model(spatial_dims=3)
def resnet3d_18(num_classes: int, in_chans: int = 1, drop_rate: float = 0.1, conv1_t_size: int = 7,
                conv1_t_stride: int = 2, no_max_pool: bool = False) -> MonaiResNet3d:
    """3D ResNet-18 (MONAI), about 33M parameters."""
    return MonaiResNet3d(num_classes, in_chans, 18, conv1_t_size, conv1_t_stride, no_max_pool, drop_rate)


@register_model(spatial_dims=3)
def resnet3d_34(num_classes: int, in_chans: int = 1, drop_rate: float = 0.1, conv1_t_size: int = 7,
                conv1_t_stride: int = 2, no_max_pool: bool = False) -> MonaiResNet3d:
    """3D ResNet-34 (MONAI), about 63M parameters."""
    return MonaiResNet3d(num_classes, in_chans, 34, conv1_t_size, conv1_t_stride, no_max_pool, drop_rate)
