"""Mixture of experts on vectors: E small MLP experts, a softmax gate and top-k routing.

Routing is computed densely: every expert runs on every sample and the outputs are combined
with gate weights that are zero outside each sample's top-k. On a pooled feature vector the
experts are tiny, so this costs little, keeps batches regular and exports to ONNX (TopK +
ScatterElements) without data-dependent control flow.

The load-balancing loss is the Switch Transformer one (Fedus et al. 2022), generalised to top-k:
``E * sum_e f_e * P_e`` with ``f_e`` the fraction of routing slots given to expert ``e`` (not
differentiable) and ``P_e`` its mean gate probability. It equals 1 for uniform routing, its
minimum in practice, and grows as routing concentrates on few experts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from hybridmednet.errors import ConfigError


class Routing(NamedTuple):
    probs: torch.Tensor  # (B, E) softmax gate probabilities
    weights: torch.Tensor  # (B, E) combination weights; zero outside each row's top-k
    mask: torch.Tensor  # (B, E) 1.0 where the expert is in the row's top-k


def load_balance_loss(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Switch-style balance loss ``E * sum_e f_e * P_e``; 1.0 when routing is uniform."""
    num_experts = probs.shape[-1]
    fraction = mask.float().sum(0) / mask.float().sum().clamp_min(1.0)
    return num_experts * (fraction.detach() * probs.mean(0)).sum()


class MixtureOfExperts(nn.Module):
    """``in_features -> out_features`` as a gated sum of ``num_experts`` Linear-GELU-Linear experts."""

    def __init__(self, in_features: int, out_features: int, num_experts: int = 4, top_k: int = 2,
                 hidden_dim: int | None = None, renormalize: bool = True):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ConfigError(f"moe top_k must be between 1 and num_experts={num_experts}, got {top_k}")
        hidden_dim = hidden_dim or in_features
        self.num_experts, self.top_k, self.renormalize = num_experts, top_k, renormalize
        self.gate = nn.Linear(in_features, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(in_features, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_features))
            for _ in range(num_experts))

    def route(self, x: torch.Tensor) -> Routing:
        """Gate probabilities and top-k weights; with ``renormalize`` the kept weights sum to 1 per row."""
        probs = self.gate(x).softmax(-1)
        top = probs.topk(self.top_k, dim=-1).indices
        mask = torch.zeros_like(probs).scatter(-1, top, 1.0)
        weights = probs * mask
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        return Routing(probs, weights, mask)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        routing = self.route(x)
        outputs = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, out)
        return (routing.weights.unsqueeze(-1) * outputs).sum(1), routing
