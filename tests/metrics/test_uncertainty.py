"""Uncertainty scores, accuracy-coverage by hand, abstention on val (arrays only)."""

import math

import numpy as np
import pytest

from hybridmednet.metrics.uncertainty import (
    accuracy_coverage_curve,
    choose_abstain_threshold,
    max_prob_uncertainty,
    predictive_entropy,
)


def test_entropy_and_max_prob():
    p = np.array([[1 / 3] * 3, [1.0, 0, 0], [0.5, 0.5, 0.0], [0.7, 0.2, 0.1]])
    np.testing.assert_allclose(predictive_entropy(p)[:3], [1.0, 0.0, math.log(2) / math.log(3)], atol=1e-12)
    np.testing.assert_allclose(max_prob_uncertainty(p), [2 / 3, 0.0, 0.5, 0.3])
    ml = np.array([[0.5, 1.0], [0.9, 0.1]])
    np.testing.assert_allclose(predictive_entropy(ml, multilabel=True)[0], 0.5)  # (1 + 0) / 2
    np.testing.assert_allclose(max_prob_uncertainty(ml, multilabel=True), [0.25, 0.1])


def test_accuracy_coverage_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.4, 0.6]])
    targets = np.array([0, 1, 0, 0])  # correct: yes, no, yes, no
    r = accuracy_coverage_curve(probs, targets, [0.1, 0.4, 0.2, 0.3])
    # kept in order u=.1 (right), .2 (right), .3 (wrong), .4 (wrong)
    assert r["coverage"] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert r["accuracy"] == pytest.approx([1, 1, 2 / 3, 0.5])
    assert r["thresholds"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert r["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)


def test_ties_are_kept_or_dropped_together():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    r = accuracy_coverage_curve(probs, np.array([0, 1, 0]), [0.1, 0.1, 0.2])
    assert r["coverage"] == pytest.approx([2 / 3, 1.0])
    assert r["accuracy"] == pytest.approx([0.5, 2 / 3])
    assert r["aurc"] == pytest.approx(0.5 * 2 / 3 + (1 / 3) * (1 / 3))


def test_abstain_threshold_by_hand():
    u, c = [0.1, 0.2, 0.3, 0.4], [1, 1, 0, 1]  # kept accuracy 1, 1, 2/3, 3/4
    assert choose_abstain_threshold(u, c, target_accuracy=0.75) == 0.4
    assert choose_abstain_threshold(u, c, target_accuracy=0.8) == 0.2
    assert choose_abstain_threshold(u, c, target_coverage=0.5) == 0.2
    assert choose_abstain_threshold(u, c, target_coverage=0.6) == 0.3
    assert choose_abstain_threshold(u, [0, 1, 1, 1], target_accuracy=1.0) == float("-inf")
    with pytest.raises(ValueError):
        choose_abstain_threshold(u, c, target_accuracy=0.9, target_coverage=0.5)


def test_abstain_threshold_meets_target_on_val_with_max_coverage():
    rng = np.random.default_rng(0)
    u = rng.random(600)
    correct = rng.random(600) > 0.6 * u  # errors grow with uncertainty; overall acc ~0.7
    t = choose_abstain_threshold(u, correct, target_accuracy=0.9)
    kept = u <= t
    assert correct[kept].mean() >= 0.9
    assert 0.1 < kept.mean() < 0.9
    # maximal: every larger threshold falls below the target
    for t2 in np.sort(u[u > t]):
        assert correct[u <= t2].mean() < 0.9
