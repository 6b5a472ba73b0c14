"""Bootstrap CIs: coverage of the point estimate, shrinkage with N, determinism, stratification."""

import json
import math

import numpy as np
import pytest

from hybridmednet.metrics import HEADLINE_MULTI, HEADLINE_SINGLE, bootstrap_ci, compute_metrics
from hybridmednet.metrics.classification import single_label_headline


def _data(n, c=4, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.choice(c, size=n, p=np.linspace(2, 1, c) / np.linspace(2, 1, c).sum())
    logits = rng.normal(size=(n, c)) + 1.2 * np.eye(c)[t]
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), t


def test_ci_contains_point_estimate():
    probs, t = _data(400)
    point = single_label_headline(probs, t)
    ci = bootstrap_ci(single_label_headline, probs, t, n_resamples=60)
    assert set(ci) == set(HEADLINE_SINGLE)
    for name, (lo, hi) in ci.items():
        assert lo < point[name] < hi, name


def test_ci_shrinks_as_n_grows():
    widths = []
    for n in (100, 1600):
        probs, t = _data(n, seed=1)
        ci = bootstrap_ci(single_label_headline, probs, t, n_resamples=40, seed=3)
        widths.append({k: hi - lo for k, (lo, hi) in ci.items()})
    for name in HEADLINE_SINGLE:
        assert widths[1][name] < 0.6 * widths[0][name], name  # ~1/sqrt(16) expected


def test_deterministic_for_fixed_seed():
    probs, t = _data(150)
    a = bootstrap_ci(single_label_headline, probs, t, n_resamples=15, seed=7)
    b = bootstrap_ci(single_label_headline, probs, t, n_resamples=15, seed=7)
    c = bootstrap_ci(single_label_headline, probs, t, n_resamples=15, seed=8)
    assert a == b
    assert a != c


def _class_counts(probs, targets):
    return {f"n{k}": float((targets == k).sum()) for k in range(3)}


def test_stratified_resampling_keeps_class_counts():
    t = np.array([0] * 50 + [1] * 8 + [2] * 2)
    probs = np.full((60, 3), 1 / 3)
    ci = bootstrap_ci(_class_counts, probs, t, n_resamples=50)
    assert ci == {"n0": (50.0, 50.0), "n1": (8.0, 8.0), "n2": (2.0, 2.0)}
    loose = bootstrap_ci(_class_counts, probs, t, n_resamples=50, stratify=False)
    assert loose["n2"][0] < 2.0 < loose["n2"][1]


def test_percentiles_and_nan_resamples():
    t = np.zeros(20, dtype=int)
    probs = np.zeros((20, 1))
    values = iter(np.r_[np.arange(1.0, 101.0), np.full(20, np.nan)])

    def fn(p, y):
        return {"v": next(values), "never": float("nan")}

    ci = bootstrap_ci(fn, probs, t, n_resamples=120, alpha=0.1)
    # NaN draws dropped; 5th/95th percentiles of 1..100 (linear interpolation)
    assert ci["v"] == pytest.approx(tuple(np.percentile(np.arange(1.0, 101.0), [5, 95])))
    assert all(math.isnan(x) for x in ci["never"])


def _assert_plain(obj):
    """Only built-in JSON types: numpy scalars would break strict serialisers downstream."""
    if isinstance(obj, dict):
        assert all(type(k) is str for k in obj)
        for v in obj.values():
            _assert_plain(v)
    elif isinstance(obj, list):
        for v in obj:
            _assert_plain(v)
    else:
        assert type(obj) in (str, int, float, bool), type(obj)


def test_compute_metrics_single_label_is_plain_json():
    probs, t = _data(120, c=3)
    out = compute_metrics(probs, t, ["a", "b", "c"], multilabel=False, n_bootstrap=30)
    assert set(out["ci95"]) == set(HEADLINE_SINGLE)
    assert out["n_bootstrap"] == 30
    assert out["ci_method"] == "percentile bootstrap over cases, 30 resamples, stratified by class"
    for name, (lo, hi) in out["ci95"].items():
        assert lo <= out["metrics"][name] <= hi
    _assert_plain(out)
    json.dumps(out)


def test_compute_metrics_multi_label_and_no_bootstrap():
    rng = np.random.default_rng(0)
    t = (rng.random((150, 3)) < 0.3).astype(int)
    probs = np.clip(0.3 * t + 0.7 * rng.random((150, 3)), 0, 1)
    out = compute_metrics(probs, t, ["x", "y", "z"], multilabel=True, n_bootstrap=30)
    assert set(out["ci95"]) == set(HEADLINE_MULTI)
    _assert_plain(out)
    json.dumps(out)
    none = compute_metrics(probs, t, ["x", "y", "z"], multilabel=True, n_bootstrap=0)
    assert none["ci95"] == {} and none["n_bootstrap"] == 0


def test_cluster_bootstrap_is_not_fooled_by_copies_of_a_case():
    """Five images of each lesion carry the information of one: resampling lesions gives about the
    interval of the lesions alone, resampling images one that is ~sqrt(5) too narrow."""
    probs, t = _data(150, c=2, seed=3)
    copies = 5
    probs5, t5 = np.repeat(probs, copies, axis=0), np.repeat(t, copies)
    lesions = np.repeat([f"L{i}" for i in range(len(t))], copies).tolist()
    alone = compute_metrics(probs, t, ["a", "b"], multilabel=False, n_bootstrap=400)["ci95"]["auc"]
    images = compute_metrics(probs5, t5, ["a", "b"], multilabel=False, n_bootstrap=400)["ci95"]["auc"]
    clustered = compute_metrics(probs5, t5, ["a", "b"], multilabel=False, n_bootstrap=400, groups=lesions)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(images) < 0.6 * width(alone)
    assert abs(width(clustered["ci95"]["auc"]) - width(alone)) < 0.25 * width(alone)
    assert clustered["ci_unit"] == "group" and "cluster percentile bootstrap over 150 groups" in clustered["ci_method"]


def test_cluster_resamples_keep_each_class_group_count():
    from hybridmednet.metrics.bootstrap import _sampler

    targets = np.array([0, 0, 0, 1, 1, 2])
    groups = ["a", "a", "b", "c", "c", None]  # None: its own group
    draw = _sampler(targets, np.random.default_rng(0), True, groups)
    for _ in range(20):
        idx = draw()
        assert sorted(set(targets[idx])) == [0, 1, 2]  # every class present in every resample
        assert np.sum(targets[idx] == 2) == 1 and np.sum(targets[idx] == 1) == 2


def test_the_seed_mean_interval_contains_the_seed_mean():
    from hybridmednet.metrics.bootstrap import seed_mean_ci
    from hybridmednet.metrics.classification import single_label_headline

    rng = np.random.default_rng(5)
    probs, t = _data(200, c=3, seed=5)
    runs = [np.clip(probs + rng.normal(0, 0.15, probs.shape), 1e-3, None) for _ in range(3)]
    runs = [r / r.sum(1, keepdims=True) for r in runs]
    out = seed_mean_ci(single_label_headline, runs, t, n_resamples=300)
    per_seed = [single_label_headline(r, t)["acc"] for r in runs]
    assert out["point"]["acc"] == pytest.approx(np.mean(per_seed))
    assert out["seed_std"]["acc"] == pytest.approx(np.std(per_seed, ddof=1))
    for name, (lo, hi) in out["ci95"].items():
        assert lo <= out["point"][name] <= hi, name
