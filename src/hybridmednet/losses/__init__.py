"""Losses by name: cross-entropy (with label smoothing) for single-label, BCE for multi-label."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    def wrap(fn):
        _LOSSES[name] = fn
        return fn

    return wrap


@register_loss("ce")
def cross_entropy(label_smoothing: float = 0.0, **_) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class SmoothedBCE(nn.Module):
    """BCE-with-logits on multi-hot targets; smoothing pulls targets towards 0.5 by ``eps/2``."""

    def __init__(self, label_smoothing: float = 0.0, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.eps = label_smoothing
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.float() * (1 - self.eps) + 0.5 * self.eps
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=self.pos_weight)


@register_loss("bce")
def bce(label_smoothing: float = 0.0, pos_weight: torch.Tensor | None = None, **_) -> nn.Module:
    return SmoothedBCE(label_smoothing, pos_weight)


def build_loss(name: str, *, multilabel: bool, label_smoothing: float = 0.0, **kwargs) -> nn.Module:
    """``auto`` picks BCE for multi-label data and cross-entropy otherwise."""
    if name == "auto":
        name = "bce" if multilabel else "ce"
    if name == "ce" and multilabel:
        from hybridmednet.errors import ConfigError

        raise ConfigError("train.loss=ce cannot train multi-label data; use bce or auto")
    return _LOSSES[name](label_smoothing=label_smoothing, **kwargs)
