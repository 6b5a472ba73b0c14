"""Relational knowledge distillation (Park et al. 2019): the student's embedding keeps the
teacher's pairwise distances (normalised by their mean) and triplet angles. Embedding sizes may
differ: only relations are compared."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hybridmednet.losses.distill import register_distiller
from hybridmednet.losses.distill.views import StudentView, TeacherView


def normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e)
    off_diagonal = d[~torch.eye(len(e), dtype=torch.bool, device=e.device)]
    return d / off_diagonal.mean().clamp_min(1e-8)


def angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j between i and k, for all (i, j, k): (B, B, B)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # diff[j, i] = e_i - e_j, unit length
    return torch.bmm(diff, diff.transpose(1, 2))


@register_distiller("rkd", needs=("embedding",))
class RKD(nn.Module):
    """``distance_weight`` and ``angle_weight`` default to the paper's 25 and 50."""

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.wd, self.wa = distance_weight, angle_weight

    def forward(self, student: StudentView, teacher: TeacherView, targets: torch.Tensor) -> torch.Tensor:
        s, t = student.embedding.float(), teacher.embedding.float()
        loss = s.new_zeros(())
        if self.wd:
            loss = loss + self.wd * F.smooth_l1_loss(normalised_distances(s), normalised_distances(t))
        if self.wa:
            loss = loss + self.wa * F.smooth_l1_loss(angles(s), angles(t))
        return loss
