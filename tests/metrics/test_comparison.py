import numpy as np
import pytest

from hybridmednet.metrics.bootstrap import bootstrap_ci
from hybridmednet.metrics.classification import single_label_headline
from hybridmednet.metrics.comparison import mcnemar_exact, paired_difference


def onehot_probs(pred: np.ndarray, c: int) -> np.ndarray:
    p = np.full((len(pred), c), 0.1 / (c - 1))
    p[np.arange(len(pred)), pred] = 0.9
    return p


def shared_difficulty(n=400, c=4, extra=16, seed=0):
    """A right on 70% of cases; B right on those and on ``extra`` more: the same hard cases."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, c, n)
    wrong = (targets + 1) % c
    right_a = rng.random(n) < 0.7
    right_b = right_a.copy()
    right_b[np.flatnonzero(~right_a)[:extra]] = True
    return (onehot_probs(np.where(right_a, targets, wrong), c), onehot_probs(np.where(right_b, targets, wrong), c),
            targets, extra / n)


def test_identical_models_differ_by_exactly_zero():
    a, _, targets, _ = shared_difficulty()
    out = paired_difference([a], [a.copy()], targets, multilabel=False, n_bootstrap=50)
    for m in out["metrics"].values():
        assert m["diff"] == 0 and m["ci95"] == [0.0, 0.0]
    assert out["mcnemar_acc"] == [{"only_a_correct": 0, "only_b_correct": 0, "p_value": 1.0}]


def test_pairing_detects_a_gain_that_separate_intervals_miss():
    a, b, targets, gain = shared_difficulty()
    out = paired_difference([a], [b], targets, multilabel=False, n_bootstrap=300)
    acc = out["metrics"]["acc"]
    assert acc["diff"] == pytest.approx(gain)
    assert 0 < acc["ci95"][0] < gain < acc["ci95"][1]
    ci_a = bootstrap_ci(single_label_headline, a, targets, n_resamples=300)["acc"]
    ci_b = bootstrap_ci(single_label_headline, b, targets, n_resamples=300)["acc"]
    assert ci_b[0] < ci_a[1]  # the unpaired intervals overlap
    [test] = out["mcnemar_acc"]
    assert test["only_b_correct"] == 16 and test["only_a_correct"] == 0
    assert test["p_value"] == pytest.approx(2 * 0.5**16)


def test_seeds_are_averaged_before_differencing():
    a, b, targets, gain = shared_difficulty()
    out = paired_difference([a, a], [b, a], targets, multilabel=False, n_bootstrap=50)
    assert out["metrics"]["acc"]["diff"] == pytest.approx(gain / 2)
    assert out["seeds_a"] == out["seeds_b"] == 2
    # one McNemar test per seed pair: the seeds share the test cases, so their counts are not summed
    assert [t["only_b_correct"] for t in out["mcnemar_acc"]] == [16, 0]
    assert out["mcnemar_acc"][1]["p_value"] == 1.0
    uneven = paired_difference([a], [b, b], targets, multilabel=False, n_bootstrap=50)
    assert uneven["metrics"]["acc"]["diff"] == pytest.approx(gain) and "mcnemar_acc" not in uneven


def test_a_custom_metric_is_differenced_like_the_headline():
    a, b, targets, gain = shared_difficulty()

    def recall_of_class_0(p, t):
        return {"recall_0": float(np.mean(p[t == 0].argmax(1) == 0))}

    out = paired_difference([a], [b], targets, multilabel=False, n_bootstrap=100, metric_fn=recall_of_class_0)
    assert set(out["metrics"]) == {"recall_0"}
    expected = recall_of_class_0(b, targets)["recall_0"] - recall_of_class_0(a, targets)["recall_0"]
    assert out["metrics"]["recall_0"]["diff"] == pytest.approx(expected)
    lo, hi = out["metrics"]["recall_0"]["ci95"]
    assert lo <= expected <= hi


def test_multilabel_difference():
    rng = np.random.default_rng(1)
    targets = (rng.random((200, 3)) < 0.4).astype(np.int64)
    noisy = np.clip(targets + rng.normal(0, 0.6, targets.shape), 0, 1)
    out = paired_difference([noisy], [targets * 0.8 + 0.1], targets, multilabel=True, n_bootstrap=50)
    assert set(out["metrics"]) == {"mean_auc", "macro_f1", "subset_acc"}
    assert out["metrics"]["mean_auc"]["diff"] > 0 and out["metrics"]["mean_auc"]["b"] == 1.0
    assert "mcnemar_acc" not in out


def test_shapes_are_checked():
    a, b, targets, _ = shared_difficulty()
    with pytest.raises(ValueError, match="same cases"):
        paired_difference([a], [b[:-1]], targets, multilabel=False)
    with pytest.raises(ValueError, match="same shape"):
        paired_difference([a, a[:-1]], [b], targets, multilabel=False)
    with pytest.raises(ValueError, match="no prediction"):
        paired_difference([], [b], targets, multilabel=False)


def test_mcnemar_counts_discordant_cases():
    a = np.array([True, True, False, False, True])
    b = np.array([True, False, True, True, True])
    assert mcnemar_exact(a, b) | {"p_value": 0} == {"only_a_correct": 1, "only_b_correct": 2, "p_value": 0}


def test_clustered_mcnemar_counts_a_lesion_once():
    from hybridmednet.metrics.comparison import mcnemar_clustered

    rng = np.random.default_rng(0)
    a, b = rng.random(60) < 0.6, rng.random(60) < 0.8
    singletons = mcnemar_clustered(a, b, [None] * 60)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert singletons["statistic"] == pytest.approx((only_a - only_b) ** 2 / (only_a + only_b))
    copies = 6  # six images of each lesion: the image-level test sees six times the evidence
    a6, b6 = np.repeat(a, copies), np.repeat(b, copies)
    lesions = np.repeat(np.arange(60), copies).tolist()
    clustered = mcnemar_clustered(a6, b6, lesions)
    assert clustered["statistic"] == pytest.approx(singletons["statistic"]) and clustered["groups"] == 60
    assert mcnemar_exact(a6, b6)["p_value"] < 0.01 * clustered["p_value"]
