"""Subgroup metrics by hand, gap flagging rule, unknown / too-small handling, age bands."""

import math

import numpy as np
import pytest

from hybridmednet.metrics.subgroups import age_band, subgroup_metrics

RIGHT0, WRONG0, RIGHT1, WRONG1 = [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]


def _data():
    """16 'M' samples all right; 16 'F' half right per class; 3 with sex unknown.

    Blocks of 4 identical rows; ``site`` splits every block A, A, B, B, so both sites see the
    same mix and must not differ.
    """
    blocks = [("M", 0, RIGHT0)] * 2 + [("M", 1, RIGHT1)] * 2 + [
        ("F", 0, RIGHT0), ("F", 0, WRONG0), ("F", 1, RIGHT1), ("F", 1, WRONG1)]
    probs, targets, sex, site = [], [], [], []
    for s, t, p in blocks:
        probs += [p] * 4
        targets += [t] * 4
        sex += [s] * 4
        site += ["A", "A", "B", "B"]
    probs += [RIGHT0, RIGHT1, WRONG1]
    targets += [0, 1, 1]
    sex += [None] * 3
    site += ["C"] * 3
    return np.array(probs), np.array(targets), {"sex": sex, "site": site}


def test_subgroup_metrics_by_hand_and_flagging():
    probs, targets, groups = _data()
    r = subgroup_metrics(probs, targets, groups, ["neg", "pos"], n_bootstrap=40, min_size=10)
    m, f = r["attributes"]["sex"]["M"], r["attributes"]["sex"]["F"]
    assert (m["n"], m["acc"], m["balanced_acc"], m["auc"]) == (16, 1.0, 1.0, 1.0)
    assert f["n"] == 16 and f["acc"] == pytest.approx(0.5) and f["balanced_acc"] == pytest.approx(0.5)
    # F AUC: pos scores 4x.7, 4x.4 vs neg 4x.2, 4x.6 -> (.7 beats 8) 32 + (.4 beats 4) 16 = 48 of 64
    assert f["auc"] == pytest.approx(0.75)
    assert m["ci95"]["acc"] == [1.0, 1.0] and f["ci95"]["acc"][1] < 1.0
    assert r["attributes"]["sex"]["unknown"] == {"n": 3, "too_small": True}
    gap = r["gaps"]["sex"]
    assert gap["acc"]["gap"] == pytest.approx(0.5) and (gap["acc"]["high"], gap["acc"]["low"]) == ("M", "F")
    assert gap["auc"]["gap"] == pytest.approx(0.25) and gap["acc"]["ci_separated"]
    # site A and B: 8 M (right) + 8 F (half right) each -> acc .75 both, no gap; C is too small
    site = r["attributes"]["site"]
    assert site["A"]["acc"] == pytest.approx(0.75) == site["B"]["acc"]
    assert site["C"]["too_small"] and r["gaps"]["site"]["acc"]["gap"] == pytest.approx(0.0)
    assert r["flagged"] == ["sex"]


def test_unknown_is_reported_but_not_compared_and_no_ci_no_flag():
    probs, targets, groups = _data()
    scanner = [None] * 16 + ["X"] * 19  # the all-right M block is 'unknown'
    r = subgroup_metrics(probs, targets, {"scanner": scanner}, ["neg", "pos"], n_bootstrap=0, min_size=10)
    assert r["attributes"]["scanner"]["unknown"]["acc"] == 1.0
    assert r["attributes"]["scanner"]["X"]["ci95"] == {}
    assert r["gaps"]["scanner"] == {"acc": None, "auc": None}  # only one known subgroup
    r2 = subgroup_metrics(probs, targets, {"sex": groups["sex"]}, ["neg", "pos"], n_bootstrap=0, min_size=10)
    assert r2["gaps"]["sex"]["acc"]["gap"] == pytest.approx(0.5) and r2["flagged"] == []  # no CIs -> no flag


def test_multilabel_subgroup_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6], [0.3, 0.4]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    r = subgroup_metrics(probs, targets, {"all": ["x"] * 4}, ["a", "b"], multilabel=True, n_bootstrap=0, min_size=1)
    row = r["attributes"]["all"]["x"]
    assert row["acc"] == pytest.approx(0.5)  # rows 0 and 2 fully right at 0.5
    # label a: sens 1, spec 1; label b: sens 1/2, spec 1/2 -> (1 + .5) / 2
    assert row["balanced_acc"] == pytest.approx(0.75)
    assert row["auc"] == pytest.approx((1.0 + 0.5) / 2)


def test_group_length_is_checked():
    probs, targets, _ = _data()
    with pytest.raises(ValueError, match="sex"):
        subgroup_metrics(probs, targets, {"sex": ["M"]}, ["neg", "pos"])


@pytest.mark.parametrize("age, band", [
    (None, "unknown"), ("n/a", "unknown"), (math.nan, "unknown"), (-1, "unknown"), (0, "<30"),
    (29.9, "<30"), (30, "30-44"), (44.99, "30-44"), (45, "45-59"), (59, "45-59"), (60, "60-74"),
    ("74", "60-74"), (75, "75+"), (102, "75+"),
])
def test_age_band(age, band):
    assert age_band(age) == band


def test_subgroup_intervals_resample_patients_when_ids_exist():
    """Ten images per patient, all right or all wrong together: resampling images pretends 10x
    the evidence, so the patient-level interval must be wider."""
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(30), 10)
    right = np.repeat(rng.random(30) < 0.7, 10)
    targets = np.tile([0, 1], 150)
    probs = np.where(right[:, None], np.eye(2)[targets] * 0.8 + 0.1, np.eye(2)[1 - targets] * 0.8 + 0.1)
    attrs = {"sex": ["F"] * 300}
    images = subgroup_metrics(probs, targets, attrs, ["neg", "pos"], n_bootstrap=200, min_size=10)
    clustered = subgroup_metrics(probs, targets, attrs, ["neg", "pos"], n_bootstrap=200, min_size=10,
                                 clusters=[f"p{p}" for p in patients])
    width = lambda r: np.diff(r["attributes"]["sex"]["F"]["ci95"]["acc"])[0]  # noqa: E731
    assert width(clustered) > 1.8 * width(images)
    assert "cluster" in clustered["interval_method"] and "30 groups" in clustered["interval_method"]
