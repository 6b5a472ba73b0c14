"""Hand-computed cases: every expected number below is worked out in the comments."""

import math
import warnings

import numpy as np
import pytest

from hybridmednet.metrics.classification import (
    HEADLINE_MULTI,
    HEADLINE_SINGLE,
    multi_label_headline,
    multi_label_metrics,
    single_label_headline,
    single_label_metrics,
)

# 3 classes, 6 samples. argmax predictions = [0, 1, 1, 1, 2, 0].
PROBS3 = np.array(
    [
        [0.6, 0.3, 0.1],  # true 0, pred 0
        [0.3, 0.5, 0.2],  # true 0, pred 1
        [0.2, 0.7, 0.1],  # true 1, pred 1
        [0.1, 0.8, 0.1],  # true 1, pred 1
        [0.1, 0.2, 0.7],  # true 2, pred 2
        [0.5, 0.1, 0.4],  # true 2, pred 0
    ]
)
TARGETS3 = np.array([0, 0, 1, 1, 2, 2])
NAMES3 = ["a", "b", "c"]


def test_three_class_by_hand():
    m = single_label_metrics(PROBS3, TARGETS3, NAMES3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["n"] == 6
    assert m["acc"] == pytest.approx(4 / 6)
    # recalls 1/2, 2/2, 1/2
    assert m["balanced_acc"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # precisions 1/2, 2/3, 1/1 -> F1 1/2, 4/5, 2/3
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    pc = m["per_class"]
    assert [pc[k]["sensitivity"] for k in NAMES3] == pytest.approx([0.5, 1.0, 0.5])
    # negatives per class = 4; false positives: a 1 (sample 5), b 1 (sample 1), c 0
    assert [pc[k]["specificity"] for k in NAMES3] == pytest.approx([3 / 4, 3 / 4, 1.0])
    assert [pc[k]["precision"] for k in NAMES3] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [pc[k]["f1"] for k in NAMES3] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert [pc[k]["support"] for k in NAMES3] == [2, 2, 2]
    # one-vs-rest AUC by pair counting (2 positives x 4 negatives = 8 pairs each):
    # a: 0.6 beats all 4 negatives (.2 .1 .1 .5), 0.3 beats 3 -> 7/8; b and c: 8/8.
    assert [pc[k]["auc"] for k in NAMES3] == pytest.approx([7 / 8, 1.0, 1.0])
    assert m["auc"] == pytest.approx((7 / 8 + 1 + 1) / 3)
    assert m["auc_skipped_classes"] == []
    assert set(HEADLINE_SINGLE) <= set(m)


def test_binary_auc_counts_ordered_pairs_and_uses_positive_column():
    # p1 for negatives .1 .4 .6, positives .4 .8.
    # pos .4: beats .1, ties .4 (counts 1/2), loses to .6 -> 1.5; pos .8 beats all 3 -> 3.
    p1 = np.array([0.1, 0.4, 0.6, 0.4, 0.8])
    t = np.array([0, 0, 0, 1, 1])
    m = single_label_metrics(np.stack([1 - p1, p1], axis=1), t, ["neg", "pos"])
    assert m["auc"] == pytest.approx(4.5 / 6)
    assert m["per_class"]["pos"]["auc"] == pytest.approx(4.5 / 6)
    assert m["acc"] == pytest.approx(3 / 5)  # predictions 0 0 1 0 1
    # Headline AUC is the positive column's AUC even when column 0 is uninformative.
    junk = np.stack([np.full(5, 0.5), p1], axis=1)
    assert single_label_metrics(junk, t, ["neg", "pos"])["auc"] == pytest.approx(0.75)
    assert single_label_headline(junk, t)["auc"] == pytest.approx(0.75)


def test_class_absent_from_targets():
    t = np.array([0, 0, 1, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.1, 0.7], [0.3, 0.6, 0.1], [0.4, 0.5, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "predicted class c never true" must not leak warnings
        m = single_label_metrics(probs, t, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert m["auc_skipped_classes"] == ["c"]
    # a: pos .7 .2 vs neg .3 .4 -> 2/4; b: pos .6 .5 vs neg .2 .1 -> 4/4
    assert m["auc"] == pytest.approx((0.5 + 1.0) / 2)
    c = m["per_class"]["c"]
    assert math.isnan(c["auc"]) and math.isnan(c["sensitivity"]) and c["support"] == 0
    assert c["f1"] == 0.0  # predicted once, never true
    assert m["balanced_acc"] == pytest.approx((1 / 2 + 1) / 2)  # mean recall of present classes
    # F1 a = 2/3, b = 1, c = 0 (c was predicted, so it counts)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_single_class_present_gives_nan_auc():
    m = single_label_metrics(PROBS3[:2], TARGETS3[:2], NAMES3)
    assert math.isnan(m["auc"])
    assert m["auc_skipped_classes"] == NAMES3


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        single_label_metrics(PROBS3, TARGETS3[:5], NAMES3)
    with pytest.raises(ValueError):
        single_label_metrics(PROBS3, TARGETS3 + 1, NAMES3)
    with pytest.raises(ValueError):
        single_label_metrics(PROBS3, TARGETS3, NAMES3[:2])


ML_PROBS = np.array([[0.9, 0.2, 0.1], [0.4, 0.7, 0.6], [0.3, 0.6, 0.2], [0.6, 0.1, 0.3]])
ML_TARGETS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_multi_label_by_hand():
    m = multi_label_metrics(ML_PROBS, ML_TARGETS, ["x", "y", "z"])
    pl = m["per_label"]
    # x: pos .9 .3 vs neg .4 .6 -> .9 beats 2, .3 beats 0 -> 2/4; y: 4/4; z has no positives
    assert pl["x"]["auc"] == pytest.approx(0.5)
    assert pl["y"]["auc"] == pytest.approx(1.0)
    assert math.isnan(pl["z"]["auc"])
    assert m["mean_auc"] == pytest.approx(0.75)
    assert m["auc_skipped_labels"] == ["z"]
    # predictions at 0.5: [1,0,0] [0,1,1] [0,1,0] [1,0,0] -> only row 0 matches exactly
    assert m["subset_acc"] == pytest.approx(1 / 4)
    # x: TP1 FP1 FN1 TN1; y: TP2 TN2; z: FP1 TN3
    assert (pl["x"]["sensitivity"], pl["x"]["specificity"], pl["x"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (pl["y"]["sensitivity"], pl["y"]["specificity"], pl["y"]["f1"]) == pytest.approx((1, 1, 1))
    assert math.isnan(pl["z"]["sensitivity"]) and pl["z"]["specificity"] == pytest.approx(3 / 4)
    assert pl["z"]["f1"] == 0.0
    assert [pl[k]["support"] for k in "xyz"] == [2, 2, 0]
    assert m["macro_f1"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["n"] == 4 and set(HEADLINE_MULTI) <= set(m)


def test_multi_label_per_label_threshold():
    # z threshold 0.7: z never predicted nor true -> F1 undefined, left out of the mean;
    # row 1 becomes [0,1,0] and matches.
    m = multi_label_metrics(ML_PROBS, ML_TARGETS, ["x", "y", "z"], threshold=np.array([0.5, 0.5, 0.7]))
    assert math.isnan(m["per_label"]["z"]["f1"])
    assert m["macro_f1"] == pytest.approx(0.75)
    assert m["subset_acc"] == pytest.approx(0.5)


def _random_single(n, c, seed, absent=None):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, c, n)
    if absent is not None:
        t[t == absent] = 0
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[t]
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), t


@pytest.mark.parametrize("c, absent", [(2, None), (5, None), (5, 3)])
def test_fast_headline_matches_sklearn_metrics(c, absent):
    probs, t = _random_single(300, c, seed=c, absent=absent)
    full = single_label_metrics(probs, t, [str(k) for k in range(c)])
    fast = single_label_headline(probs, t)
    assert set(fast) == set(HEADLINE_SINGLE)
    assert [fast[k] for k in HEADLINE_SINGLE] == pytest.approx([full[k] for k in HEADLINE_SINGLE])


def test_fast_multi_headline_matches_full():
    rng = np.random.default_rng(1)
    t = (rng.random((200, 4)) < [0.3, 0.1, 0.5, 0.0]).astype(int)
    probs = np.clip(0.35 * t + rng.random((200, 4)) * 0.7, 0, 1)
    full = multi_label_metrics(probs, t, list("abcd"))
    fast = multi_label_headline(probs, t)
    assert set(fast) == set(HEADLINE_MULTI)
    assert [fast[k] for k in HEADLINE_MULTI] == pytest.approx([full[k] for k in HEADLINE_MULTI])
