"""The training objective for one model output: fine loss, plus (with a taxonomy) the coarse
head's cross-entropy and a coarse-fine consistency term, plus the model's own auxiliary terms.

Coarse targets are derived from fine labels through the configured taxonomy; without one the
coarse terms are absent (the coarse head is never trained on made-up labels).

``learned_aux_weight`` (``train.loss_weighting: uncertainty``) weighs the task terms against the
sum of the model's auxiliary terms (a prototype head's cluster / separation / diversity /
contrastive losses, an MoE's balance loss) by homoscedastic uncertainty
(:class:`~hybridmednet.losses.weighting.UncertaintyWeightedLoss`, tasks ``task`` and
``auxiliary``) instead of adding them at their fixed weights. Its two log-variances are
parameters: the trainer optimizes and checkpoints them with the model.
"""

from __future__ import annotations

import torch
from torch import nn

from hybridmednet.losses.weighting import UncertaintyWeightedLoss
from hybridmednet.output import ModelOutput


class TaskLoss(nn.Module):
    def __init__(self, fine: nn.Module, fine_to_coarse: list[int] | None = None, coarse_weight: float = 0.5,
                 consistency_weight: float = 0.1, learned_aux_weight: bool = False):
        super().__init__()
        self.fine = fine
        self.weighting = UncertaintyWeightedLoss(["task", "auxiliary"]) if learned_aux_weight else None
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
        total = self.combine(sum(parts.values()), aux)
        for name, value in (aux or {}).items():
            parts[f"aux_{name}"] = value
        return total, parts

    def combine(self, task: torch.Tensor, aux: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """The task terms plus the auxiliary ones: summed, or weighed by learned uncertainty."""
        if not aux:
            return task
        if self.weighting is None:
            return task + sum(aux.values())
        return self.weighting({"task": task, "auxiliary": sum(aux.values())})[0]

    def learned_weights(self) -> dict[str, float]:
        """The current ``exp(-s)`` of each weighted term (empty with fixed weights)."""
        if self.weighting is None:
            return {}
        return {n: float(torch.exp(-s)) for n, s in zip(self.weighting.names, self.weighting.log_vars.detach())}
