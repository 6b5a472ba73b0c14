"""Calibration: ECE / MCE / Brier with reliability-diagram bins, and temperature scaling.

A classifier whose 0.9 means "right 9 times in 10" can be used for decisions; an overconfident one
cannot, however good its AUC. Temperature scaling (Guo et al., 2017) divides the logits by one
scalar T fitted on the **validation** split; it never changes the argmax, so accuracy and AUC are
untouched. Fit it on val only: fitting on test and then reporting test ECE is test-set leakage.

The framework saves probabilities, not logits; :func:`logits_from_probs` recovers logits that give
back the same probabilities, so calibration can run on saved predictions.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from hybridmednet.metrics.classification import _check
from hybridmednet.utils.probability import probabilities


def _is_multilabel(probs: np.ndarray, targets, multilabel: bool | None) -> bool:
    """``None`` infers from the targets: (N, C) 0/1 targets are multi-label, (N,) indices are not."""
    return np.ndim(targets) == 2 if multilabel is None else bool(multilabel)


def expected_calibration_error(probs, targets, n_bins: int = 15, *, multilabel: bool | None = None) -> dict:
    """ECE, MCE and Brier score plus the reliability-diagram bins.

    Single-label: confidence = top-1 probability, correct = (argmax == target); Brier is the
    multi-class score, mean over samples of sum over classes of (p - onehot)^2 (range [0, 2]).

    Multi-label: every (sample, label) pair is scored as its own binary prediction: predicted
    positive when p >= 0.5, confidence = max(p, 1 - p) (so it lies in [0.5, 1]), Brier = mean over
    pairs of (p - y)^2 (range [0, 1]).

    Bins are ``n_bins`` equal-width intervals (lo, hi] on [0, 1] (the first also holds 0);
    ECE = sum over bins of count/N * |accuracy - confidence|; MCE = the largest such gap over
    non-empty bins. Empty bins are listed with count 0 and NaN confidence/accuracy.
    Returns ``{"ece", "mce", "brier", "n", "bins": [{"lo", "hi", "count", "confidence", "accuracy"}]}``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ml = _is_multilabel(probs, targets, multilabel)
    probs, targets = _check(probs, targets, multilabel=ml)
    if ml:
        p, y = probs.ravel(), targets.ravel()
        conf = np.maximum(p, 1 - p)
        correct = (p >= 0.5) == (y == 1)
        brier = float(np.mean((p - y) ** 2)) if p.size else float("nan")
    else:
        conf = probs.max(axis=1)
        correct = probs.argmax(axis=1) == targets
        onehot = np.eye(probs.shape[1])[targets]
        brier = float(np.mean(((probs - onehot) ** 2).sum(axis=1))) if len(probs) else float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="left")  # (lo, hi]: conf == hi stays in this bin
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(float), minlength=n_bins)
    nz = count > 0
    mean_conf = np.full(n_bins, np.nan)
    mean_acc = np.full(n_bins, np.nan)
    mean_conf[nz], mean_acc[nz] = conf_sum[nz] / count[nz], acc_sum[nz] / count[nz]
    gap = np.abs(mean_acc - mean_conf)
    total = count.sum()
    bins = [
        {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(count[b]),
         "confidence": float(mean_conf[b]), "accuracy": float(mean_acc[b])}
        for b in range(n_bins)
    ]
    return {
        "ece": float(np.sum(count[nz] / total * gap[nz])) if total else float("nan"),
        "mce": float(gap[nz].max()) if total else float("nan"),
        "brier": brier,
        "n": int(total),
        "bins": bins,
    }


def logits_from_probs(probs, multilabel: bool, eps: float = 1e-12) -> np.ndarray:
    """Logits that reproduce ``probs``: log(p) for softmax, logit(p) for sigmoid outputs.

    Softmax is invariant to adding a constant per row, so log-probabilities are valid logits.
    Probabilities are clipped to [eps, 1 - eps] first, so exact 0/1 (float32 saturation) map to
    finite logits (|logit| <= ~27.6 at the default eps).
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p) if multilabel else np.log(p)


def _nll(logits: np.ndarray, targets: np.ndarray, multilabel: bool) -> float:
    """Mean NLL: softmax cross-entropy, or mean binary cross-entropy over (sample, label) pairs."""
    if multilabel:
        # BCE with logits, numerically stable: log(1 + e^z) - y z
        return float(np.mean(np.logaddexp(0.0, logits) - targets * logits))
    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(targets)), targets]))


class TemperatureScaler:
    """One temperature T > 0 for all classes: probs = softmax(logits / T) (sigmoid if multi-label).

    ``fit`` minimises the validation NLL over log T with a bounded Brent search (NLL is unimodal
    in log T). T > 1 softens an overconfident model, T < 1 sharpens an underconfident one.
    Fit on the validation split only, never on test.
    """

    def __init__(self, multilabel: bool = False, bounds: tuple[float, float] = (0.05, 20.0)):
        if not 0 < bounds[0] < bounds[1]:
            raise ValueError(f"bounds must satisfy 0 < lo < hi, got {bounds}")
        self.multilabel = multilabel
        self.bounds = bounds
        self.temperature = 1.0
        self.fitted = False

    def fit(self, logits, targets) -> TemperatureScaler:
        logits, targets = _check(logits, targets, multilabel=self.multilabel)
        if not len(logits):
            raise ValueError("cannot fit a temperature on zero samples")
        res = minimize_scalar(
            lambda log_t: _nll(logits / np.exp(log_t), targets, self.multilabel),
            bounds=(np.log(self.bounds[0]), np.log(self.bounds[1])),
            method="bounded",
            options={"xatol": 1e-5},
        )
        self.temperature = float(np.exp(res.x))
        self.fitted = True
        return self

    def transform(self, logits) -> np.ndarray:
        """Calibrated probabilities (N, C) float64."""
        return probabilities(logits, self.multilabel, self.temperature)
