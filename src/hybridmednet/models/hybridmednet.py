"""HybridMedNet: a global/local multi-scale stem, adaptive fusion, cross-branch attention and a
hierarchical coarse-to-fine head.

- **Global branch** (7x7 conv, stride 2 at 224 px, BN, ReLU): large-scale context.
- **Local branch** (3x3 conv, stride 1, BN, ReLU; then a strided 3x3 conv where the global
  branch downsamples): fine texture at full resolution.
- **Adaptive fusion**: input-dependent softmax weights per channel over the two branches.
- **Body**: inverted-residual (MBConv) stages at 224 px (FLOP-efficient); dense residual blocks
  in the 28-px variant, because depthwise convolutions have no fast CPU training kernel.
- **Cross-branch attention**: the deep features (query) attend to the local branch's texture map
  (keys/values, pooled to the deep grid); query/key 1x1 convs at channels/8, value at full
  width, residual scale initialised to 0 so the block starts as identity.
- **Optional MHF_block_v2** on the last stage (zero-initialised).
- **Hierarchical head**: a coarse classifier on the pooled features, and a fine classifier whose
  logits are conditioned on the coarse prediction (a learned coarse->fine term added to the fine
  logits). Trained with both heads plus a coarse-fine consistency term (``losses/``); the coarse
  head exists only when a taxonomy gives coarse labels, never on made-up labels.

Every part can be switched off for ablations (``fusion``, ``cross_attention``, ``mhf``,
``head``), and the forward returns :class:`ModelOutput` with both heads' logits, the pooled
features and the cross-branch attention map.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from hybridmednet.layers.attention import CrossBranchAttention
from hybridmednet.layers.conv import conv_bn_act
from hybridmednet.layers.fusion import AdaptiveFusion
from hybridmednet.layers.heads import create_head
from hybridmednet.layers.hierarchical_head import HierarchicalHead, head_aux_losses, run_head
from hybridmednet.layers.mhf import MHFBlockV2
from hybridmednet.models._registry import register_model
from hybridmednet.output import ModelOutput


class HybridStem(nn.Module):
    """Global (7x7) and local (3x3) branches of the raw image, fused adaptively.

    ``fusion``: ``adaptive`` (learned, input-dependent), ``sum`` (fixed equal weights),
    ``global`` or ``local`` (one branch only) — the last three exist for the ablation.
    """

    def __init__(self, in_chans: int, width: int, stride: int, fusion: str = "adaptive"):
        super().__init__()
        self.fusion_mode = fusion
        # only the branches in use are built: a one-branch ablation has no unused (DDP-breaking) parameters
        self.global_branch = conv_bn_act(in_chans, width, 7, stride) if fusion != "local" else None
        self.local_branch = None
        if fusion != "global":
            local = [conv_bn_act(in_chans, width, 3, 1)]
            if stride > 1:  # a dense strided 3x3 (depthwise convs have no fast CPU training kernel)
                local.append(conv_bn_act(width, width, 3, stride))
            self.local_branch = nn.Sequential(*local)
        self.fusion = AdaptiveFusion(width, num_inputs=2) if fusion == "adaptive" else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of one-branch ablations written before only the used branch was built hold the
        # unused branch's (untrained, never-used) weights: skip them rather than refuse the run
        for branch in ("global_branch", "local_branch"):
            if getattr(self, branch) is None:
                for key in [k for k in state_dict if k.startswith(f"{prefix}{branch}.")]:
                    state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (fused map, local texture map)."""
        if self.fusion_mode == "global":
            g = self.global_branch(x)
            return g, g
        local = self.local_branch(x)
        if self.fusion_mode == "local":
            return local, local
        g = self.global_branch(x)
        fused = self.fusion([g, local]) if self.fusion is not None else 0.5 * (g + local)
        return fused, local


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project (MobileNetV2), residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(conv_bn_act(cin, hidden, 1), conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                                   conv_bn_act(hidden, cout, 1, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class BasicBlock(nn.Module):
    """Two dense 3x3 convolutions with a residual (ResNet): trains ~10x faster than MBConv on CPU,
    where depthwise convolutions lack a fast kernel; used by the small-image variant."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 1):
        super().__init__()
        self.block = nn.Sequential(conv_bn_act(cin, cout, 3, stride), conv_bn_act(cout, cout, 3, act=False))
        nn.init.zeros_(self.block[1][1].weight)  # start as identity
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn_act(cin, cout, 1, stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.block(x) + self.shortcut(x))


BLOCKS = {"mbconv": MBConv, "basic": BasicBlock}


class HybridMedNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, *, stem_width: int = 32, stem_stride: int = 2,
                 widths: tuple[int, ...] = (48, 96, 160, 256), depths: tuple[int, ...] = (1, 2, 3, 2),
                 strides: tuple[int, ...] = (2, 2, 2, 2), expand: int = 4, block: Literal["mbconv", "basic"] = "mbconv",
                 head_width: int = 512, fusion: Literal["adaptive", "sum", "global", "local"] = "adaptive",
                 cross_attention: bool = True, mhf: bool = False, head: str = "linear", head_kwargs: dict | None = None,
                 num_coarse: int | None = None, drop_rate: float = 0.1):
        super().__init__()
        self.stem = HybridStem(in_chans, stem_width, stem_stride, fusion)
        layers, cin = [], stem_width
        for width, depth, stride in zip(widths, depths, strides):
            for i in range(depth):
                layers.append(BLOCKS[block](cin, width, stride if i == 0 else 1, expand))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.conv_head = conv_bn_act(cin, head_width, 1)
        self.cross_attention = CrossBranchAttention(head_width, context_channels=stem_width, store_attention=True) \
            if cross_attention else None
        self.mhf = MHFBlockV2(head_width) if mhf else None
        base = create_head(head, head_width, num_classes, drop_rate=drop_rate, **(head_kwargs or {}))
        self.head = HierarchicalHead(base, num_classes, num_coarse) if num_coarse else base
        self.num_classes, self.num_coarse = num_classes, num_coarse

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        fused, local = self.stem(x)
        deep = self.conv_head(self.stages(fused))
        attention = None
        if self.cross_attention is not None:
            deep = self.cross_attention(deep, local)
            attention = self.cross_attention.last_attention
        if self.mhf is not None:
            deep = self.mhf(deep)
        return deep, attention

    def forward(self, x: torch.Tensor) -> ModelOutput:
        fmap, attention = self.forward_features(x)
        logits, coarse, emb = run_head(self.head, fmap)
        if attention is None:
            attention = getattr(self.head, "last_attention", None)
        return ModelOutput(logits=logits, coarse_logits=coarse, features=emb, attention_maps=attention)

    def aux_losses(self, output: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return head_aux_losses(self.head, output, targets)

    def forward_attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w) cross-branch attention received by each deep position, for ``explain --method attention``."""
        out = self.forward(x)
        if out.attention_maps is None:
            raise RuntimeError("this configuration has no attention maps (cross_attention=False and no attention head)")
        return out.attention_maps


def _create(num_classes: int, in_chans: int, drop_rate: float, defaults: dict, kwargs: dict) -> HybridMedNet:
    return HybridMedNet(num_classes, in_chans, drop_rate=drop_rate, **{**defaults, **kwargs})


@register_model(options=HybridMedNet)
def hybridmednet_lite(num_classes: int, in_chans: int = 3, drop_rate: float = 0.1, **kwargs) -> HybridMedNet:
    """224-px design target: at most 7.2M parameters and 1.2 GFLOPs (tests/models/test_hybridmednet.py checks it)."""
    return _create(num_classes, in_chans, drop_rate, {}, kwargs)


@register_model(options=HybridMedNet)
def hybridmednet_base(num_classes: int, in_chans: int = 3, drop_rate: float = 0.2, **kwargs) -> HybridMedNet:
    """Wider and deeper than lite (about 3x the compute), with the MHF block on."""
    return _create(num_classes, in_chans, drop_rate, dict(stem_width=48, widths=(64, 128, 224, 384), depths=(2, 3, 4, 2),
                                                         head_width=768, mhf=True), kwargs)


@register_model(options=HybridMedNet)
def hybridmednet_small28(num_classes: int, in_chans: int = 3, drop_rate: float = 0.1, **kwargs) -> HybridMedNet:
    """For 28-64 px inputs: stride-1 stem and first stage keep small images' detail; dense residual
    blocks instead of MBConv because they train ~10x faster on CPU."""
    return _create(num_classes, in_chans, drop_rate, dict(stem_width=32, stem_stride=1, widths=(32, 64, 128, 256),
                                                         depths=(1, 1, 1, 1), strides=(1, 2, 2, 2), block="basic",
                                                         head_width=256), kwargs)
