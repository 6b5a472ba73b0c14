"""Calibration: ECE/MCE/Brier by hand, logits round trip, temperature scaling fixes overconfidence."""

import numpy as np
import pytest
from scipy.special import expit, softmax

from hybridmednet.metrics.calibration import TemperatureScaler, expected_calibration_error, logits_from_probs

# 3 classes, 5 samples; top-1 confidence / correct in the comments.
PROBS = np.array([
    [0.9, 0.05, 0.05],  # t0: conf .9, right
    [0.1, 0.8, 0.1],    # t2: conf .8, wrong
    [0.7, 0.2, 0.1],    # t0: conf .7, right
    [0.4, 0.35, 0.25],  # t1: conf .4, wrong
    [0.3, 0.3, 0.4],    # t2: conf .4, right
])
TARGETS = np.array([0, 2, 0, 1, 2])


def test_ece_mce_brier_by_hand():
    r = expected_calibration_error(PROBS, TARGETS, n_bins=2)
    # bin (0, .5]: confs .4, .4 -> conf .4, acc 1/2, gap .1, weight 2/5 -> .04
    # bin (.5, 1]: confs .9, .8, .7 -> conf .8, acc 2/3, gap 2/15, weight 3/5 -> .08
    assert r["ece"] == pytest.approx(0.12)
    assert r["mce"] == pytest.approx(2 / 15)
    # per-sample sum of squared errors: .015, 1.46, .14, .645, .54 -> mean .56
    assert r["brier"] == pytest.approx(0.56)
    assert r["n"] == 5
    assert [(b["lo"], b["hi"], b["count"]) for b in r["bins"]] == [(0.0, 0.5, 2), (0.5, 1.0, 3)]
    assert r["bins"][0]["confidence"] == pytest.approx(0.4) and r["bins"][0]["accuracy"] == pytest.approx(0.5)
    assert r["bins"][1]["confidence"] == pytest.approx(0.8) and r["bins"][1]["accuracy"] == pytest.approx(2 / 3)


def test_empty_bins_are_nan_and_skipped():
    r = expected_calibration_error(PROBS, TARGETS, n_bins=10)
    assert sum(b["count"] for b in r["bins"]) == 5
    assert np.isnan(r["bins"][0]["confidence"]) and r["bins"][0]["count"] == 0
    # bins (.3,.4] {.4,.4}: |.5-.4|*2; (.6,.7] {.7}: .3; (.7,.8] {.8}: .8; (.8,.9] {.9}: .1
    assert r["ece"] == pytest.approx((0.2 + 0.3 + 0.8 + 0.1) / 5)
    assert r["mce"] == pytest.approx(0.8)


def test_multilabel_pairs_are_binary_predictions():
    probs = np.array([[0.9, 0.2], [0.6, 0.5]])
    targets = np.array([[1, 0], [0, 1]])
    r = expected_calibration_error(probs, targets, n_bins=2)
    # pairs (p, y): (.9,1) conf .9 right; (.2,0) conf .8 right; (.6,0) conf .6 wrong; (.5,1) conf .5 right
    # bin (0,.5]: conf .5 acc 1 -> .5 * 1/4; bin (.5,1]: conf 2.3/3, acc 2/3 -> .1 * 3/4
    assert r["ece"] == pytest.approx(0.125 + 0.075)
    assert r["mce"] == pytest.approx(0.5)
    assert r["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.25) / 4)
    assert r["n"] == 4


def test_logits_from_probs_round_trip():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 4)) * 3
    p = softmax(z, axis=1)
    np.testing.assert_allclose(softmax(logits_from_probs(p, multilabel=False), axis=1), p, rtol=1e-10)
    q = expit(z)
    np.testing.assert_allclose(logits_from_probs(q, multilabel=True), z, rtol=1e-8)
    sat = logits_from_probs(np.array([[0.0, 1.0]]), multilabel=True)
    assert np.all(np.isfinite(sat)) and sat[0, 0] < -20 and sat[0, 1] > 20


def _calibrated_logits(n, c, seed):
    """Labels drawn from softmax(z): z are calibrated logits by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 1.5
    p = softmax(z, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return z, y


def test_temperature_scaling_fixes_overconfidence():
    z, y = _calibrated_logits(4000, 3, seed=1)
    over = 5 * z  # same ranking, far too confident
    val, test = slice(0, 2000), slice(2000, None)
    ts = TemperatureScaler().fit(over[val], y[val])
    assert 4.0 < ts.temperature < 6.0  # recovers the factor 5
    before = expected_calibration_error(softmax(over[test], axis=1), y[test])["ece"]
    after = expected_calibration_error(ts.transform(over[test]), y[test])
    assert before > 0.15 and after["ece"] < 0.04
    assert after["brier"] < expected_calibration_error(softmax(over[test], axis=1), y[test])["brier"]
    np.testing.assert_array_equal(ts.transform(over[test]).argmax(1), over[test].argmax(1))
    # the same fit from saved probabilities (log-probs are valid softmax logits)
    ts2 = TemperatureScaler().fit(logits_from_probs(softmax(over[val], axis=1), False), y[val])
    assert ts2.temperature == pytest.approx(ts.temperature, rel=1e-3)


def test_temperature_scaling_multilabel():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3000, 2)) * 1.5
    y = (rng.random(z.shape) < expit(z)).astype(int)
    ts = TemperatureScaler(multilabel=True).fit(4 * z[:1500], y[:1500])
    assert 3.2 < ts.temperature < 4.8
    before = expected_calibration_error(expit(4 * z[1500:]), y[1500:])["ece"]
    after = expected_calibration_error(ts.transform(4 * z[1500:]), y[1500:])["ece"]
    assert after < before / 2
