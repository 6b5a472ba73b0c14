"""Paired comparison of two models on the same cases: is B better than A, or is it noise?

Two separate 95% intervals that overlap say little: both models are scored on the same test
cases, so most of each interval's width is shared case difficulty. Resampling the cases once
and scoring both models on every resample gives the interval of the *difference* directly,
which is much narrower and is the honest answer to "does fusion beat image-only?".

Several seeds of each model are compared as one difference: the mean over seeds of B_s - A_s,
every seed scored on the same resampled cases, so the interval covers test-set sampling while
the seed average damps training noise. Single-label accuracy also gets McNemar's exact test
(the binomial test on the cases exactly one model gets right), one per seed pair.

With ``groups`` (patient or lesion ids) both parts respect the clustering: the bootstrap resamples
groups, and McNemar's test becomes the clustered version of Durkalski et al. (Stat Med 2003):
X = sum over groups of (b_k - c_k), the per-group difference of discordant cases, and
X^2 / sum (b_k - c_k)^2 ~ chi2(1). With one case per group it is the ordinary McNemar chi-square;
with several images of a lesion it no longer counts them as independent cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridmednet.metrics.bootstrap import bootstrap_ci, cluster_members, interval_method, seed_mean, split_runs
from hybridmednet.metrics.classification import multi_label_headline, single_label_headline


def _check_runs(runs: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    runs = [np.asarray(r, dtype=np.float64) for r in runs]
    if not runs:
        raise ValueError(f"{name}: no prediction arrays given")
    if len({r.shape for r in runs}) != 1 or runs[0].ndim != 2:
        raise ValueError(f"{name}: every seed's probabilities must be one (cases, classes) array of the same shape, "
                         f"got {[r.shape for r in runs]}")
    return runs


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Two-sided exact McNemar test: under "same accuracy" the discordant cases split 50/50."""
    from scipy.stats import binomtest

    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    p = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": float(p)}


def mcnemar_clustered(correct_a: np.ndarray, correct_b: np.ndarray, groups) -> dict:
    """Durkalski et al. (2003) clustered McNemar test (chi-square, 1 df), two-sided."""
    from scipy.stats import chi2

    diff = (correct_a & ~correct_b).astype(np.int64) - (~correct_a & correct_b).astype(np.int64)
    per_group = np.array([diff[m].sum() for m in cluster_members(groups)])
    denominator = float(np.sum(per_group.astype(np.float64) ** 2))
    statistic = float(per_group.sum()) ** 2 / denominator if denominator else 0.0
    return {"only_a_correct": int(np.sum(diff > 0)), "only_b_correct": int(np.sum(diff < 0)),
            "groups": len(per_group), "statistic": statistic, "p_value": float(chi2.sf(statistic, 1)) if denominator else 1.0,
            "test": "clustered McNemar (Durkalski et al. 2003)"}


def paired_difference(probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray], targets, *, multilabel: bool,
                      n_bootstrap: int = 1000, seed: int = 0, groups=None, metric_fn=None) -> dict:
    """Headline metrics of A and B (means over seeds) and of B - A with a paired 95% bootstrap CI.

    ``probs_a`` and ``probs_b`` hold one (cases, classes) array per seed, rows in the order of
    ``targets``; A and B may have different seed counts. Single-label resampling is stratified
    by class, as for every other interval in the package. ``metric_fn(probs, targets) -> {name:
    value}`` replaces the headline metrics (e.g. to add per-class recall).
    """
    a, b = _check_runs(probs_a, "model A"), _check_runs(probs_b, "model B")
    targets = np.asarray(targets)
    if a[0].shape != b[0].shape or len(targets) != len(a[0]):
        raise ValueError(f"A {a[0].shape} and B {b[0].shape} must score the same cases and classes as the "
                         f"{len(targets)} targets")
    headline = metric_fn or (multi_label_headline if multilabel else single_label_headline)
    c, n_a = a[0].shape[1], len(a)

    def difference(stacked: np.ndarray, t: np.ndarray) -> dict[str, float]:
        runs = split_runs(stacked, c)
        mean_a, mean_b = seed_mean(headline, runs[:n_a], t), seed_mean(headline, runs[n_a:], t)
        return {k: mean_b[k] - mean_a[k] for k in mean_a}

    stacked = np.concatenate([*a, *b], axis=1)
    mean_a, mean_b = seed_mean(headline, a, targets), seed_mean(headline, b, targets)
    if groups is not None and all(g is None for g in groups):
        groups = None
    ci = bootstrap_ci(difference, stacked, targets, n_resamples=n_bootstrap, seed=seed, stratify=not multilabel,
                      groups=groups)
    out = {"n": len(targets), "seeds_a": len(a), "seeds_b": len(b), "n_bootstrap": n_bootstrap,
           "ci_method": "paired " + interval_method(multilabel=multilabel, groups=groups, n_resamples=n_bootstrap),
           "metrics": {k: {"a": mean_a[k], "b": mean_b[k], "diff": mean_b[k] - mean_a[k], "ci95": list(ci[k])}
                       for k in mean_a}}
    if not multilabel and len(a) == len(b):
        # One test per seed pair (A's seed s against B's seed s), never pooled: the seeds score the
        # same cases, so summing their discordant counts would count each case several times.
        test = (lambda ca, cb: mcnemar_clustered(ca, cb, groups)) if groups is not None else mcnemar_exact
        out["mcnemar_acc"] = [test(pa.argmax(axis=1) == targets, pb.argmax(axis=1) == targets) for pa, pb in zip(a, b)]
    return out
