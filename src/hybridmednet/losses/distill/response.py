"""Distillation of the output distribution: KD and its decoupled form, DKD.

Both work from the teacher's softened *probabilities* (not logits), so a seed ensemble (mean of
its members' probabilities) teaches exactly like one model. ``T**2`` keeps the gradient scale
independent of the temperature (Hinton et al. 2015).
"""

from __future__ import annotations

import torch
from torch import nn

from hybridmednet.losses.distill import register_distiller
from hybridmednet.losses.distill.views import StudentView, TeacherView

EPS = 1e-8


def kl_per_sample(p_teacher: torch.Tensor, log_p_student: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per row."""
    return (p_teacher * (torch.log(p_teacher.clamp_min(EPS)) - log_p_student)).sum(-1)


@register_distiller("kd")
class KD(nn.Module):
    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError("kd temperature must be > 0")
        self.t = temperature

    def forward(self, student: StudentView, teacher: TeacherView, targets: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(student.logits.float() / self.t, dim=-1)
        return kl_per_sample(teacher.probs(self.t), log_p).mean() * self.t ** 2


def dkd_terms(p_teacher: torch.Tensor, student_logits: torch.Tensor, targets: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample TCKD, NCKD and the teacher's target probability (Zhao et al. 2022, eqs. 2-5).

    TCKD is the KL of the binary (target, rest) distributions; NCKD the KL among the non-target
    classes renormalised. KD = TCKD + (1 - p_t) * NCKD holds per sample (the paper's identity).
    """
    log_p_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    p_s = log_p_s.exp()
    mask = nn.functional.one_hot(targets.long(), p_teacher.shape[-1]).bool()
    pt_t = (p_teacher * mask).sum(-1)
    ps_t = (p_s * mask).sum(-1)
    binary_t = torch.stack([pt_t, 1 - pt_t], -1)
    log_binary_s = torch.log(torch.stack([ps_t, 1 - ps_t], -1).clamp_min(EPS))
    tckd = kl_per_sample(binary_t, log_binary_s)
    # non-target distributions: renormalised over the other classes (the target's mass removed)
    q_t = (p_teacher.masked_fill(mask, 0) / (1 - pt_t).clamp_min(EPS).unsqueeze(-1))
    log_q_s = torch.log_softmax((student_logits.float() / temperature).masked_fill(mask, -1e4), dim=-1)
    nckd = (q_t * (torch.log(q_t.clamp_min(EPS)) - log_q_s)).masked_fill(mask, 0).sum(-1)
    return tckd, nckd, pt_t


@register_distiller("dkd")
class DKD(nn.Module):
    """``alpha`` * TCKD + ``beta`` * NCKD; the paper's defaults (alpha 1, beta 8, T 4) for CIFAR-100."""

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        self.alpha, self.beta, self.t = alpha, beta, temperature

    def forward(self, student: StudentView, teacher: TeacherView, targets: torch.Tensor) -> torch.Tensor:
        tckd, nckd, _ = dkd_terms(teacher.probs(self.t), student.logits, targets, self.t)
        return (self.alpha * tckd + self.beta * nckd).mean() * self.t ** 2
