"""Post-hoc logit adjustment (Menon et al. 2021): divide a trained model's probabilities by the
training class prior raised to ``tau``, with ``tau`` chosen on **val** (balanced accuracy by
default), never on test. ``tau = 0`` is the unadjusted model, so the choice can only keep or
improve the val score it is chosen on."""

from __future__ import annotations

import numpy as np

from hybridmednet.metrics.classification import single_label_headline

TAUS = tuple(np.round(np.linspace(0.0, 2.0, 9), 2))


def adjust(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    scaled = np.asarray(probs, float) / np.power(np.asarray(prior, float), tau)
    return scaled / scaled.sum(axis=1, keepdims=True)


def class_prior(train_counts) -> np.ndarray:
    counts = np.asarray(train_counts, float)
    return counts / counts.sum()


def choose_tau(val_probs: np.ndarray, val_targets: np.ndarray, prior: np.ndarray, *, taus=TAUS,
               metric: str = "balanced_acc") -> tuple[float, dict[float, float]]:
    """The val-best ``tau`` (ties: the smallest) and the val score of every candidate."""
    scores = {float(t): single_label_headline(adjust(val_probs, prior, t), val_targets)[metric] for t in taus}
    best = max(scores.values())
    return min(t for t, v in scores.items() if v == best), scores
