"""Subgroup (fairness) metrics: does the model work equally well for every sex, age band, site?

A good overall AUC can hide a subgroup where the model fails. Every subgroup gets its metrics with
95% bootstrap CIs, and an attribute is flagged only when a gap is both large and statistically
clear (see :func:`subgroup_metrics`), so small, noisy subgroups do not raise false alarms.
"""

from __future__ import annotations

import math

import numpy as np

from hybridmednet.metrics.bootstrap import bootstrap_ci, interval_method
from hybridmednet.metrics.classification import (
    _check,
    _nanmean,
    _ratio,
    multi_label_headline,
    single_label_headline,
)

SUBGROUP_METRICS = ("acc", "balanced_acc", "auc")
GAP_METRICS = ("acc", "auc")
GAP_LIMIT = 0.05
UNKNOWN = "unknown"


def age_band(age) -> str:
    """"<30", "30-44", "45-59", "60-74", "75+", or "unknown" for missing/unparseable/negative ages."""
    try:
        a = float(age)
    except (TypeError, ValueError):
        return UNKNOWN
    if math.isnan(a) or a < 0:
        return UNKNOWN
    for upper, band in ((30, "<30"), (45, "30-44"), (60, "45-59"), (75, "60-74")):
        if a < upper:
            return band
    return "75+"


def _single(probs, targets) -> dict[str, float]:
    h = single_label_headline(probs, targets)
    return {k: h[k] for k in SUBGROUP_METRICS}


def _multi(probs, targets) -> dict[str, float]:
    """Multi-label: acc = subset accuracy, auc = mean label AUC, balanced_acc = mean over labels
    of (sensitivity + specificity) / 2, all at threshold 0.5."""
    h = multi_label_headline(probs, targets)
    pred = probs >= 0.5
    pos = targets == 1
    sens = _ratio((pred & pos).sum(0), pos.sum(0))
    spec = _ratio((~pred & ~pos).sum(0), (~pos).sum(0))
    return {"acc": h["subset_acc"], "balanced_acc": _nanmean((sens + spec) / 2), "auc": h["mean_auc"]}


def _gap(rows: dict[str, dict], metric: str) -> dict | None:
    vals = {g: r[metric] for g, r in rows.items() if not math.isnan(r[metric])}
    if len(vals) < 2:
        return None
    high, low = max(vals, key=vals.get), min(vals, key=vals.get)
    ci_h, ci_l = rows[high]["ci95"].get(metric), rows[low]["ci95"].get(metric)
    separated = bool(ci_h and ci_l and ci_h[0] > ci_l[1])
    return {"gap": vals[high] - vals[low], "high": high, "low": low, "ci_separated": separated}


def subgroup_metrics(probs, targets, groups: dict[str, list], class_names, *, multilabel: bool = False,
                     n_bootstrap: int = 1000, seed: int = 0, min_size: int = 20, clusters: list | None = None) -> dict:
    """Per-attribute, per-value ``n``, ``acc``, ``balanced_acc``, ``auc`` with 95% bootstrap CIs.

    ``groups`` maps an attribute ("sex", "age_band", "site") to one value per sample; ``None``
    becomes the subgroup "unknown". Values are keyed by ``str(value)``. Metrics are those of
    :mod:`hybridmednet.metrics.classification` (multi-label: see ``_multi``); CIs are the stratified
    percentile bootstrap of :func:`bootstrap_ci` within each subgroup.

    ``clusters``: one patient/lesion id per sample (``None`` = its own); given, each subgroup's
    interval resamples those groups (cluster bootstrap), as the headline intervals do.

    Subgroups with n < ``min_size`` get only ``{"n", "too_small": True}``. Gaps compare the other
    subgroups, excluding "unknown": per attribute and metric in (acc, auc), the highest minus the
    lowest subgroup value with both names. **Flag rule**: an attribute is flagged when its acc or
    auc gap exceeds 0.05 AND the 95% CIs of the highest and lowest subgroups do not overlap
    (high's lower bound > low's upper bound). With ``n_bootstrap=0`` there are no CIs and nothing
    is flagged.

    Returns ``{"attributes": {attr: {value: row}}, "gaps": {attr: {"acc": G, "auc": G}},
    "flagged": [attr], "flag_rule", "min_size", "n_bootstrap"}``, G = ``{"gap", "high", "low",
    "ci_separated"}`` or None when fewer than two subgroups qualify.
    """
    probs, targets = _check(probs, targets, multilabel)
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {probs.shape[1]} probability columns")
    fn = _multi if multilabel else _single
    attributes, gaps, flagged = {}, {}, []
    for attr, values in groups.items():
        if len(values) != len(targets):
            raise ValueError(f"groups[{attr!r}] has {len(values)} values for {len(targets)} samples")
        keys = np.array([UNKNOWN if v is None else str(v) for v in values], dtype=object)
        rows = {}
        for key in sorted(set(keys)):
            idx = np.flatnonzero(keys == key)
            if len(idx) < min_size:
                rows[key] = {"n": len(idx), "too_small": True}
                continue
            p, t = probs[idx], targets[idx]
            row = {"n": len(idx), "too_small": False, **fn(p, t)}
            members = [clusters[i] for i in idx] if clusters is not None else None
            ci = bootstrap_ci(fn, p, t, n_resamples=n_bootstrap, seed=seed, stratify=not multilabel, groups=members) \
                if n_bootstrap > 0 else {}
            row["ci95"] = {k: [lo, hi] for k, (lo, hi) in ci.items()}
            rows[key] = row
        attributes[attr] = rows
        comparable = {k: r for k, r in rows.items() if not r["too_small"] and k != UNKNOWN}
        gaps[attr] = {m: _gap(comparable, m) for m in GAP_METRICS}
        if any(g and g["gap"] > GAP_LIMIT and g["ci_separated"] for g in gaps[attr].values()):
            flagged.append(attr)
    return {
        "attributes": attributes,
        "gaps": gaps,
        "flagged": flagged,
        "flag_rule": f"acc or auc gap > {GAP_LIMIT} and the two subgroups' 95% CIs do not overlap",
        "min_size": int(min_size),
        "n_bootstrap": int(n_bootstrap),
        "interval_method": interval_method(multilabel=multilabel, groups=clusters, n_resamples=n_bootstrap)
        + " (within each subgroup)",
    }
