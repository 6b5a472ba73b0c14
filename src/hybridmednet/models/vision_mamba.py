"""``vision_mamba_*``: Vision Mamba (Vim, Zhu et al. 2024) sized for small medical images.

Patch embedding (a convolution with kernel = stride = patch size), a learnable position
embedding for ``img_size``, bidirectional Mamba blocks (:mod:`hybridmednet.layers.mamba`), a
final norm, mean pooling over tokens and a linear head. Vim's middle class token is replaced by
mean pooling, which needs no position bookkeeping and suits small token grids.

The scan is pure PyTorch, so these models train on CPU and export to ONNX, but they are far
slower per image than a CNN of the same size. Training throughput at 28 px, batch 64, bf16
autocast, on a 2-core CPU (2 threads / 1 thread): ``vision_mamba_tiny`` ~63 / ~41 img/s,
``vision_mamba_small`` ~23 / ~15 img/s, ``small_cnn`` ~690 / ~370 img/s. Pick them to compare
architectures, not for speed (the scan's own timings are in :mod:`hybridmednet.layers.mamba`).
ONNX export (TorchScript exporter) unrolls the token loop: fine for a fixed image size, with a
dynamic batch axis; exporting at 224 px (196 tokens) takes about a minute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.layers.mamba import BiMambaBlock
from hybridmednet.models._registry import register_model
from hybridmednet.output import ModelOutput


def default_patch_size(img_size: int) -> int:
    """4 px for 28-32 px images (a 7x7-8x8 grid), 8 up to 112 px, 16 beyond (14x14 at 224)."""
    return 4 if img_size <= 32 else 8 if img_size <= 112 else 16


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, dim, H/p, W/p)


class VisionMamba(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 28, patch_size: int | None = None,
                 dim: int = 128, depth: int = 6, d_state: int = 16, expand: int = 2, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.patch_size = patch_size or default_patch_size(img_size)
        self.grid = img_size // self.patch_size
        self.patch_embed = PatchEmbed(in_chans, dim, self.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*(BiMambaBlock(dim, d_state, expand=expand, drop_path=r) for r in rates))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes)
        self.num_features = dim
        self._rescale_residual_projections(depth)

    def _rescale_residual_projections(self, depth: int) -> None:
        """Mamba's GPT-2-style init: each block's output projection scaled by 1/sqrt(depth)."""
        with torch.no_grad():
            for block in self.blocks:
                block.mixer.out_proj.weight.div_(depth ** 0.5)

    def no_weight_decay(self) -> set[str]:
        """timm's hook: parameters an optimizer should not decay (``A_log``/``D`` carry a flag)."""
        return {"pos_embed"}

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The learned grid, resized (bicubic) when the input is not ``img_size``."""
        if h == self.grid and w == self.grid:
            return self.pos_embed
        grid = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + self._pos_embed(h, w)  # (B, L, dim), row-major token order
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)
        return x if pre_logits else self.head(self.dropout(x))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        pooled = self.forward_head(self.forward_features(x), pre_logits=True)
        return ModelOutput(logits=self.head(self.dropout(pooled)), features=pooled)


def _create_vision_mamba(num_classes: int, in_chans: int, drop_rate: float, **kwargs) -> VisionMamba:
    return VisionMamba(num_classes, in_chans, drop_rate=drop_rate, **kwargs)


@register_model(image_size_arg="img_size", options=VisionMamba)
def vision_mamba_tiny(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, **kwargs) -> VisionMamba:
    """dim 128, 6 bidirectional blocks: 0.82M parameters (28 px, patch 4, 10 classes)."""
    return _create_vision_mamba(num_classes, in_chans, drop_rate, **{"dim": 128, "depth": 6, **kwargs})


@register_model(image_size_arg="img_size", options=VisionMamba)
def vision_mamba_small(num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, **kwargs) -> VisionMamba:
    """dim 192, 12 bidirectional blocks, stochastic depth 0.1: 3.4M parameters (28 px, patch 4)."""
    return _create_vision_mamba(num_classes, in_chans, drop_rate, **{"dim": 192, "depth": 12, "drop_path_rate": 0.1,
                                                                     **kwargs})
