"""Percentile-bootstrap confidence intervals for headline metrics.

Medical test sets are small and imbalanced, so a point estimate alone overstates certainty.
With ``stratify=True`` (single-label) each class is resampled within itself: every resample keeps
the test set's class counts, so per-class quantities such as one-vs-rest AUC stay defined and the
interval reflects sampling noise within classes rather than noise in the class mix.

With ``groups`` (a patient or lesion id per case) the unit of resampling is the group, not the
image (a cluster bootstrap): images of one lesion are not independent evidence, so resampling
them one by one makes intervals too narrow. Groups are stratified by their (majority) class, so
every resample keeps each class's number of groups. Cases without a group id are their own group.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _sampler(targets: np.ndarray, rng: np.random.Generator, stratify: bool, groups=None) -> Callable:
    """Index drawer: within-class draws keep every class's count (so per-class AUC exists); with
    ``groups``, whole groups are drawn (within their class when stratified)."""
    n = len(targets)
    single = targets.ndim == 1 and np.issubdtype(targets.dtype, np.integer)
    if groups is not None:
        members = cluster_members(groups)
        if stratify and single:
            by_class: dict[int, list[np.ndarray]] = {}
            for m in members:
                by_class.setdefault(int(np.bincount(targets[m]).argmax()), []).append(m)
            strata = list(by_class.values())
        else:
            strata = [members]

        def draw() -> np.ndarray:
            picks = []
            for stratum in strata:
                picks += [stratum[i] for i in rng.integers(0, len(stratum), len(stratum))]
            return np.concatenate(picks)

        return draw
    if stratify and single:
        strata = [np.flatnonzero(targets == c) for c in np.unique(targets)]
        return lambda: np.concatenate([g[rng.integers(0, len(g), len(g))] for g in strata])
    return lambda: rng.integers(0, n, n)


def cluster_members(groups) -> list[np.ndarray]:
    """Indices of each group's cases, in order of first appearance; ``None`` ids are singletons."""
    index: dict = {}
    members: list[list[int]] = []
    for i, g in enumerate(groups):
        if g is None or (isinstance(g, float) and np.isnan(g)):
            members.append([i])
            continue
        if g not in index:
            index[g] = len(members)
            members.append([])
        members[index[g]].append(i)
    return [np.asarray(m) for m in members]


def interval_method(*, multilabel: bool, groups=None, n_resamples: int, unit: str = "cases") -> str:
    """The sentence every results file stores beside its intervals."""
    if groups is not None:
        n_groups = len(cluster_members(groups))
        text = f"cluster percentile bootstrap over {n_groups} groups (patient/lesion ids), {n_resamples} resamples"
    else:
        text = f"percentile bootstrap over {unit}, {n_resamples} resamples"
    return text + ("" if multilabel else ", stratified by class")


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    probs,
    targets,
    *,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: bool = True,
    groups=None,
) -> dict[str, tuple[float, float]]:
    """name -> (lo, hi) at the alpha/2 and 1-alpha/2 percentiles of ``metric_fn`` over resamples.

    ``groups``: one patient/lesion id per case (``None`` = its own group); resample groups.

    Resamples where a metric is NaN (undefined on that draw) are ignored for that metric; a
    metric that is NaN on every draw gets (nan, nan).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    probs, targets = np.asarray(probs), np.asarray(targets)
    if groups is not None and len(groups) != len(targets):
        raise ValueError(f"groups has {len(groups)} ids for {len(targets)} cases")
    draw = _sampler(targets, np.random.default_rng(seed), stratify, groups)
    values: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        idx = draw()
        for name, v in metric_fn(probs[idx], targets[idx]).items():
            values.setdefault(name, []).append(float(v))
    out = {}
    for name, vals in values.items():
        arr = np.asarray(vals)
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(arr, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            out[name] = (float(lo), float(hi))
    return out


def seed_mean(metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]], runs, targets) -> dict[str, float]:
    """Each metric averaged over seeds: ``metric_fn`` on every run's (N, C) probabilities."""
    rows = [metric_fn(r, targets) for r in runs]
    return {name: float(np.mean([r[name] for r in rows])) for name in rows[0]}


def split_runs(stacked: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """(N, k * C) seeds side by side (so one bootstrap draw resamples them together) -> k (N, C) arrays."""
    return [stacked[:, k * n_classes:(k + 1) * n_classes] for k in range(stacked.shape[1] // n_classes)]


def seed_mean_ci(metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]], runs, targets, *,
                 n_resamples: int = 1000, seed: int = 0, stratify: bool = True, groups=None) -> dict:
    """The interval of a metric's mean over seeds: cases (or groups) are resampled once per draw and
    every seed's predictions are scored on the same draw, so the interval covers test-set sampling
    of the seed-averaged figure (the point a multi-seed row reports), not one seed's.

    ``runs``: one (N, C) probability array per seed, rows in the order of ``targets``. Returns
    ``{"point": {name: mean over seeds}, "ci95": {name: [lo, hi]}, "seed_std": {name: std (ddof 1)}}``.
    """
    runs = [np.asarray(r, dtype=np.float64) for r in runs]
    c = runs[0].shape[1]
    stacked = np.concatenate(runs, axis=1)

    per_seed = [metric_fn(r, np.asarray(targets)) for r in runs]
    point = seed_mean(metric_fn, runs, np.asarray(targets))
    std = {name: float(np.std([r[name] for r in per_seed], ddof=1)) if len(runs) > 1 else 0.0 for name in per_seed[0]}
    ci = bootstrap_ci(lambda p, t: seed_mean(metric_fn, split_runs(p, c), t), stacked, targets, n_resamples=n_resamples, seed=seed, stratify=stratify,
                      groups=groups)
    return {"point": point, "ci95": {k: list(v) for k, v in ci.items()}, "seed_std": std}