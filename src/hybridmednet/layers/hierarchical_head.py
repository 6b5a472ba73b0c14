"""A coarse-to-fine head: fine logits conditioned on a coarse (taxonomy) prediction, and the
helpers every model uses to run a plain or hierarchical head the same way."""

from __future__ import annotations

import torch
from torch import nn

from hybridmednet.output import ModelOutput


class HierarchicalHead(nn.Module):
    """Fine logits = head(features) + W · softmax(coarse logits); coarse logits from pooled features."""

    def __init__(self, base_head: nn.Module, num_classes: int, num_coarse: int):
        super().__init__()
        self.base = base_head
        self.coarse = nn.Linear(base_head.embed_dim, num_coarse)
        self.coarse_to_fine = nn.Linear(num_coarse, num_classes, bias=False)
        nn.init.zeros_(self.coarse_to_fine.weight)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = self.base.embed(fmap)
        coarse = self.coarse(emb)
        fine = self.base.classify(emb) + self.coarse_to_fine(torch.softmax(coarse, dim=1))
        return fine, coarse, emb


def run_head(head: nn.Module, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(fine logits, coarse logits or None, pooled embedding) for a plain or hierarchical head."""
    if isinstance(head, HierarchicalHead):
        return head(fmap)
    emb = head.embed(fmap)
    return head.classify(emb), None, emb


def head_aux_losses(head: nn.Module, output: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Training-only terms of the head (e.g. prototype cluster/separation/diversity)."""
    base = head.base if isinstance(head, HierarchicalHead) else head
    fn = getattr(base, "aux_losses", None)
    return fn(output.features, targets) if fn is not None and output.features is not None else {}
