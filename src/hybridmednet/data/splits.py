"""Train/val/test assignment: the file's own split where it has one, otherwise a stratified
split that keeps every patient/lesion (group id) inside one split.

``strategy="auto"`` keeps the source's split and only fills what is missing (a source with
train and test but no val gets val carved from train). ``strategy="random"`` ignores the file's
split and re-splits everything, e.g. to get a lesion-grouped HAM10000 split.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from hybridmednet.data.table import SPLITS, SampleTable


def _strata(table: SampleTable) -> np.ndarray:
    """Single-label: the class. Multi-label: the rarest positive label of each row (or 'none')."""
    if not table.multilabel:
        return table.targets
    counts = table.targets.sum(axis=0)
    rarity = np.where(table.targets > 0, counts[None, :], np.inf)
    return np.where(table.targets.any(axis=1), rarity.argmin(axis=1), -1)


def holdout(index: np.ndarray, table: SampleTable, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (keep, held_out) with about ``fraction`` held out, stratified by
    class and grouped by ``table.groups`` when present."""
    n_folds = max(2, int(round(1.0 / fraction)))
    strata = _strata(table)[index]
    # A stratum smaller than n_folds cannot be stratified: sklearn warns and still splits.
    groups = None
    if table.groups is not None:
        groups = np.asarray([g if g is not None else f"__row{i}" for i, g in ((i, table.groups[i]) for i in index)])
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        keep, held = next(splitter.split(np.zeros(len(index)), strata, groups))
    return index[keep], index[held]


def assign_splits(table: SampleTable, strategy: str, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Return an (N,) array of 'train' / 'val' / 'test'."""
    n = len(table)
    if strategy == "auto" and table.splits is not None:
        splits = np.asarray(table.splits, dtype=object).copy()
    else:
        splits = np.full(n, "train", dtype=object)
        _, test = holdout(np.arange(n), table, test_fraction, seed)
        splits[test] = "test"
    present = set(splits)
    if "test" not in present:
        train = np.flatnonzero(splits == "train")
        _, test = holdout(train, table, test_fraction, seed)
        splits[test] = "test"
    if "val" not in present:
        train = np.flatnonzero(splits == "train")
        # val_fraction is of the whole data set; convert it to a fraction of what is left in train.
        fraction = min(0.5, val_fraction * n / max(len(train), 1))
        _, val = holdout(train, table, fraction, seed + 1)
        splits[val] = "val"
    return splits


def split_table(table: SampleTable, splits: np.ndarray) -> dict[str, SampleTable]:
    return {name: table.subset(np.flatnonzero(splits == name)) for name in SPLITS}
