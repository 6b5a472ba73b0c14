"""What a distiller sees of the student and the teacher for one batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StudentView:
    logits: torch.Tensor  # (B, C)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name -> (B, C, H, W), with grad
    embedding: torch.Tensor | None = None  # (B, D) pooled


@dataclass
class TeacherView:
    """A single teacher or a seed ensemble: ``member_logits`` is (M, B, C). The ensemble's soft
    targets are the mean of its members' softened probabilities; feature maps and the embedding
    are the first member's (members trained from other seeds live in unrelated feature spaces)."""

    member_logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    embedding: torch.Tensor | None = None

    def probs(self, temperature: float) -> torch.Tensor:
        return torch.softmax(self.member_logits.float() / temperature, dim=-1).mean(0)
