"""Operating points: Youden / fixed-sensitivity thresholds by hand, test metrics and CIs, routing."""

import numpy as np
import pytest

from hybridmednet.errors import ConfigError

from hybridmednet.metrics.operating_points import (
    evaluate_operating_point,
    operating_points,
    threshold_for_sensitivity,
    youden_threshold,
)

# 3 positives, 4 negatives, sorted by score.
SCORES = np.array([0.9, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1])
LABELS = np.array([1, 0, 1, 1, 0, 0, 0])


def test_youden_by_hand():
    # threshold: (tpr, fpr, J) = .9: (1/3, 0, .33); .7: (1/3, 1/4, .08); .6: (2/3, 1/4, .42);
    # .5: (1, 1/4, .75); .3: (1, 1/2, .5); .2: (1, 3/4, .25); .1: (1, 1, 0)
    assert youden_threshold(SCORES, LABELS) == 0.5
    # ties in J (.8 and .35 both give J = .5): the highest threshold wins
    assert youden_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.8


def test_threshold_for_sensitivity_by_hand():
    assert threshold_for_sensitivity(SCORES, LABELS, 0.95) == 0.5  # first tpr >= .95 is 1 at .5
    assert threshold_for_sensitivity(SCORES, LABELS, 0.6) == 0.6  # tpr 2/3
    assert threshold_for_sensitivity(SCORES, LABELS, 1 / 3) == 0.9
    # collinear (vertical) ROC points must not be dropped: tpr 1/3, 2/3, 1 at fpr 0
    assert threshold_for_sensitivity([0.9, 0.8, 0.7, 0.1], [1, 1, 1, 0], 0.6) == 0.8
    with pytest.raises(ValueError, match="both"):
        threshold_for_sensitivity([0.2, 0.3], [1, 1])


def test_evaluate_operating_point_by_hand():
    r = evaluate_operating_point(SCORES, LABELS, 0.6, n_bootstrap=0)
    # predicted positive: .9 (pos), .7 (neg), .6 (pos) -> tp 2, fp 1; fn 1 (.5), tn 3
    assert (r["tp"], r["fp"], r["tn"], r["fn"], r["n"]) == (2, 1, 3, 1, 7)
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(3 / 4)
    assert r["ppv"] == pytest.approx(2 / 3) and r["npv"] == pytest.approx(3 / 4)
    assert r["threshold"] == 0.6 and r["ci95"] == {}
    none_pos = evaluate_operating_point(SCORES, LABELS, 0.95, n_bootstrap=0)
    assert np.isnan(none_pos["ppv"]) and none_pos["sensitivity"] == 0.0


def _binary(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 2 * y - 1)))
    return s, y


def test_bootstrap_ci_brackets_the_point():
    s, y = _binary(400, 0)
    r = evaluate_operating_point(s, y, 0.5, n_bootstrap=200, seed=1)
    assert set(r["ci95"]) == {"sensitivity", "specificity", "ppv", "npv"}
    for k, (lo, hi) in r["ci95"].items():
        assert lo < r[k] < hi and hi - lo < 0.25, k
    assert r == evaluate_operating_point(s, y, 0.5, n_bootstrap=200, seed=1)


def test_binary_thresholds_chosen_on_val_reported_on_test():
    vs, vy = _binary(300, 1)
    ts, ty = _binary(300, 2)
    val, test = np.stack([1 - vs, vs], 1), np.stack([1 - ts, ts], 1)
    r = operating_points(val, vy, test, ty, ["neg", "pos"], multilabel=False, sensitivity_target=0.9, n_bootstrap=20)
    assert r["mode"] == "binary" and list(r["per_class"]) == ["pos"]
    fixed = r["per_class"]["pos"]["fixed_sensitivity"]
    assert fixed["threshold"] == threshold_for_sensitivity(vs, vy, 0.9)
    assert fixed["val"]["sensitivity"] >= 0.9
    assert fixed["test"]["sensitivity"] == pytest.approx(np.mean(ts[ty == 1] >= fixed["threshold"]))
    assert r["per_class"]["pos"]["youden"]["threshold"] == youden_threshold(vs, vy)
    assert set(fixed["test"]["ci95"]) == {"sensitivity", "specificity", "ppv", "npv"}


def test_multilabel_and_one_vs_rest_routing():
    rng = np.random.default_rng(3)
    vt, tt = (rng.random((80, 2)) < 0.4).astype(int), (rng.random((80, 2)) < 0.4).astype(int)
    vp, tp = np.clip(0.6 * vt + 0.5 * rng.random((80, 2)), 0, 1), np.clip(0.6 * tt + 0.5 * rng.random((80, 2)), 0, 1)
    r = operating_points(vp, vt, tp, tt, ["a", "b"], multilabel=True, n_bootstrap=0)
    assert r["mode"] == "multilabel" and set(r["per_class"]) == {"a", "b"}
    assert r["per_class"]["b"]["youden"]["threshold"] == youden_threshold(vp[:, 1], vt[:, 1])

    p3 = rng.dirichlet([1, 1, 1], size=60)
    y_val = np.array([0, 1] * 30)  # class 2 never occurs on val
    y_test = np.arange(60) % 3
    r3 = operating_points(p3, y_val, p3, y_test, ["x", "y", "z"], multilabel=False, n_bootstrap=0)
    assert r3["mode"] == "one_vs_rest" and list(r3["per_class"]) == ["x", "y", "z"]
    assert "skipped" in r3["per_class"]["z"]
    assert r3["per_class"]["x"]["youden"]["threshold"] == youden_threshold(p3[:, 0], y_val == 0)


def test_group_operating_point_sums_member_probabilities_and_meets_the_val_target():
    from hybridmednet.metrics.operating_points import group_operating_points

    rng = np.random.default_rng(0)
    names = ["akiec", "bcc", "mel", "nv"]

    def cases(n):
        targets = rng.integers(0, 4, n)
        logits = rng.normal(0, 1.0, (n, 4))
        logits[np.arange(n), targets] += 1.2
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True), targets

    (vp, vt), (tp, tt) = cases(400), cases(400)
    out = group_operating_points(vp, vt, tp, tt, names, {"malignant": ["mel", "bcc", "akiec"]},
                                 sensitivity_target=0.9, n_bootstrap=50)
    r = out["malignant"]
    assert r["val"]["sensitivity"] >= 0.9 and r["chosen_on"] == "val"
    score = tp[:, :3].sum(1)
    positive = np.isin(tt, [0, 1, 2])
    assert r["test"]["sensitivity"] == pytest.approx(np.mean(score[positive] >= r["threshold"]))
    lo, hi = r["test"]["ci95"]["sensitivity"]
    assert lo <= r["test"]["sensitivity"] <= hi
    with pytest.raises(ConfigError, match="'melanoma'"):
        group_operating_points(vp, vt, tp, tt, names, {"m": ["melanoma"]})
