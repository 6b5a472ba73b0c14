"""``create_model(name, num_classes, in_chans, ...)``: registered models first, then timm."""

from __future__ import annotations

import logging

from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.models._registry import (
    MODELS,
    image_size_arg,
    is_model,
    list_models,
    model_builder,
)


def check_model_options(name: str, kwargs: dict) -> dict:
    """``model.kwargs`` validated against what model ``name`` declares (and, for models with a
    pluggable head, ``head`` / ``head_kwargs`` against the head registry): a wrong key or value is a
    :class:`ConfigError` naming the valid ones, before anything is built. timm models check their
    own keyword arguments."""
    if not is_model(name):
        return dict(kwargs)
    options = MODELS.check_options(name, kwargs, "model.kwargs")
    if "head" in options or "head_kwargs" in options:
        from hybridmednet.layers.heads import HEADS
        from hybridmednet.registry import declared_options

        declares = MODELS.info(name).get("options") or MODELS.get(name)
        head = options.get("head", declared_options(declares)["head"].default)
        HEADS.get(head)
        options["head_kwargs"] = HEADS.check_options(head, options.get("head_kwargs") or {}, "model.kwargs.head_kwargs")
    return options


def check_model_dims(name: str, spatial_dims: int) -> None:
    """A 2D model on volumes (or a 3D one on images) is a config error naming the models that fit."""
    from hybridmednet.models._registry import model_spatial_dims

    if model_spatial_dims(name) != spatial_dims:
        kind = "volume (3D)" if spatial_dims == 3 else "image (2D)"
        raise ConfigError(f"model.name: {name!r} is a {model_spatial_dims(name)}D model but data.spatial_dims is "
                          f"{spatial_dims}; {kind} models: {', '.join(list_models(spatial_dims=spatial_dims))}"
                          + ("" if spatial_dims == 3 else ", or any timm model"))


def create_model(name: str, num_classes: int, in_chans: int = 3, *, pretrained: bool = False,
                 pretrained_file: str | None = None, drop_rate: float = 0.0, small_stem: bool | str = "auto",
                 image_size: int | None = None, num_coarse: int | None = None, **kwargs) -> nn.Module:
    """Build a model by name.

    ``small_stem="auto"`` turns the CIFAR-style stem on for timm ResNets when ``image_size`` is
    at most 64 px.
    """
    kwargs = check_model_options(name, kwargs)  # the user's options; the framework's are added below
    if num_coarse:
        kwargs["num_coarse"] = num_coarse
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
        if small_stem:  # an automatic choice that changes speed and accuracy: say so, and how to undo it
            logging.getLogger("hybridmednet").info(
                f"model.small_stem auto: {name} at {image_size} px gets the CIFAR-style stem (3x3 stride 1, no max-pool): "
                "16x larger feature maps than timm's stem, slower but better at small sizes; "
                "set model.small_stem=false to keep timm's stem")
    return create_timm_model(name, num_classes, in_chans, pretrained=pretrained, pretrained_file=pretrained_file,
                             drop_rate=drop_rate, small_stem=bool(small_stem), **kwargs)
