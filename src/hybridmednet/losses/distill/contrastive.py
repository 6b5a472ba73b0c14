"""Contrastive representation distillation (Tian et al. 2020) with in-batch negatives.

Student and teacher embeddings are projected to a shared ``dim`` and L2-normalised; each
student embedding must pick out its own case's teacher embedding among the batch's (InfoNCE,
both directions, temperature ``tau``). The paper draws 16384 negatives from a memory bank; here
the negatives are the other ``B - 1`` cases of the batch (127 at batch 128), which needs no
per-dataset state and survives resume and DDP unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hybridmednet.losses.distill import register_distiller
from hybridmednet.losses.distill.views import StudentView, TeacherView


@register_distiller("crd", needs=("embedding",))
class CRD(nn.Module):
    def __init__(self, student_dim: int, teacher_dim: int, dim: int = 128, tau: float = 0.07):
        super().__init__()
        self.student_proj, self.teacher_proj, self.tau = nn.Linear(student_dim, dim), nn.Linear(teacher_dim, dim), tau

    def forward(self, student: StudentView, teacher: TeacherView, targets: torch.Tensor) -> torch.Tensor:
        s = F.normalize(self.student_proj(student.embedding.float()), dim=1)
        t = F.normalize(self.teacher_proj(teacher.embedding.float()), dim=1)
        logits = s @ t.T / self.tau
        labels = torch.arange(len(s), device=s.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
