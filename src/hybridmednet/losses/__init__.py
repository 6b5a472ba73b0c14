"""Task losses by name: ``build_loss(name, multilabel=..., label_smoothing=..., **kwargs)``.

Registered names (each builds a criterion called as ``loss(logits, targets)``):

- ``ce``: cross-entropy with label smoothing (single-label only);
- ``bce``: BCE-with-logits on multi-hot targets, optional ``pos_weight`` (see
  :func:`pos_weight_from_counts`);
- ``focal``: softmax focal loss, or the sigmoid form for multi-label data (``alpha``, ``gamma``);
- ``class_balanced``: Cui et al. 2019 effective-number weights from ``class_counts`` (``beta``)
  on cross-entropy / BCE, or on the focal loss with ``base="focal"``;
- ``logit_adjusted`` (balanced softmax at ``tau = 1``) and ``ldam`` (with deferred re-weighting):
  long-tail losses from the training class counts (``longtail.py``);
- ``auto``: ``bce`` for multi-label data, ``ce`` otherwise.

Builders declare their options in their signature; ``train.loss_kwargs`` is checked against it
before training (an unknown key or a wrong value is a one-line error). The framework passes
``label_smoothing``, ``multilabel`` and ``class_counts`` to the builders that declare them. Terms with other signatures live
beside them: :class:`HierarchicalConsistencyLoss` (fine vs coarse logits) and
:class:`UncertaintyWeightedLoss` (combines named losses; it has parameters to optimise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.losses.class_balanced import (
    class_balanced_weights,
    pos_weight_from_counts,
)
from hybridmednet.losses.focal import FocalLoss, SigmoidFocalLoss
from hybridmednet.losses.hierarchical import (
    HierarchicalConsistencyLoss,
    aggregate_fine_to_coarse,
)
from hybridmednet.losses.weighting import UncertaintyWeightedLoss
from hybridmednet.registry import Registry, declared_options

__all__ = [
    "FocalLoss", "HierarchicalConsistencyLoss", "SigmoidFocalLoss", "SmoothedBCE", "UncertaintyWeightedLoss",
    "aggregate_fine_to_coarse", "build_loss", "class_balanced_weights", "list_losses", "pos_weight_from_counts",
    "register_loss",
]

LOSS_ARGS = frozenset({"label_smoothing", "multilabel", "class_counts"})
LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss", "train.loss", framework_args=LOSS_ARGS)


def register_loss(name: str):
    return LOSSES.register(name)


def list_losses() -> list[str]:
    return LOSSES.names()


@register_loss("ce")
def cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
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
def bce(label_smoothing: float = 0.0, pos_weight: list[float] | None = None) -> nn.Module:
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
    return SmoothedBCE(label_smoothing, pos_weight)


@register_loss("focal")
def focal(label_smoothing: float = 0.0, multilabel: bool = False, alpha: float | list[float] | None = None,
          gamma: float = 2.0) -> nn.Module:
    """Softmax focal loss with per-class ``alpha``; sigmoid focal loss (RetinaNet ``alpha``) for multi-label."""
    if multilabel:
        return SigmoidFocalLoss(alpha=alpha, gamma=gamma, label_smoothing=label_smoothing)
    return FocalLoss(alpha=alpha, gamma=gamma, label_smoothing=label_smoothing)


@register_loss("class_balanced")
def class_balanced(label_smoothing: float = 0.0, multilabel: bool = False, class_counts: Sequence[int] | None = None,
                   beta: float = 0.9999, base: Literal["ce", "bce", "focal"] = "ce", gamma: float = 2.0) -> nn.Module:
    """Effective-number class weights on ``base="ce"`` (BCE for multi-label) or ``base="focal"``.

    ``class_counts`` are training images per class, or positives per label for multi-label data.
    """
    if class_counts is None:
        raise ConfigError("train.loss=class_balanced needs class_counts (images per class in the training split)")
    if base not in ("ce", "bce", "focal"):
        raise ConfigError(f"class_balanced base {base!r} is unknown; choose ce or focal")
    weights = class_balanced_weights(class_counts, beta)
    gamma = gamma if base == "focal" else 0.0
    if multilabel:
        return SigmoidFocalLoss(gamma=gamma, label_smoothing=label_smoothing, weight=weights)
    return FocalLoss(alpha=weights, gamma=gamma, label_smoothing=label_smoothing)


def build_loss(name: str, *, multilabel: bool, label_smoothing: float = 0.0, class_counts=None, **kwargs) -> nn.Module:
    """``auto`` picks BCE for multi-label data and cross-entropy otherwise."""
    if name == "auto":
        name = "bce" if multilabel else "ce"
    if name == "ce" and multilabel:
        raise ConfigError("train.loss=ce cannot train multi-label data; use bce or auto")
    builder = _builder(name)
    framework = {"label_smoothing": label_smoothing, "multilabel": multilabel, "class_counts": class_counts}
    declared = declared_options(builder)
    options = LOSSES.check_options(name, kwargs, "train.loss_kwargs")
    return builder(**{k: v for k, v in framework.items() if k in declared}, **options)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in LOSSES:
        raise ConfigError(f"train.loss: unknown loss {name!r}; choose auto or one of {', '.join(LOSSES.names())}")
    return LOSSES.get(name)


def check_loss(name: str, kwargs: dict) -> None:
    """Config-time check of ``train.loss`` and ``train.loss_kwargs`` (before any data is read)."""
    if name != "auto":
        _builder(name)
        LOSSES.check_options(name, kwargs, "train.loss_kwargs")


from hybridmednet.losses import longtail  # noqa: E402,F401 - registers logit_adjusted and ldam
