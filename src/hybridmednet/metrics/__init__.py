"""Evaluation metrics: sklearn-based point metrics plus bootstrap confidence intervals.

:func:`compute_metrics` is the one entry point reports use, so every run reports the same
metrics with the same interval method.
"""

from __future__ import annotations

from hybridmednet.metrics.bootstrap import bootstrap_ci, interval_method
from hybridmednet.metrics.classification import (
    HEADLINE_MULTI,
    HEADLINE_SINGLE,
    multi_label_headline,
    multi_label_metrics,
    single_label_headline,
    single_label_metrics,
)

__all__ = [
    "HEADLINE_MULTI",
    "HEADLINE_SINGLE",
    "bootstrap_ci",
    "compute_metrics",
    "multi_label_metrics",
    "single_label_metrics",
]


def compute_metrics(
    probs, targets, class_names, *, multilabel: bool, n_bootstrap: int = 1000, seed: int = 0, groups=None
) -> dict:
    """Full metrics plus 95% percentile-bootstrap CIs of the headline metrics.

    Single-label resampling is stratified by class; multi-label rows carry several labels, so
    they are resampled plainly. ``groups`` (patient/lesion ids) makes it a cluster bootstrap over
    groups. ``ci_method`` says which. ``n_bootstrap=0`` skips the CIs.
    """
    if multilabel:
        full, fn = multi_label_metrics(probs, targets, class_names), multi_label_headline
    else:
        full, fn = single_label_metrics(probs, targets, class_names), single_label_headline
    if groups is not None and all(g is None for g in groups):
        groups = None
    ci95 = {}
    if n_bootstrap > 0:
        ci = bootstrap_ci(
            fn, probs, targets, n_resamples=n_bootstrap, seed=seed, stratify=not multilabel, groups=groups
        )
        ci95 = {name: [lo, hi] for name, (lo, hi) in ci.items()}
    method = interval_method(multilabel=multilabel, groups=groups, n_resamples=n_bootstrap)
    return {"metrics": full, "ci95": ci95, "n_bootstrap": int(n_bootstrap), "ci_method": method,
            "ci_unit": "group" if groups is not None else "case"}
