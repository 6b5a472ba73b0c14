"""Decision thresholds (operating points) chosen on validation and reported on test.

A deployed screening model needs a threshold, not an AUC. Choosing it on the split it is reported
on makes the reported sensitivity optimistic, so :func:`operating_points` picks every threshold on
val and reports sensitivity / specificity / PPV / NPV with bootstrap CIs on test. Decision rule
everywhere: positive when ``score >= threshold`` (the rule ``sklearn.metrics.roc_curve`` uses).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from hybridmednet.errors import ConfigError
from hybridmednet.metrics.bootstrap import bootstrap_ci

_POINT = ("sensitivity", "specificity", "ppv", "npv")


def _roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(np.int64)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.shape} vs {labels.shape}")
    if len(np.unique(labels)) != 2:
        raise ValueError("a threshold needs both positive and negative labels in the data")
    # drop_intermediate=False: the dropped collinear points can be exactly the highest threshold
    # reaching a sensitivity target.
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    return fpr[1:], tpr[1:], thr[1:]  # the first point is threshold=inf (nothing positive)


def youden_threshold(scores, labels) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (highest one among ties)."""
    fpr, tpr, thr = _roc(scores, labels)
    return float(thr[np.argmax(tpr - fpr)])


def threshold_for_sensitivity(scores, labels, target: float = 0.95) -> float:
    """The highest threshold whose sensitivity on these data is >= ``target``."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    _, tpr, thr = _roc(scores, labels)
    return float(thr[np.flatnonzero(tpr >= target - 1e-12)[0]])


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    pred = scores >= threshold
    pos = labels == 1
    tp, fn = int(np.sum(pred & pos)), int(np.sum(~pred & pos))
    fp, tn = int(np.sum(pred & ~pos)), int(np.sum(~pred & ~pos))
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def evaluate_operating_point(scores, labels, threshold: float, *, n_bootstrap: int = 1000, seed: int = 0,
                             groups=None) -> dict:
    """Sensitivity, specificity, PPV, NPV at ``threshold`` with 95% percentile-bootstrap CIs.

    Resampling is stratified by label (as in :func:`compute_metrics`), so prevalence, and hence
    PPV/NPV, is held at the observed value: the CIs cover sampling noise, not a prevalence shift.
    Undefined values (e.g. PPV with no predicted positives) are NaN. ``n_bootstrap=0`` -> no CIs.
    ``groups`` (patient/lesion ids): resample groups (cluster bootstrap).
    Returns ``threshold``, the four metrics, counts ``tp``/``fp``/``tn``/``fn``, ``n`` and
    ``ci95 = {metric: [lo, hi]}``.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = (np.asarray(labels).ravel() > 0.5).astype(np.int64)
    out = {"threshold": float(threshold), **_point(scores, labels, threshold), "n": len(labels)}
    ci95 = {}
    if n_bootstrap > 0:
        fn = lambda s, y: {k: v for k, v in _point(s, y, threshold).items() if k in _POINT}
        ci95 = {k: [lo, hi] for k, (lo, hi) in
                bootstrap_ci(fn, scores, labels, n_resamples=n_bootstrap, seed=seed, stratify=True, groups=groups).items()}
    out["ci95"] = ci95
    return out


def group_operating_points(val_probs, val_targets, test_probs, test_targets, class_names: list[str],
                           risk_groups: dict[str, list[str]], *, sensitivity_target: float = 0.90,
                           n_bootstrap: int = 1000, seed: int = 0, test_groups=None) -> dict:
    """For each coarse group (e.g. malignant = mel + bcc + akiec): the group's probability (the sum of
    its classes' probabilities), the highest threshold reaching ``sensitivity_target`` on val, and
    that threshold's test sensitivity / specificity / PPV / NPV with 95% CIs (cluster bootstrap over
    ``test_groups`` when given). A 7-class model with a high AUC can still miss many melanomas:
    this is the figure a clinician asks for first."""
    index = {name: k for k, name in enumerate(class_names)}
    out = {}
    for group, members in risk_groups.items():
        unknown = [m for m in members if m not in index]
        if unknown:
            raise ConfigError(f"eval.risk_groups.{group}: {unknown} are not classes of the model ({class_names})")
        cols = [index[m] for m in members]
        v_score, t_score = np.asarray(val_probs)[:, cols].sum(axis=1), np.asarray(test_probs)[:, cols].sum(axis=1)
        v_label = np.isin(np.asarray(val_targets), cols).astype(np.int64)
        t_label = np.isin(np.asarray(test_targets), cols).astype(np.int64)
        if len(np.unique(v_label)) < 2 or len(np.unique(t_label)) < 2:
            out[group] = {"members": members, "skipped": "val or test lacks cases inside or outside the group"}
            continue
        threshold = threshold_for_sensitivity(v_score, v_label, sensitivity_target)
        out[group] = {"members": members, "sensitivity_target": float(sensitivity_target), "chosen_on": "val",
                      "threshold": threshold, "val": _point(v_score, v_label, threshold),
                      "test": evaluate_operating_point(t_score, t_label, threshold, n_bootstrap=n_bootstrap, seed=seed,
                                                       groups=test_groups)}
    return out


def operating_points(val_probs, val_targets, test_probs, test_targets, class_names, *, multilabel: bool,
                     sensitivity_target: float = 0.95, n_bootstrap: int = 1000, seed: int = 0, test_groups=None) -> dict:
    """Youden and fixed-sensitivity thresholds chosen on val, evaluated on test, per positive class.

    Which columns get operating points: binary single-label -> the positive class (index 1) only;
    multi-label -> every label; multi-class single-label (C > 2) -> every class one-vs-rest
    (score = that class's probability). One-vs-rest thresholds are independent per class: applied
    together they may flag a sample for several classes or none, so they are a per-finding
    screening rule, not a replacement for argmax.

    Returns ``{"mode": "binary"|"multilabel"|"one_vs_rest", "sensitivity_target", "chosen_on": "val",
    "reported_on": "test", "per_class": {name: {"youden": R, "fixed_sensitivity": R}}}`` where
    R = ``{"threshold", "val": point metrics on val, "test": evaluate_operating_point(...) on test}``.
    A class whose val (or test) lacks positives or negatives gets ``{"skipped": reason}``.
    ``test_groups`` (patient/lesion ids of the test cases) makes the test intervals a cluster bootstrap.
    """
    vp, tp_ = np.asarray(val_probs, dtype=np.float64), np.asarray(test_probs, dtype=np.float64)
    vt, tt = np.asarray(val_targets), np.asarray(test_targets)
    c = vp.shape[1]
    if len(class_names) != c or tp_.shape[1] != c:
        raise ValueError(f"{len(class_names)} names for val/test probs with {c}/{tp_.shape[1]} columns")
    if multilabel:
        mode, cols = "multilabel", list(range(c))
        vlab, tlab = (vt > 0.5).astype(np.int64), (tt > 0.5).astype(np.int64)
    else:
        if c < 2:
            raise ValueError("single-label operating points need at least 2 classes")
        mode, cols = ("binary", [1]) if c == 2 else ("one_vs_rest", list(range(c)))
        vlab, tlab = np.eye(c, dtype=np.int64)[vt.astype(np.int64)], np.eye(c, dtype=np.int64)[tt.astype(np.int64)]
    per_class = {}
    for k in cols:
        name = class_names[k]
        if len(np.unique(vlab[:, k])) < 2 or len(np.unique(tlab[:, k])) < 2:
            per_class[name] = {"skipped": "val or test lacks positives or negatives for this class"}
            continue
        rules = {"youden": youden_threshold(vp[:, k], vlab[:, k]),
                 "fixed_sensitivity": threshold_for_sensitivity(vp[:, k], vlab[:, k], sensitivity_target)}
        per_class[name] = {
            rule: {"threshold": t, "val": _point(vp[:, k], vlab[:, k], t),
                   "test": evaluate_operating_point(tp_[:, k], tlab[:, k], t, n_bootstrap=n_bootstrap, seed=seed,
                                                    groups=test_groups)}
            for rule, t in rules.items()
        }
    return {"mode": mode, "sensitivity_target": float(sensitivity_target), "chosen_on": "val",
            "reported_on": "test", "per_class": per_class}
