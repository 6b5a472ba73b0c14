"""Class weights from training-set counts.

- :func:`class_balanced_weights`: Cui et al. 2019, "Class-Balanced Loss Based on Effective Number
  of Samples". The effective number of ``n`` samples is ``(1 - beta^n) / (1 - beta)``; a class is
  weighted by its inverse, and the weights are normalised to sum to the number of classes.
  ``beta -> 0`` gives equal weights, ``beta -> 1`` inverse frequency.
- :func:`pos_weight_from_counts`: ``negatives / positives`` per label, the usual ``pos_weight``
  for BCE on multi-label data.

A class with zero training samples is counted as one sample (its weight is then the largest but
never multiplies a loss term of that class, which has no examples).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hybridmednet.errors import ConfigError


def _counts(values: Sequence[int] | torch.Tensor, what: str) -> torch.Tensor:
    counts = torch.as_tensor(values, dtype=torch.float64).flatten()
    if counts.numel() == 0 or bool((counts < 0).any()):
        raise ConfigError(f"{what} must be a non-empty list of non-negative counts, got {list(values)}")
    return counts


def class_balanced_weights(class_counts: Sequence[int] | torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Per-class weights ``(1 - beta) / (1 - beta^n_c)``, scaled to sum to ``C`` (float32)."""
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"class_balanced beta must be in [0, 1), got {beta}")
    counts = _counts(class_counts, "class_counts").clamp_min(1)
    effective = (1 - beta ** counts) / (1 - beta)
    weights = 1 / effective
    return (weights / weights.sum() * len(counts)).float()


def pos_weight_from_counts(positives: Sequence[int] | torch.Tensor, n: int) -> torch.Tensor:
    """``(n - positives) / positives`` per label (a label with no positives counts as one)."""
    pos = _counts(positives, "positives")
    if bool((pos > n).any()):
        raise ConfigError(f"positive counts {list(positives)} exceed the number of samples n={n}")
    return ((n - pos) / pos.clamp_min(1)).float()
