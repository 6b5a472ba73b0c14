"""Atomic writes keep the old file on failure; JSON is strict (NaN -> null)."""

import json
import math

import numpy as np
import pytest

from hybridmednet.utils.io import atomic_write, atomic_write_json


def test_json_writes_null_for_nan_and_infinity_and_plain_numbers_for_numpy(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"auc": float("nan"), "ci": [math.inf, 0.5], "arr": np.array([1.5, np.nan]),
                             "n": np.int64(3), 7: "int key"})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "ci": [None, 0.5], "arr": [1.5, None], "n": 3, "7": "int key"}


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
