"""Split-conformal prediction sets from a run's probabilities: calibrated on val, a set per case
that holds the true class with probability at least 1 - alpha (for exchangeable data).

The p-values and the Mondrian (class-conditional) variant come from ``crepes`` (Boström), which
works on non-conformity scores, so it fits probabilities from our runs directly without wrapping
a model; the scores are computed here:

- ``lac`` (least ambiguous set-valued classifier, Sadinle et al. 2019): 1 - p(y). Smallest sets.
- ``aps`` (adaptive prediction sets, Romano et al. 2020): the probability mass of all classes
  ranked at or above y. Sets grow with the model's uncertainty.
- ``raps`` (Angelopoulos et al. 2021): APS plus ``lam * max(0, rank(y) + 1 - k_reg)``, which
  penalises long tails of unlikely classes.

Non-smoothed p-values (``(#{calibration scores >= s} + 1) / (n + 1)``): deterministic and
conservative. With fewer than ``1 / alpha - 1`` calibration cases no score can be excluded, so
every set is the full label set, as the guarantee requires. Mondrian sets (``mondrian=True``)
calibrate each class on its own val cases: coverage holds per class, at the price of larger sets.
"""

from __future__ import annotations

import numpy as np

METHODS = ("lac", "aps", "raps")


def nonconformity(probs: np.ndarray, method: str = "lac", *, k_reg: int = 1, lam: float = 0.01) -> np.ndarray:
    """(N, C) scores: how badly each candidate label conforms to the model's probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"conformal method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "lac":
        return 1.0 - probs
    order = np.argsort(-probs, axis=1, kind="stable")
    ranks = np.argsort(order, axis=1, kind="stable")  # 0 = most probable
    cumulative = np.take_along_axis(np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1), ranks, axis=1)
    if method == "aps":
        return cumulative
    return cumulative + lam * np.maximum(0, ranks + 1 - k_reg)


class ConformalSets:
    """Fit on validation probabilities and labels; :meth:`predict` gives boolean (N, C) sets."""

    def __init__(self, alpha: float = 0.1, method: str = "lac", *, mondrian: bool = False, k_reg: int = 1,
                 lam: float = 0.01):
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        nonconformity(np.full((1, 2), 0.5), method)  # validates the method name
        self.alpha, self.method, self.mondrian, self.k_reg, self.lam = alpha, method, mondrian, k_reg, lam
        self._classifier = None
        self.n_calibration = 0

    def _scores(self, probs):
        return nonconformity(probs, self.method, k_reg=self.k_reg, lam=self.lam)

    def fit(self, val_probs: np.ndarray, val_targets: np.ndarray) -> ConformalSets:
        val_targets = np.asarray(val_targets, dtype=np.int64)
        return self.fit_scores(self._scores(val_probs)[np.arange(len(val_targets)), val_targets], val_targets)

    def fit_scores(self, scores, targets) -> ConformalSets:
        """Calibrate from stored true-class scores (``calibration.json``): what predict uses."""
        from crepes import ConformalClassifier

        scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.int64)
        self._classifier = ConformalClassifier().fit(scores, bins=targets if self.mondrian else None)
        self.n_calibration = len(targets)
        self.calibration_scores, self.calibration_targets = scores, targets
        return self

    def p_values(self, probs: np.ndarray) -> np.ndarray:
        if self._classifier is None:
            raise RuntimeError("fit the conformal sets on validation predictions first")
        scores = self._scores(probs)
        if not self.mondrian:
            return self._classifier.predict_p(scores, smoothing=False)
        # each candidate label against its own class's calibration scores
        return np.stack([self._label_p_values(scores[:, c], np.full(len(scores), c)) for c in range(scores.shape[1])], axis=1)

    def _label_p_values(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """p-value of one candidate label per case (``scores[i]`` is label ``labels[i]``'s score)."""
        if not self.mondrian:
            return self._classifier.predict_p(scores[:, None], smoothing=False)[:, 0]
        out = np.ones(len(scores))  # a class without val cases cannot be excluded
        for c in np.intersect1d(np.unique(labels), self.calibration_targets):
            rows = labels == c
            out[rows] = self._classifier.predict_p(scores[rows, None], bins=np.full(rows.sum(), c), smoothing=False)[:, 0]
        return out

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """Boolean (N, C): label c is in case i's set when its p-value exceeds alpha."""
        return self.p_values(probs) > self.alpha

    def covers(self, scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Boolean (N,): whether each case's set holds its true class, from the true-class scores
        alone (what :meth:`predict` decides for that one label, scoring one column instead of C)."""
        return self._label_p_values(np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.int64)) > self.alpha


def resplit_coverage(val_probs, val_targets, test_probs, test_targets, alpha: float, method: str, *,
                     mondrian: bool = False, n_resplits: int = 100, seed: int = 0) -> dict:
    """Coverage the same method reaches when val and test are pooled and split again at random
    (same sizes), ``n_resplits`` times: the spread an exchangeable calibration set gives.

    Why: a test coverage below 1 - alpha is either chance (a finite calibration set) or a
    difference between val and test (the checkpoint and temperature were chosen on val; a shift).
    Test coverage inside this range is chance; below it, val and test differ. A diagnostic only:
    nothing is chosen from it.
    """
    probs = np.concatenate([np.asarray(val_probs, dtype=np.float64), np.asarray(test_probs, dtype=np.float64)])
    targets = np.concatenate([np.asarray(val_targets), np.asarray(test_targets)]).astype(np.int64)
    true_scores = nonconformity(probs, method)[np.arange(len(targets)), targets]
    n_cal, rng, coverage = len(val_targets), np.random.default_rng(seed), []
    for _ in range(n_resplits):
        order = rng.permutation(len(targets))
        cal, held = order[:n_cal], order[n_cal:]
        fitted = ConformalSets(alpha, method, mondrian=mondrian).fit_scores(true_scores[cal], targets[cal])
        coverage.append(float(fitted.covers(true_scores[held], targets[held]).mean()))
    return {"mean": float(np.mean(coverage)), "range95": [float(np.percentile(coverage, 2.5)), float(np.percentile(coverage, 97.5))],
            "n_resplits": n_resplits, "seed": seed}


def set_coverage(sets: np.ndarray, targets: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Empirical coverage overall and per class, and the mean set size."""
    sets, targets = np.asarray(sets, dtype=bool), np.asarray(targets, dtype=np.int64)
    covered = sets[np.arange(len(targets)), targets]
    names = class_names or [str(c) for c in range(sets.shape[1])]
    per_class = {names[c]: float(covered[targets == c].mean()) for c in range(sets.shape[1]) if np.any(targets == c)}
    return {"coverage": float(covered.mean()), "per_class": per_class, "mean_set_size": float(sets.sum(axis=1).mean()),
            "empty_sets": int((sets.sum(axis=1) == 0).sum()), "n": int(len(targets))}
