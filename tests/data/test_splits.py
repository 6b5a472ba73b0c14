import numpy as np
import pytest

from hybridmednet.data.splits import assign_splits, split_table
from hybridmednet.data.table import SampleTable


def table(n=400, n_groups=120, splits=None, seed=0):
    rng = np.random.default_rng(seed)
    groups = [f"g{rng.integers(n_groups)}" for _ in range(n)]
    # label is a function of the group, as for a lesion photographed several times
    targets = np.asarray([int(g[1:]) % 3 for g in groups], dtype=np.int64)
    return SampleTable(ids=[str(i) for i in range(n)], class_names=["a", "b", "c"], targets=targets,
                       multilabel=False, source="t", paths=["x"] * n, splits=splits, groups=groups)


def test_grouped_split_keeps_every_group_in_one_split():
    t = table()
    splits = assign_splits(t, "auto", 0.1, 0.2, seed=0)
    by_group = {}
    for g, s in zip(t.groups, splits):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    fractions = {s: np.mean(splits == s) for s in ("train", "val", "test")}
    assert 0.12 < fractions["test"] < 0.3 and 0.04 < fractions["val"] < 0.18
    overall = np.bincount(t.targets, minlength=3) / len(t.targets)
    for name in ("train", "test"):  # grouped and still stratified: class shares follow the whole set
        share = np.bincount(t.targets[splits == name], minlength=3) / np.sum(splits == name)
        assert np.abs(share - overall).max() < 0.1, (name, share, overall)


def test_split_is_stratified_and_reproducible():
    t = table(n=600, n_groups=600)
    a = assign_splits(t, "auto", 0.1, 0.2, seed=3)
    b = assign_splits(t, "auto", 0.1, 0.2, seed=3)
    assert (a == b).all()
    for k in range(3):
        share = np.mean(a[t.targets == k] == "test")
        assert 0.15 < share < 0.25


def test_file_split_is_kept_and_missing_val_is_carved_from_train():
    n = 300
    file_splits = np.asarray(["test" if i % 5 == 0 else "train" for i in range(n)], dtype=object)
    t = table(n=n, splits=file_splits)
    splits = assign_splits(t, "auto", 0.1, 0.2, seed=0)
    assert (splits[file_splits == "test"] == "test").all()
    assert set(splits[file_splits == "train"]) == {"train", "val"}
    parts = split_table(t, splits)
    assert sum(len(p) for p in parts.values()) == n


def test_random_strategy_ignores_the_file_split():
    file_splits = np.asarray(["train"] * 400, dtype=object)
    splits = assign_splits(table(splits=file_splits), "random", 0.1, 0.2, seed=0)
    assert set(splits) == {"train", "val", "test"}


def test_multilabel_strata():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 4)) < 0.2).astype(np.float32)
    t = SampleTable(ids=[str(i) for i in range(200)], class_names=list("abcd"), targets=targets, multilabel=True,
                    source="t", paths=["x"] * 200)
    splits = assign_splits(t, "auto", 0.1, 0.2, seed=0)
    assert set(splits) == {"train", "val", "test"}


@pytest.mark.parametrize("bad", [0.0, 1.0])
def test_fractions_are_validated(bad):
    from pydantic import ValidationError

    from hybridmednet.config.schema import SplitConfig

    with pytest.raises(ValidationError):
        SplitConfig(val_fraction=bad)
