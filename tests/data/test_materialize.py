"""The decoded-image cache: reused when nothing changed; never served across skip_bad, a changed
file, an option, or a new preprocessing version."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybridmednet.data import materialize as mat
from hybridmednet.data.table import SampleTable
from hybridmednet.errors import DataError


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDMEDNET_CACHE", str(tmp_path / "cache"))
    paths = []
    for i in range(3):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (10, 10), (40 * i, 10, 200)).save(path)
        paths.append(str(path))
    return SampleTable(ids=["a", "b", "c"], class_names=["x", "y"], targets=np.array([0, 1, 0]), multilabel=False,
                       source="t", paths=paths)


def _cached(tmp_path):
    return sorted((tmp_path / "cache" / "images").glob("*.npz"))


def test_cache_is_reused_and_keyed_on_options(table, tmp_path):
    first, ok, _ = mat.materialize(table, 8, 3, "center_crop", skip_bad=False)
    assert ok.all() and first.shape == (3, 8, 8, 3) and len(_cached(tmp_path)) == 1
    again, _, _ = mat.materialize(table, 8, 3, "center_crop", skip_bad=False)
    np.testing.assert_array_equal(first, again) and len(_cached(tmp_path)) == 1
    mat.materialize(table, 8, 1, "center_crop", skip_bad=False)  # another option: another entry
    assert len(_cached(tmp_path)) == 2


def test_a_cache_written_with_skip_bad_is_never_served_to_a_strict_run(table, tmp_path):
    open(table.paths[1], "w").write("not a png")
    images, ok, skipped = mat.materialize(table, 8, 3, "center_crop", skip_bad=True)
    assert ok.tolist() == [True, False, True] and skipped[0][0] == "b"
    with pytest.raises(DataError, match="im1.png"):  # strict: the bad file is an error, not a cached skip
        mat.materialize(table, 8, 3, "center_crop", skip_bad=False)


def test_a_new_preprocessing_version_or_a_changed_file_misses_the_cache(table, tmp_path, monkeypatch):
    before, _, _ = mat.materialize(table, 8, 3, "center_crop", skip_bad=False)
    monkeypatch.setattr(mat, "PREPROCESS_VERSION", mat.PREPROCESS_VERSION + 1)
    mat.materialize(table, 8, 3, "center_crop", skip_bad=False)
    assert len(_cached(tmp_path)) == 2
    Image.new("RGB", (12, 12), (255, 255, 255)).save(table.paths[0])  # other size: another key
    after, _, _ = mat.materialize(table, 8, 3, "center_crop", skip_bad=False)
    assert not np.array_equal(before[0], after[0])
