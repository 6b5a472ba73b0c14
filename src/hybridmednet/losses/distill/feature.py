"""Distillation of intermediate feature maps: FitNet (regression) and attention transfer.

The layers are named by the ``student_layer`` / ``teacher_layer`` options (module names from
``model.named_modules()``; the default is each model's last spatial feature map). Resolution
mismatches are resolved by bilinear resizing to the teacher's grid; channel mismatches by
FitNet's learned adapter (attention maps have no channels).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hybridmednet.losses.distill import register_distiller
from hybridmednet.losses.distill.views import StudentView, TeacherView


def to_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@register_distiller("fitnet", needs=("features",))
class FitNet(nn.Module):
    """MSE between the teacher's map and the student's map through a 1x1 conv + BN adapter."""

    def __init__(self, student_channels: int, teacher_channels: int, student_layer: str | None = None,
                 teacher_layer: str | None = None):
        super().__init__()
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        self.adapter = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
                                     nn.BatchNorm2d(teacher_channels))

    def forward(self, student: StudentView, teacher: TeacherView, targets: torch.Tensor) -> torch.Tensor:
        target = teacher.features[self.teacher_layer].float()
        mapped = to_grid(self.adapter(student.features[self.student_layer]).float(), target.shape[-2:])
        return F.mse_loss(mapped, target)


def attention_map(x: torch.Tensor, p: float) -> torch.Tensor:
    """Channel-pooled |x|^p, as a (B, 1, H, W) map."""
    return x.float().abs().pow(p).mean(1, keepdim=True)


@register_distiller("at", needs=("features",))
class AttentionTransfer(nn.Module):
    """Squared distance between L2-normalised spatial attention maps (Zagoruyko & Komodakis use a
    weight of about 1000 with this normalisation: set it in ``weight``)."""

    def __init__(self, p: float = 2.0, student_layer: str | None = None, teacher_layer: str | None = None):
        super().__init__()
        self.p, self.student_layer, self.teacher_layer = p, student_layer, teacher_layer

    def forward(self, student: StudentView, teacher: TeacherView, targets: torch.Tensor) -> torch.Tensor:
        t = attention_map(teacher.features[self.teacher_layer], self.p)
        s = to_grid(attention_map(student.features[self.student_layer], self.p), t.shape[-2:])
        return (F.normalize(s.flatten(1), dim=1) - F.normalize(t.flatten(1), dim=1)).pow(2).mean()
