"""Percentile-bootstrap confidence intervals for headline metrics.

Medical test sets are small and imbalanced, so a point estimate alone overstates certainty.
With ``stratify=True`` (single-label) each class is resampled within itself: every resample keeps
the test set's class counts, so per-class quantities such as one-vs-rest AUC stay defined and the
interval reflects sampling noise within classes rather than noise in the class mix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _sampler(targets: np.ndarray, rng: np.random.Generator, stratify: bool) -> Callable:
    """Index drawer: within-class draws keep every class's count (so per-class AUC exists)."""
    n = len(targets)
    if stratify and targets.ndim == 1 and np.issubdtype(targets.dtype, np.integer):
        groups = [np.flatnonzero(targets == c) for c in np.unique(targets)]
        return lambda: np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
    return lambda: rng.integers(0, n, n)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    probs,
    targets,
    *,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, tuple[float, float]]:
    """name -> (lo, hi) at the alpha/2 and 1-alpha/2 percentiles of ``metric_fn`` over resamples.

    Resamples where a metric is NaN (undefined on that draw) are ignored for that metric; a
    metric that is NaN on every draw gets (nan, nan).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    probs, targets = np.asarray(probs), np.asarray(targets)
    draw = _sampler(targets, np.random.default_rng(seed), stratify)
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
