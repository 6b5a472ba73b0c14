"""The training objective for one model output: fine loss, plus (with a taxonomy) the coarse
head's cross-entropy and a coarse-fine consistency term, plus the model's own auxiliary terms.

Coarse targets are derived from fine labels through the configured taxonomy; without one the
coarse terms are absent (the coarse head is never trained on made-up labels).
"""

from __future__ import annotations

import torch
from torch import nn

from hybridmednet.output import ModelOutput


class TaskLoss(nn.Module):
    def __init__(self, fine: nn.Module, fine_to_coarse: list[int] | None = None, coarse_weight: float = 0.5,
                 consistency_weight: float = 0.1):
        super().__init__()
        self.fine = fine
        self.coarse_weight, self.consistency_weight = coarse_weight, consistency_weight
        self.consistency = None
        if fine_to_coarse is not None:
            from hybridmednet.losses.hierarchical import HierarchicalConsistencyLoss

            self.register_buffer("fine_to_coarse", torch.as_tensor(fine_to_coarse, dtype=torch.long))
            self.consistency = HierarchicalConsistencyLoss(list(fine_to_coarse))

    def forward(self, out: ModelOutput, targets: torch.Tensor, aux: dict[str, torch.Tensor] | None = None):
        """Return (total loss, {term: tensor}) with each term already weighted."""
        parts = {"fine": self.fine(out.logits.float(), targets)}
        if self.consistency is not None and out.coarse_logits is not None:
            coarse = out.coarse_logits.float()
            parts["coarse"] = self.coarse_weight * nn.functional.cross_entropy(coarse, self.fine_to_coarse[targets])
            parts["consistency"] = self.consistency_weight * self.consistency(out.logits.float(), coarse)
        for name, value in (aux or {}).items():
            parts[f"aux_{name}"] = value
        return sum(parts.values()), parts
