"""Point metrics for single-label (softmax) and multi-label (sigmoid) classifiers.

Every returned value is a plain Python ``float``/``int``/``list`` so reports can go straight to
JSON. Undefined quantities (e.g. AUC of a class with no positives) are ``float('nan')`` rather
than a made-up 0 or 1, so they cannot silently inflate or deflate an average.

The ``*_headline`` functions return only the headline scalars and are written for speed: the
bootstrap calls them ~1000 times. They derive accuracy / balanced accuracy / F1 from one
confusion matrix (np.bincount) and take AUC from sklearn in a single ``roc_auc_score`` call; tests
check they agree with the sklearn-based full metrics.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

HEADLINE_SINGLE = ("acc", "balanced_acc", "macro_f1", "auc")
HEADLINE_MULTI = ("mean_auc", "macro_f1", "subset_acc")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with NaN where den == 0 (the quantity is undefined, not zero)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")


def _column_aucs(onehot: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-column ROC AUC from sklearn, NaN where a column lacks positives or negatives.

    One ``roc_auc_score`` call on an indicator matrix is about twice as fast as one call per
    column (sklearn's input checks dominate at these sizes), which matters in the bootstrap.
    """
    pos = onehot.sum(axis=0)
    ok = (pos > 0) & (pos < len(onehot))
    out = np.full(onehot.shape[1], np.nan)
    if ok.any():
        out[ok] = np.atleast_1d(roc_auc_score(onehot[:, ok], scores[:, ok], average=None))
    return out


def _check(probs, targets, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shape checks up front: a transposed or misaligned array would otherwise score silently."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2 or len(probs) != len(targets):
        raise ValueError(f"probs must be (N, C) with N = len(targets); got {probs.shape}")
    if multilabel:
        if targets.shape != probs.shape:
            raise ValueError(f"multi-label targets must be (N, C) like probs; got {targets.shape}")
        return probs, (targets > 0.5).astype(np.int64)
    if targets.ndim != 1:
        raise ValueError(f"single-label targets must be (N,) class indices; got {targets.shape}")
    targets = targets.astype(np.int64)
    if len(targets) and (targets.min() < 0 or targets.max() >= probs.shape[1]):
        raise ValueError(
            f"targets must lie in [0, {probs.shape[1]}); got {targets.min()}..{targets.max()}"
        )
    return probs, targets


def _single_auc(probs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(headline AUC, per-class one-vs-rest AUCs). Binary uses the positive class only."""
    c = probs.shape[1]
    per_class = _column_aucs(np.eye(c, dtype=np.int64)[targets], probs)
    if c == 2:
        return float(per_class[1]), per_class
    return _nanmean(per_class), per_class


def single_label_metrics(probs: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict:
    """Full single-label report; predicted class = argmax of ``probs``."""
    probs, targets = _check(probs, targets, multilabel=False)
    c = probs.shape[1]
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} probability columns")
    pred = probs.argmax(axis=1)
    labels = list(range(c))
    cm = confusion_matrix(targets, pred, labels=labels)
    prec, rec, f1, support = precision_recall_fscore_support(
        targets, pred, labels=labels, zero_division=np.nan
    )
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    tn = len(targets) - cm.sum(axis=1) - fp
    spec = _ratio(tn, tn + fp)
    auc, per_auc = _single_auc(probs, targets)
    with warnings.catch_warnings():
        # A predicted class that never occurs in targets makes sklearn warn; it is simply not
        # part of the mean recall, which is what balanced accuracy should be.
        warnings.simplefilter("ignore", UserWarning)
        bal = balanced_accuracy_score(targets, pred)
    return {
        "acc": float(accuracy_score(targets, pred)),
        "balanced_acc": float(bal),
        # Default labels = classes seen in targets or predictions: a class neither present nor
        # predicted has no defined F1 and must not count as 0.
        "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
        "auc": auc,
        "auc_skipped_classes": [class_names[k] for k in range(c) if np.isnan(per_auc[k])],
        "per_class": {
            name: {
                "auc": float(per_auc[k]),
                "sensitivity": float(rec[k]),
                "specificity": float(spec[k]),
                "precision": float(prec[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "n": len(targets),
    }


def single_label_headline(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Fast HEADLINE_SINGLE scalars (same definitions as :func:`single_label_metrics`)."""
    probs, targets = _check(probs, targets, multilabel=False)
    c = probs.shape[1]
    cm = np.bincount(targets * c + probs.argmax(axis=1), minlength=c * c).reshape(c, c)
    tp, true_n, pred_n = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    if c == 2:  # only the positive column is the headline: skip the other sklearn AUC
        auc = float(_column_aucs(targets[:, None] == 1, probs[:, 1:2])[0])
    else:
        auc = _single_auc(probs, targets)[0]
    return {
        "acc": float(_ratio(tp.sum(), len(targets))),
        "balanced_acc": _nanmean(_ratio(tp, true_n)),
        "macro_f1": _nanmean(_ratio(2 * tp, true_n + pred_n)),
        "auc": auc,
    }


def _multi_counts(probs, targets, threshold):
    pred = (probs >= np.asarray(threshold, dtype=np.float64)).astype(np.int64)
    tp = (pred & targets).sum(axis=0)
    fp = pred.sum(axis=0) - tp
    fn = targets.sum(axis=0) - tp
    return pred, tp, fp, fn


def multi_label_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    threshold: float | np.ndarray = 0.5,
) -> dict:
    """Full multi-label report; label k is predicted when ``probs[:, k] >= threshold[k]``."""
    probs, targets = _check(probs, targets, multilabel=True)
    c = probs.shape[1]
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} label names for {c} probability columns")
    pred, tp, fp, fn = _multi_counts(probs, targets, threshold)
    tn = len(targets) - tp - fp - fn
    aucs = _column_aucs(targets, probs)
    # zero_division=nan: a label never present nor predicted has no F1 and is left out of the mean.
    f1 = np.atleast_1d(f1_score(targets, pred, average=None, zero_division=np.nan))
    return {
        "mean_auc": _nanmean(aucs),
        "auc_skipped_labels": [class_names[k] for k in range(c) if np.isnan(aucs[k])],
        "macro_f1": _nanmean(f1),
        "subset_acc": float(accuracy_score(targets, pred)),
        "per_label": {
            name: {
                "auc": float(aucs[k]),
                "sensitivity": float(_ratio(tp[k], tp[k] + fn[k])),
                "specificity": float(_ratio(tn[k], tn[k] + fp[k])),
                "f1": float(f1[k]),
                "support": int(tp[k] + fn[k]),
            }
            for k, name in enumerate(class_names)
        },
        "n": len(targets),
    }


def multi_label_headline(probs: np.ndarray, targets: np.ndarray, threshold=0.5) -> dict[str, float]:
    """Fast HEADLINE_MULTI scalars (same definitions as :func:`multi_label_metrics`)."""
    probs, targets = _check(probs, targets, multilabel=True)
    pred, tp, fp, fn = _multi_counts(probs, targets, threshold)
    return {
        "mean_auc": _nanmean(_column_aucs(targets, probs)),
        "macro_f1": _nanmean(_ratio(2 * tp, 2 * tp + fp + fn)),
        "subset_acc": float(_ratio((pred == targets).all(axis=1).sum(), len(targets))),
    }
