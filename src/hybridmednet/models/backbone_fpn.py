"""Modern backbones through timm, as multi-scale feature extractors: backbone -> FPN neck ->
optional attention -> head (and, with a taxonomy, the hierarchical coarse/fine head).

timm's ``features_only`` returns the stage outputs; Swin returns them channels-last (NHWC), so
the layout is detected once at build time and permuted. Transformers fix their patch grid at
build time, so ``image_size`` is passed through (timm's Swin pads to fit its windows); a size a
backbone cannot run at (e.g. ConvNeXt below 32 px) is a clear error naming it and the way out:
``out_indices`` stops the backbone at an earlier stage (timm then drops the later stages).
"""

from __future__ import annotations

import torch
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.layers.attention import (
    CBAM,
    CrossScaleAttention,
    MultiHeadSelfAttention2d,
)
from hybridmednet.layers.heads import create_head
from hybridmednet.layers.hierarchical_head import HierarchicalHead, head_aux_losses, run_head
from hybridmednet.layers.mhf import MHFBlockV2
from hybridmednet.layers.neck import FPNNeck
from hybridmednet.models._registry import register_model
from hybridmednet.output import ModelOutput

ATTENTION = {
    "cbam": lambda c: CBAM(c),
    "mhsa": lambda c: MultiHeadSelfAttention2d(c, num_heads=4),
    "cross_scale": lambda c: CrossScaleAttention(c, num_heads=4),
    "mhf": lambda c: MHFBlockV2(c),
}
# Transformers whose patch grid is fixed at build time need the input size.
SIZE_AWARE = ("swin", "vit", "deit")


class BackboneFPN(nn.Module):
    def __init__(self, backbone: str, num_classes: int, in_chans: int = 3, *, image_size: int = 224,
                 neck_channels: int = 256, attention: str | None = None, head: str = "linear",
                 head_kwargs: dict | None = None, num_coarse: int | None = None, pretrained: bool = False,
                 pretrained_file: str | None = None, drop_rate: float = 0.0, out_indices: tuple[int, ...] | None = None,
                 **backbone_kwargs):
        super().__init__()
        from hybridmednet.models.timm_models import _timm

        timm = _timm()
        if backbone.startswith(SIZE_AWARE):
            backbone_kwargs.setdefault("img_size", image_size)
        if pretrained_file:
            backbone_kwargs["pretrained_cfg_overlay"] = {"file": pretrained_file}
            pretrained = True
        try:
            self.backbone = timm.create_model(backbone, features_only=True, pretrained=pretrained, in_chans=in_chans,
                                              out_indices=out_indices, **backbone_kwargs)
            channels = list(self.backbone.feature_info.channels())
            with torch.no_grad():
                probe = self.backbone.eval()(torch.zeros(1, in_chans, image_size, image_size))
        except (AssertionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"model {backbone!r} cannot run at {image_size} px ({str(exc).splitlines()[0]}); "
                              "use a larger data.image_size, or stop at an earlier stage with "
                              "model.kwargs.out_indices (e.g. [0, 1, 2] drops the stride-32 stage)") from None
        self.backbone.train()
        self.channels_last_features = [p.shape[-1] == c and p.shape[1] != c for p, c in zip(probe, channels)]
        self.neck = FPNNeck(channels, neck_channels)
        if attention is not None and attention not in ATTENTION:
            raise ConfigError(f"model.kwargs.attention: {attention!r} is not one of {sorted(ATTENTION)}")
        self.attention = ATTENTION[attention](neck_channels) if attention else None
        base = create_head(head, neck_channels, num_classes, drop_rate=drop_rate, **(head_kwargs or {}))
        self.head = HierarchicalHead(base, num_classes, num_coarse) if num_coarse else base

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        maps = [f.permute(0, 3, 1, 2) if nhwc else f for f, nhwc in zip(self.backbone(x), self.channels_last_features)]
        fmap = self.neck(maps)
        return self.attention(fmap) if self.attention is not None else fmap

    def forward(self, x: torch.Tensor) -> ModelOutput:
        logits, coarse, emb = run_head(self.head, self.forward_features(x))
        attention = getattr(self.attention, "last_attention", None)
        if attention is None:
            attention = getattr(self.head, "last_attention", None)
        return ModelOutput(logits=logits, coarse_logits=coarse, features=emb, attention_maps=attention)

    def aux_losses(self, output: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return head_aux_losses(self.head, output, targets)


def _register(name: str, backbone: str, doc: str, **defaults) -> None:
    def builder(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, **kwargs) -> BackboneFPN:
        return BackboneFPN(backbone, num_classes, in_chans, drop_rate=drop_rate, **{**defaults, **kwargs})

    builder.__name__ = name
    builder.__doc__ = doc
    register_model(builder, image_size_arg="image_size", options=BackboneFPN)


for _name, _backbone in [("resnet18", "resnet18"), ("resnet34", "resnet34"), ("resnet50", "resnet50"),
                         ("convnext_tiny", "convnext_tiny"), ("convnext_small", "convnext_small"),
                         ("convnext_base", "convnext_base"), ("convnext_large", "convnext_large"),
                         ("swin_tiny", "swin_tiny_patch4_window7_224"), ("swin_small", "swin_small_patch4_window7_224"),
                         ("swin_base", "swin_base_patch4_window7_224"),
                         ("efficientnetv2_s", "tf_efficientnetv2_s"), ("efficientnetv2_m", "tf_efficientnetv2_m"),
                         ("efficientnetv2_l", "tf_efficientnetv2_l")]:
    _register(f"{_name}_fpn", _backbone, f"timm {_backbone} (features_only) -> FPN neck -> head.")
