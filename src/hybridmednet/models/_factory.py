"""``create_model(name, num_classes, in_chans, ...)``: registered models first, then timm."""

from __future__ import annotations

from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.models._registry import (
    image_size_arg,
    is_model,
    list_models,
    model_builder,
)


def create_model(name: str, num_classes: int, in_chans: int = 3, *, pretrained: bool = False,
                 pretrained_file: str | None = None, drop_rate: float = 0.0, small_stem: bool | str = "auto",
                 image_size: int | None = None, **kwargs) -> nn.Module:
    """Build a model by name.

    ``small_stem="auto"`` turns the CIFAR-style stem on for timm ResNets when ``image_size`` is
    at most 64 px.
    """
    if is_model(name):
        if pretrained or pretrained_file:
            raise ConfigError(f"model.pretrained: {name!r} is a HybridMedNet model with no pretrained weights")
        size_arg = image_size_arg(name)
        if size_arg and image_size is not None:
            kwargs.setdefault(size_arg, image_size)
        return model_builder(name)(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **kwargs)
    from hybridmednet.models.timm_models import create_timm_model, is_timm_model

    if not is_timm_model(name):
        raise ConfigError(f"model.name: unknown model {name!r}; registered: {', '.join(list_models())}; "
                          "or any timm model (list them with `hybridmednet models --timm '*resnet*'`)")
    if small_stem == "auto":
        small_stem = name.startswith(("resnet", "resnext", "seresnet", "wide_resnet")) and (image_size or 224) <= 64
    return create_timm_model(name, num_classes, in_chans, pretrained=pretrained, pretrained_file=pretrained_file,
                             drop_rate=drop_rate, small_stem=bool(small_stem), **kwargs)
