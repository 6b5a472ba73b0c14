from types import SimpleNamespace

import numpy as np

from hybridmednet.data.leakage import audit_leakage, summarize
from tests.conftest import SHARED_DATA, requires_shared_data


def part(ids, groups, images):
    return SimpleNamespace(ids=ids, groups=groups, images=images)


def test_audit_finds_crossing_groups_and_identical_images():
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    other = img + 1
    parts = {
        "train": part(["t1", "t2", "t3"], ["L1", "L2", "L3"], [img, other, other * 2]),
        "val": part(["v1"], ["L2"], [other * 3]),
        "test": part(["s1", "s2"], ["L1", "L9"], [other * 4, img.copy()]),
    }
    report = audit_leakage(parts)
    g = report["groups"]
    assert g["n_total"] == 4 and g["n_crossing"] == 2
    assert g["by_split_pair"] == {"train-val": 1, "train-test": 1, "val-test": 0}
    assert {e["key"] for e in g["examples"]} == {"L1", "L2"}
    assert "train:t1" in next(e for e in g["examples"] if e["key"] == "L1")["samples"]
    d = report["identical_images"]
    assert d["n_crossing"] == 1 and d["by_split_pair"]["train-test"] == 1
    assert set(d["examples"][0]["samples"]) == {"train:t1", "test:s2"}
    assert report["clean"] is False
    assert "groups in >1 split: 2 of 4" in summarize(report)


def test_clean_split_without_groups():
    rng = np.random.default_rng(0)
    parts = {s: part([f"{s}{i}" for i in range(3)], None, list(rng.integers(0, 255, (3, 4, 4, 1), dtype=np.uint8)))
             for s in ("train", "val", "test")}
    report = audit_leakage(parts)
    assert "groups" not in report and report["clean"] is True


@requires_shared_data("ham10000", "dermamnist_split.csv")
def test_official_dermamnist_split_leaks_lesions_on_ham10000():
    """The official DermaMNIST split is by image: 1006 of 7470 lesions cross splits."""
    from hybridmednet.config.loader import load_config
    from hybridmednet.data.sources import build_table
    from hybridmednet.data.splits import assign_splits, split_table

    cfg = load_config("configs/ham10000.yaml", [f"data.source.path={SHARED_DATA}/ham10000/dermamnist_split.csv"])
    table = build_table(cfg.data.source)
    parts = split_table(table, assign_splits(table, "auto", 0.1, 0.2, 0))
    assert {k: len(v) for k, v in parts.items()} == {"train": 7007, "val": 1003, "test": 2005}
    report = audit_leakage({k: part(v.ids, v.groups, None) for k, v in parts.items()})
    assert report["groups"]["n_total"] == 7470
    assert report["groups"]["n_crossing"] == 1006
