"""Focal losses (Lin et al. 2017): cross-entropy scaled by ``(1 - p)^gamma`` to down-weight easy samples.

``FocalLoss`` (softmax, single-label) sums the focal term over the label-smoothed target
distribution ``q = (1 - eps) * onehot + eps / K``::

    loss = -sum_k q_k * alpha_k * (1 - p_k)^gamma * log p_k

so ``gamma=0, alpha=1`` is exactly ``nn.CrossEntropyLoss(label_smoothing=eps)``. ``alpha`` is a
per-class weight (float, list or tensor). Soft targets (B, K), e.g. from mixup, are used as ``q``.

``SigmoidFocalLoss`` (multi-label) follows torchvision's ``sigmoid_focal_loss``: per element
``alpha_t * (1 - p_t)^gamma * BCE`` with ``p_t = p*t + (1-p)*(1-t)`` and
``alpha_t = alpha*t + (1-alpha)*(1-t)`` (``alpha=None`` switches it off); ``weight`` is an
extra per-class factor (the class-balanced loss uses it). Smoothing pulls targets towards 0.5.

Both reduce by a plain mean over samples (and classes for the sigmoid form), as the papers do;
note ``nn.CrossEntropyLoss(weight=...)`` instead divides by the summed weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _as_tensor(value: float | Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else torch.as_tensor(value, dtype=torch.float32)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class FocalLoss(nn.Module):
    def __init__(self, alpha: float | Sequence[float] | torch.Tensor | None = None, gamma: float = 2.0,
                 label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__()
        self.gamma, self.eps, self.reduction = gamma, label_smoothing, reduction
        self.register_buffer("alpha", _as_tensor(alpha))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        num_classes = logits.shape[-1]
        if targets.ndim == logits.ndim:  # soft / one-hot targets
            q = targets.float()
        else:
            q = F.one_hot(targets.long(), num_classes).float()
        q = q * (1 - self.eps) + self.eps / num_classes
        log_p = logits.log_softmax(-1)
        term = -q * log_p
        if self.gamma:
            term = term * (1 - log_p.exp()).clamp_min(0).pow(self.gamma)
        if self.alpha is not None:
            term = term * self.alpha
        return _reduce(term.sum(-1), self.reduction)


class SigmoidFocalLoss(nn.Module):
    def __init__(self, alpha: float | Sequence[float] | torch.Tensor | None = None, gamma: float = 2.0,
                 label_smoothing: float = 0.0, weight: Sequence[float] | torch.Tensor | None = None,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma, self.eps, self.reduction = gamma, label_smoothing, reduction
        self.register_buffer("alpha", _as_tensor(alpha))
        self.register_buffer("weight", _as_tensor(weight))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        t = targets.float() * (1 - self.eps) + 0.5 * self.eps
        loss = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        if self.gamma:
            p = logits.sigmoid()
            p_t = p * t + (1 - p) * (1 - t)
            loss = loss * (1 - p_t).clamp_min(0).pow(self.gamma)
        if self.alpha is not None:
            loss = loss * (self.alpha * t + (1 - self.alpha) * (1 - t))
        if self.weight is not None:
            loss = loss * self.weight
        return _reduce(loss, self.reduction)
