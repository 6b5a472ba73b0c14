"""Losses for long-tailed data: logit adjustment / balanced softmax and LDAM with deferred
re-weighting. Both read the training class counts the framework passes (``class_counts``).

- ``logit_adjusted`` (Menon et al. 2021): cross-entropy on ``logits + tau * log(prior)``; with
  ``tau = 1`` it is the balanced softmax (Ren et al. 2020). The model's plain logits, used at
  inference, are then calibrated to a balanced class prior: no change at test time.
- ``ldam`` (Cao et al. 2019): the true class's logit lowered by a margin ``~ n_c^(-1/4)``
  (largest ``max_margin``, for the rarest class), logits times ``scale``; from ``drw_epoch`` on,
  effective-number class weights (deferred re-weighting, DRW). The paper's ``scale = 30`` goes with
  a cosine classifier; with an ordinary linear head the default is 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hybridmednet.errors import ConfigError
from hybridmednet.losses import register_loss
from hybridmednet.losses.class_balanced import class_balanced_weights


def _counts(class_counts, name: str) -> torch.Tensor:
    if class_counts is None:
        raise ConfigError(f"train.loss={name} needs class_counts (images per class in the training split)")
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    if (counts <= 0).any():
        raise ConfigError(f"train.loss={name}: every class needs training images, got counts {counts.tolist()}")
    return counts


class LogitAdjustedLoss(nn.Module):
    def __init__(self, class_counts: Sequence[int], tau: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        counts = _counts(class_counts, "logit_adjusted")
        self.register_buffer("offset", tau * torch.log(counts / counts.sum()))
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.offset, targets, label_smoothing=self.label_smoothing)


@register_loss("logit_adjusted")
def logit_adjusted(label_smoothing: float = 0.0, multilabel: bool = False, class_counts: Sequence[int] | None = None,
                   tau: float = 1.0) -> nn.Module:
    if multilabel:
        raise ConfigError("train.loss=logit_adjusted is for single-label data; use class_balanced for multi-label")
    return LogitAdjustedLoss(class_counts, tau, label_smoothing)


class LDAMLoss(nn.Module):
    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, scale: float = 1.0,
                 drw_epoch: int | None = None, beta: float = 0.9999, label_smoothing: float = 0.0):
        super().__init__()
        counts = _counts(class_counts, "ldam")
        margins = counts.pow(-0.25)
        self.register_buffer("margins", margins * (max_margin / margins.max()))
        self.register_buffer("drw_weights", class_balanced_weights(counts, beta))
        self.scale, self.drw_epoch, self.label_smoothing = scale, drw_epoch, label_smoothing
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The trainer calls this before each epoch (0-based): DRW switches on at ``drw_epoch``."""
        self.epoch = epoch

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float() - F.one_hot(targets, logits.shape[1]) * self.margins
        weight = self.drw_weights if self.drw_epoch is not None and self.epoch >= self.drw_epoch else None
        return F.cross_entropy(self.scale * logits, targets, weight=weight, label_smoothing=self.label_smoothing)


@register_loss("ldam")
def ldam(label_smoothing: float = 0.0, multilabel: bool = False, class_counts: Sequence[int] | None = None,
         max_margin: float = 0.5, scale: float = 1.0, drw_epoch: int | None = None, beta: float = 0.9999) -> nn.Module:
    if multilabel:
        raise ConfigError("train.loss=ldam is for single-label data")
    return LDAMLoss(class_counts, max_margin, scale, drw_epoch, beta, label_smoothing)
