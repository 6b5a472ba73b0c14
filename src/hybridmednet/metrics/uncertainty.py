"""Per-sample uncertainty and selective prediction (abstention), on arrays only.

A clinical classifier should say "I don't know" on the cases it is least sure of and send them to
a human. The accuracy-coverage curve shows what that buys; :func:`choose_abstain_threshold` picks
the cut-off on the **validation** split (picking it on test would overstate the gain). Uncertainty
is "larger = less sure" everywhere; a sample is kept when ``uncertainty <= threshold``.
"""

from __future__ import annotations

import numpy as np

from hybridmednet.utils.probability import predictive_entropy

__all__ = [
    "accuracy_coverage_curve",
    "choose_abstain_threshold",
    "correct_predictions",
    "max_prob_uncertainty",
    "predictive_entropy",
]


def max_prob_uncertainty(probs, *, multilabel: bool = False) -> np.ndarray:
    """(N,) 1 - top-1 probability (multi-label: mean over labels of 1 - max(p, 1 - p))."""
    probs = np.asarray(probs, dtype=np.float64)
    if multilabel:
        return (1 - np.maximum(probs, 1 - probs)).mean(axis=1)
    return 1 - probs.max(axis=1)


def correct_predictions(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Single-label: argmax == target; multi-label ((N, C) targets): every label right at 0.5."""
    if targets.ndim == 2:
        return ((probs >= 0.5) == (targets > 0.5)).all(axis=1)
    return probs.argmax(axis=1) == targets


def _selective_curve(uncertainty, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, coverage, accuracy), one point per distinct uncertainty value.

    Samples with equal uncertainty cannot be separated by a threshold, so a tie group is kept or
    dropped as a whole: points sit at the end of each tie group.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    if u.ndim != 1 or u.shape != c.shape or not len(u):
        raise ValueError(f"uncertainty and correct must be equal-length non-empty 1-D; got {u.shape}, {c.shape}")
    order = np.argsort(u, kind="stable")
    u, c = u[order], c[order]
    ends = np.append(np.flatnonzero(np.diff(u) > 0), len(u) - 1)
    kept = ends + 1
    return u[ends], kept / len(u), np.cumsum(c)[ends] / kept


def accuracy_coverage_curve(probs, targets, uncertainty) -> dict:
    """Accuracy on the kept samples as the most uncertain ones are dropped.

    Returns plain lists ``coverage`` (ascending), ``accuracy``, ``thresholds`` (keep
    ``uncertainty <= t`` to get that coverage) and ``aurc``: area under the risk (1 - accuracy)
    vs coverage curve, a right-Riemann sum over coverage levels, which equals the usual
    mean-of-risks definition when there are no ties. Lower AURC is better.
    Correct = argmax == target (single-label) or all labels right at 0.5 (multi-label).
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    thr, cov, acc = _selective_curve(uncertainty, correct_predictions(probs, targets))
    widths = np.diff(np.concatenate([[0.0], cov]))
    return {
        "coverage": cov.tolist(),
        "accuracy": acc.tolist(),
        "thresholds": thr.tolist(),
        "aurc": float(np.sum((1 - acc) * widths)),
    }


def choose_abstain_threshold(val_uncertainty, val_correct, target_accuracy: float | None = None,
                             target_coverage: float | None = None) -> float:
    """Uncertainty threshold chosen on validation; apply as ``keep = uncertainty <= threshold``.

    ``target_accuracy``: the largest threshold (most coverage) whose kept-sample accuracy on val is
    >= the target; ``-inf`` (abstain on everything) when no threshold reaches it.
    ``target_coverage``: the smallest threshold that keeps >= that fraction of val.
    Give exactly one target.
    """
    if (target_accuracy is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_accuracy or target_coverage")
    thr, cov, acc = _selective_curve(val_uncertainty, val_correct)
    if target_accuracy is not None:
        ok = np.flatnonzero(acc >= target_accuracy - 1e-12)
        return float(thr[ok[-1]]) if len(ok) else float("-inf")
    if not 0 < target_coverage <= 1:
        raise ValueError(f"target_coverage must be in (0, 1], got {target_coverage}")
    return float(thr[np.flatnonzero(cov >= target_coverage - 1e-12)[0]])
