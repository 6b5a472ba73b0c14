import csv

import numpy as np
import pytest
from PIL import Image

from hybridmednet.data.inputs import expand_inputs, load_inputs, write_predictions_csv
from hybridmednet.errors import DataError

PREP = {"image_size": 8, "resize": "center_crop", "channels": 3}


def test_expand_load_and_write(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    listing = tmp_path / "list.csv"
    listing.write_text("file\nimgs/0.png\n")
    paths = expand_inputs([str(folder), str(listing)], path_column="file")
    assert len(paths) == 3 and paths[2].endswith("0.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    images, kept, failed = load_inputs([*paths, str(bad)], PREP, skip_bad=True)
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8 and len(kept) == 3
    assert failed[0][0] == str(bad)
    with pytest.raises(DataError, match="bad.png"):
        load_inputs([str(bad)], PREP)
    out = tmp_path / "preds.csv"
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    write_predictions_csv(out, kept, probs, np.array([0.1, 0.7, 1.0]), ["a", "b"], False, threshold=0.5, failed=failed)
    rows = list(csv.DictReader(open(out)))
    assert [r["predicted"] for r in rows[:3]] == ["a", "b", "a"]
    assert [r["abstained"] for r in rows[:3]] == ["false", "true", "true"]
    assert rows[3]["error"] and rows[3]["prob_a"] == ""


def test_csv_without_the_path_column_names_it(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("image\nx.png\n")
    with pytest.raises(DataError, match="no column 'path'.*image"):
        expand_inputs([str(listing)])
