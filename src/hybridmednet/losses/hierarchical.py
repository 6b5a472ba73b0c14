"""Coarse-fine consistency for a two-level taxonomy.

The fine head implies a coarse distribution: the probability of coarse group ``g`` is the sum of
the fine probabilities of its members. :class:`HierarchicalConsistencyLoss` measures how far the
coarse head's distribution is from that implied one with the **symmetric** KL divergence
(Jeffreys), ``KL(coarse || agg) + KL(agg || coarse)``, averaged over the batch. Symmetric so
neither head is treated as the teacher: gradients reach both, and the term is zero exactly when
the two distributions agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridmednet.errors import ConfigError


def _membership(fine_to_coarse: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Boolean (G, F) matrix: ``[g, f]`` is True when fine class ``f`` belongs to coarse group ``g``."""
    index = torch.as_tensor(fine_to_coarse, dtype=torch.long).flatten()
    if index.numel() == 0 or bool((index < 0).any()):
        raise ConfigError("fine_to_coarse must list one non-negative coarse index per fine class")
    num_coarse = int(index.max()) + 1
    member = torch.arange(num_coarse).unsqueeze(1) == index.unsqueeze(0)
    empty = (~member.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ConfigError(f"coarse groups {empty} have no fine classes in fine_to_coarse; number groups 0..G-1")
    return member


def aggregate_fine_to_coarse(fine_logits: torch.Tensor, fine_to_coarse: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Coarse log-probabilities (B, G): log of the summed fine softmax probabilities in each group."""
    member = _membership(fine_to_coarse).to(fine_logits.device)
    return _aggregate(fine_logits, member)


def _aggregate(fine_logits: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    log_p = fine_logits.float().log_softmax(-1).unsqueeze(1)  # (B, 1, F)
    return log_p.masked_fill(~member, float("-inf")).logsumexp(-1)


class HierarchicalConsistencyLoss(nn.Module):
    def __init__(self, fine_to_coarse: Sequence[int]):
        super().__init__()
        self.register_buffer("member", _membership(fine_to_coarse), persistent=False)

    def forward(self, fine_logits: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
        agg = _aggregate(fine_logits, self.member)
        coarse = coarse_logits.float().log_softmax(-1)
        return ((coarse.exp() - agg.exp()) * (coarse - agg)).sum(-1).mean()
