"""Which layer a CAM should look at, per model family.

A CAM is only as good as its target layer: it must be the last layer that still has a
spatial map (after it, pooling throws "where" away). Families are matched by class name
along the model's MRO (so timm need not be imported, and subclasses such as DeiT inherit
their parent's rule) through :func:`register_target`. Transformers also need a
``reshape_transform`` that turns their token sequences into an ``(N, C, h, w)`` map.

Anything unregistered falls back to one rule: the **last ``nn.Conv2d`` to run** in a probe
forward pass whose output is still spatial (h, w > 1 each). No match raises
:class:`~hybridmednet.errors.ConfigError` naming the known families.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.registry import Registry

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TargetLayer:
    layer: nn.Module
    reshape_transform: ReshapeTransform | None = None
    family: str = "fallback"


Resolver = Callable[[nn.Module], TargetLayer]
TARGETS: Registry[Resolver] = Registry("CAM target family", "explain")


def register_target(*class_names: str) -> Callable[[Resolver], Resolver]:
    """Register ``fn(model) -> TargetLayer`` for models whose class (or a base) has one of these names."""
    return TARGETS.register(*class_names)


def list_target_families() -> list[str]:
    return TARGETS.names()


def find_target(model: nn.Module, input_shape: tuple[int, int, int] | None = None) -> TargetLayer:
    """The target layer for ``model``; ``input_shape=(C, H, W)`` is needed only by the fallback."""
    for cls in type(model).__mro__:
        if cls.__name__ in TARGETS:
            return TARGETS.get(cls.__name__)(model)
    layer = _last_spatial_conv(model, input_shape) if input_shape else None
    if layer is None:
        raise ConfigError(f"explain: no CAM target layer for {type(model).__name__}; known families: "
                          f"{', '.join(list_target_families())}, or any CNN with a spatial nn.Conv2d")
    return TargetLayer(layer)


def _last_spatial_conv(model: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module | None:
    """Last Conv2d, in execution order, whose output keeps h, w > 1 (a 1x1 map has no 'where')."""
    found: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: found.append(m) if o.dim() == 4 and min(o.shape[-2:]) > 1
                                     else None)
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found[-1] if found else None


# --------------------------------------------------------------------------- reshape transforms


def vit_reshape(model: nn.Module) -> ReshapeTransform:
    """(N, prefix + h*w, C) tokens -> (N, C, h, w): drop class/register tokens, fold the patch grid."""
    prefix = int(getattr(model, "num_prefix_tokens", 1))

    def transform(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        h, w = model.patch_embed.grid_size
        if h * w != patches.shape[1]:  # dynamic_img_size: another grid than at build time; assume square
            h = w = int(round(patches.shape[1] ** 0.5))
        return patches.reshape(tokens.shape[0], h, w, tokens.shape[-1]).permute(0, 3, 1, 2)

    return transform


def nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    """Swin keeps (N, H, W, C); older versions used (N, H*W, C) on a square grid."""
    if x.dim() == 3:
        side = int(round(x.shape[1] ** 0.5))
        x = x.reshape(x.shape[0], side, side, x.shape[2])
    return x.permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- families


@register_target("SmallCNN")
def _small_cnn(model):
    return TargetLayer(model.stages[-1], family="small_cnn")


# 3D models: at 28^3 their last stage is 2^3 (or 1^3), too coarse to say where; the stage before it
# (4^3) is the target
@register_target("SmallCNN3d", "SmallCNN3dFrom2d")
def _small_cnn_3d(model):
    return TargetLayer(model.stages[-2], family="small_cnn_3d")


@register_target("MonaiResNet3d")
def _resnet3d(model):
    return TargetLayer(model.net.layer2[-1], family="resnet3d")


@register_target("ResNet")  # timm ResNet, ResNeXt, SE-ResNet, Wide ResNet
def _resnet(model):
    return TargetLayer(model.layer4[-1], family="resnet")


@register_target("ConvNeXt")
def _convnext(model):
    return TargetLayer(model.stages[-1], family="convnext")


@register_target("EfficientNet")  # also timm's MobileNetV2/MNASNet, built by the same class
def _efficientnet(model):
    head = getattr(model, "conv_head", None)  # runs before pooling here: still spatial
    layer = head if isinstance(head, nn.Conv2d) else model.blocks[-1]
    return TargetLayer(layer, family="efficientnet")


@register_target("MobileNetV3")  # its conv_head runs after global pooling (1x1): use the last block
def _mobilenetv3(model):
    return TargetLayer(model.blocks[-1], family="mobilenetv3")


@register_target("VisionTransformer")
def _vit(model):
    return TargetLayer(model.blocks[-1].norm1, vit_reshape(model), family="vit")


@register_target("SwinTransformer", "SwinTransformerV2")
def _swin(model):
    return TargetLayer(model.layers[-1].blocks[-1].norm1, nhwc_to_nchw, family="swin")
