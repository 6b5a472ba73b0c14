"""ReviewKD (Chen et al. 2021, "Distilling Knowledge via Knowledge Review"): several student
stages, each fused with the deeper ones, distilled onto the teacher's stage of the same level.

From the deepest level to the shallowest, an attention-based fusion (ABF) block maps the student's
stage to ``mid_channels`` (1x1 conv + BN), mixes it with the fused map of the level below it
(upsampled; two per-pixel weights from a 1x1 conv and a sigmoid), and maps the mix to the teacher's
channels (3x3 conv + BN). The hierarchical context loss (HCL) compares each fused map with the
teacher's stage (resized to the teacher's grid) at full resolution and average-pooled to 4x4, 2x2
and 1x1, the pooled terms weighted 1/2, 1/4, 1/8 and the sum normalised by the weights: a review of
what the shallower stages should already know about the deeper ones' context.

The levels are ``student_layers`` / ``teacher_layers`` (module names), paired shallow to deep; by
default the ``levels`` deepest resolutions of each model (the last module at each).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hybridmednet.losses.distill import register_distiller
from hybridmednet.losses.distill.feature import to_grid
from hybridmednet.losses.distill.views import StudentView, TeacherView

PYRAMID = (4, 2, 1)  # HCL's pooled sizes, after the full-resolution term


class AttentionFusion(nn.Module):
    """One ABF block: ``(stage, deeper fused map or None) -> (map in teacher channels, fused map)``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        self.out = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, deeper: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.reduce(x)
        if self.attention is not None and deeper is not None:
            deeper = F.interpolate(deeper, size=x.shape[-2:], mode="nearest")
            w = self.attention(torch.cat([x, deeper], dim=1))
            x = x * w[:, :1] + deeper * w[:, 1:]
        return self.out(x), x


def hierarchical_context_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """HCL between two maps of the same shape: MSE at full size and pooled to 4, 2, 1 (those
    smaller than the map), weights 1, 1/2, 1/4, 1/8, normalised by their sum."""
    loss, weight, total = F.mse_loss(student, teacher), 1.0, 1.0
    for size in PYRAMID:
        if size >= teacher.shape[-1]:
            continue
        weight /= 2
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size))
        total += weight
    return loss / total


@register_distiller("reviewkd", needs=("stages",))
class ReviewKD(nn.Module):
    def __init__(self, student_channels: list[int], teacher_channels: list[int], student_layers: list[str] | None = None,
                 teacher_layers: list[str] | None = None, levels: int = 3, mid_channels: int = 64):
        super().__init__()
        self.student_layers, self.teacher_layers = list(student_layers or []), list(teacher_layers or [])
        # shallow -> deep; the deepest block has nothing deeper to fuse with
        self.blocks = nn.ModuleList(AttentionFusion(s, mid_channels, t, fuse=i < len(student_channels) - 1)
                                    for i, (s, t) in enumerate(zip(student_channels, teacher_channels)))

    def forward(self, student: StudentView, teacher: TeacherView, targets: torch.Tensor) -> torch.Tensor:
        deeper, loss = None, 0.0
        for block, s_name, t_name in reversed(list(zip(self.blocks, self.student_layers, self.teacher_layers))):
            mapped, deeper = block(student.features[s_name], deeper)
            target = teacher.features[t_name].float()
            loss = loss + hierarchical_context_loss(to_grid(mapped.float(), target.shape[-2:]), target)
        return loss
