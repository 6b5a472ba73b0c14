"""Split-conformal sets: the coverage guarantee on exchangeable data (within binomial bounds over
many random splits), its failure under a shifted calibration set, per-class coverage with
Mondrian sets, and the full set when the calibration set is too small."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from hybridmednet.metrics.conformal import ConformalSets, nonconformity, resplit_coverage, set_coverage


def _cases(n: int, rng: np.random.Generator, classes: int = 4, noise: float = 1.5):
    """A noisy classifier's probabilities and true labels (exchangeable: i.i.d. cases)."""
    targets = rng.integers(0, classes, n)
    logits = rng.normal(0, noise, (n, classes))
    logits[np.arange(n), targets] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_coverage_holds_across_random_splits(method):
    rng = np.random.default_rng(0)
    alpha, n_cal, n_test, trials = 0.1, 500, 1000, 40
    coverages = []
    for _ in range(trials):
        probs, targets = _cases(n_cal + n_test, rng)
        sets = ConformalSets(alpha, method).fit(probs[:n_cal], targets[:n_cal]).predict(probs[n_cal:])
        coverages.append(set_coverage(sets, targets[n_cal:])["coverage"])
    # marginal guarantee: coverage >= 1 - alpha on average; each trial within binomial noise of it
    assert np.mean(coverages) >= 1 - alpha - 0.005
    low = binom.ppf(0.001, n_test, 1 - alpha) / n_test
    assert min(coverages) >= low - 0.02 and np.mean(coverages) <= 1 - alpha + 0.03  # not trivially full sets


def test_a_shifted_calibration_set_breaks_the_guarantee():
    rng = np.random.default_rng(1)
    cal_probs, cal_targets = _cases(500, rng, noise=0.3)  # calibrated on an easier distribution
    test_probs, test_targets = _cases(2000, rng, noise=2.5)
    sets = ConformalSets(0.1, "lac").fit(cal_probs, cal_targets).predict(test_probs)
    assert set_coverage(sets, test_targets)["coverage"] < 0.85


def test_mondrian_sets_cover_each_class():
    rng = np.random.default_rng(2)
    probs, targets = _cases(6000, rng)
    hard = targets == 3  # one class the model is much worse at
    probs[hard] = rng.dirichlet(np.ones(4), hard.sum())
    cal, test = slice(0, 3000), slice(3000, None)
    marginal = set_coverage(ConformalSets(0.1).fit(probs[cal], targets[cal]).predict(probs[test]), targets[test])
    mondrian = set_coverage(ConformalSets(0.1, mondrian=True).fit(probs[cal], targets[cal]).predict(probs[test]),
                            targets[test])
    assert marginal["per_class"]["3"] < 0.85 <= min(mondrian["per_class"].values()) + 0.03
    assert mondrian["mean_set_size"] >= marginal["mean_set_size"]


def test_too_few_calibration_cases_give_the_full_label_set():
    rng = np.random.default_rng(3)
    probs, targets = _cases(50, rng)
    sets = ConformalSets(0.05).fit(probs[:10], targets[:10]).predict(probs[10:])  # 10 < 1/0.05 - 1 = 19
    assert sets.all()
    sets = ConformalSets(0.05).fit(probs[:30], targets[:30]).predict(probs[30:])
    assert not sets.all()


def test_scores_by_hand():
    p = np.array([[0.6, 0.3, 0.1]])
    np.testing.assert_allclose(nonconformity(p, "lac"), [[0.4, 0.7, 0.9]])
    np.testing.assert_allclose(nonconformity(p, "aps"), [[0.6, 0.9, 1.0]])
    np.testing.assert_allclose(nonconformity(p, "raps", k_reg=1, lam=0.5), [[0.6, 1.4, 2.0]])
    with pytest.raises(ValueError, match="choose one of lac, aps, raps"):
        nonconformity(p, "thr")


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
@pytest.mark.parametrize("mondrian", [False, True])
def test_covers_agrees_with_the_sets(method, mondrian):
    rng = np.random.default_rng(4)
    probs, targets = _cases(400, rng)
    targets[:300][targets[:300] == 3] = 2  # class 3 absent from calibration: never excluded under Mondrian
    fitted = ConformalSets(0.1, method, mondrian=mondrian).fit(probs[:300], targets[:300])
    true_scores = nonconformity(probs[300:], method)[np.arange(100), targets[300:]]
    sets = fitted.predict(probs[300:])
    np.testing.assert_array_equal(fitted.covers(true_scores, targets[300:]), sets[np.arange(100), targets[300:]])


def test_resplit_coverage_tells_a_shift_from_chance():
    rng = np.random.default_rng(5)
    val_probs, val_targets = _cases(500, rng)
    test_probs, test_targets = _cases(1000, rng)
    chance = resplit_coverage(val_probs, val_targets, test_probs, test_targets, 0.1, "aps", n_resplits=60)
    observed = set_coverage(ConformalSets(0.1, "aps").fit(val_probs, val_targets).predict(test_probs), test_targets)
    assert chance["range95"][0] <= observed["coverage"] <= chance["range95"][1]  # exchangeable: inside the range
    assert abs(chance["mean"] - 0.9) < 0.02 and chance["n_resplits"] == 60

    easy_probs, easy_targets = _cases(500, rng, noise=0.3)  # val easier than test: the sets are too small
    shifted = set_coverage(ConformalSets(0.1, "aps").fit(easy_probs, easy_targets).predict(test_probs), test_targets)
    chance = resplit_coverage(easy_probs, easy_targets, test_probs, test_targets, 0.1, "aps", n_resplits=60)
    assert shifted["coverage"] < chance["range95"][0]
    again = resplit_coverage(easy_probs, easy_targets, test_probs, test_targets, 0.1, "aps", n_resplits=60)
    assert again == chance  # seeded
