"""The whole data path: source -> split -> decode/resize (cached) -> audit, with --skip-bad."""

import numpy as np
import pytest
from PIL import Image

from hybridmednet.config.loader import load_config
from hybridmednet.data.pipeline import prepare_data
from hybridmednet.errors import ConfigError, DataError
from tests.conftest import SHARED_DATA, requires_shared_data, tiny_config


def folder_cfg(root, *overrides):
    raw = {"name": "f", "data": {"source": {"kind": "folder", "root": str(root), "group_regex": r"^(patient\d+)_"},
                                 "image_size": 8, "channels": 1}}
    return load_config(raw=raw, overrides=list(overrides)).data


def test_folder_pipeline_resizes_splits_and_audits(image_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDMEDNET_CACHE", str(tmp_path / "cache"))
    data = prepare_data(folder_cfg(image_folder))
    assert {k: v.images.shape[1:] for k, v in data.splits.items()} == {s: (8, 8, 1) for s in ("train", "val", "test")}
    assert sum(len(v) for v in data.splits.values()) == 24
    assert "groups" in data.audit
    assert list((tmp_path / "cache" / "images").glob("*.npz"))  # decoded once, cached
    again = prepare_data(folder_cfg(image_folder))
    assert (again.splits["test"].images == data.splits["test"].images).all()


def test_corrupt_image_fails_or_is_skipped(image_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDMEDNET_CACHE", str(tmp_path / "cache"))
    bad = image_folder / "train" / "a" / "patient99_broken.png"
    good = image_folder / "train" / "a" / "patient0_img0.png"
    if not good.exists():
        good = next((image_folder / "train" / "a").glob("*.png"))
    bad.write_bytes(good.read_bytes()[:40])  # truncated PNG
    with pytest.raises(DataError, match="patient99_broken.png"):
        prepare_data(folder_cfg(image_folder))
    data = prepare_data(folder_cfg(image_folder, "data.skip_bad=true"))
    assert len(data.skipped) == 1 and "patient99_broken.png" in data.skipped[0][0] + data.skipped[0][1]
    assert sum(len(v) for v in data.splits.values()) == 24


def test_missing_file_in_csv_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDMEDNET_CACHE", str(tmp_path / "cache"))
    for i in range(6):
        Image.new("L", (4, 4), i * 30).save(tmp_path / f"{i}.png")
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(6)) + "gone.png,a\n")
    raw = {"name": "c", "data": {"source": {"kind": "csv", "path": str(tmp_path / "m.csv")}, "image_size": 8, "channels": 1,
                                 "split": {"val_fraction": 0.3, "test_fraction": 0.3}}}
    with pytest.raises(DataError, match="gone.png: file not found"):
        prepare_data(load_config(raw=raw).data)


def test_class_without_training_images_is_an_error(tmp_path, tiny_npz):
    import numpy as np

    with np.load(tiny_npz) as d:
        arrays = dict(d)
    keep = arrays["train_labels"][:, 0] != 2
    arrays["train_images"], arrays["train_labels"] = arrays["train_images"][keep], arrays["train_labels"][keep]
    np.savez(tmp_path / "gapmnist.npz", **arrays)
    raw = {"name": "g", "data": {"source": {"kind": "medmnist", "root": str(tmp_path), "flag": "gapmnist", "download": False},
                                 "image_size": 16}}
    with pytest.raises(DataError, match=r"class\(es\) \['2'\] have no training images"):
        prepare_data(load_config(raw=raw).data)


def test_data_classes_keeps_and_relabels_the_chosen_classes(tiny_npz):
    import numpy as np

    raw = {"name": "k", "data": {"source": {"kind": "medmnist", "root": str(tiny_npz.parent), "flag": "tinymnist",
                                            "download": False}, "image_size": 16, "cache": False}}
    full = prepare_data(load_config(raw=raw).data)
    data = prepare_data(load_config(raw=raw, overrides=["data.classes=['2', '0']"]).data)
    assert data.class_names == ["2", "0"]
    for split, part in data.splits.items():
        kept = np.isin(full.splits[split].targets, [0, 2])
        assert part.ids == [i for i, k in zip(full.splits[split].ids, kept) if k]
        assert (part.targets == np.where(full.splits[split].targets[kept] == 2, 0, 1)).all()
    with pytest.raises(DataError, match=r"data.classes \['7'\] are not classes of the source; it has: 0, 1, 2"):
        prepare_data(load_config(raw=raw, overrides=["data.classes=['0', '7']"]).data)
    with pytest.raises(DataError, match="names a class twice"):
        prepare_data(load_config(raw=raw, overrides=["data.classes=['0', '0']"]).data)


@requires_shared_data("medmnist", "dermamnist.npz")
def test_dermamnist_official_split():
    cfg = load_config("configs/dermamnist.yaml", [f"data.source.root={SHARED_DATA}/medmnist"])
    data = prepare_data(cfg.data)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 7007, "val": 1003, "test": 2005}
    assert data.class_names[4] == "mel" and data.splits["train"].images.shape[1:] == (28, 28, 3)
    # lesion ids through the split mapping (data.groups): the official split shares lesions
    assert len(set(data.splits["test"].groups)) == 1868 and None not in data.splits["test"].groups
    assert data.audit["groups"]["by_split_pair"] == {"train-val": 332, "train-test": 641, "val-test": 113}


@requires_shared_data("chest_xray", "train")
def test_chest_xray_folder_groups_patients():
    from hybridmednet.data.sources import build_table
    from hybridmednet.data.splits import assign_splits

    cfg = load_config("configs/chest_xray.yaml", [f"data.source.root={SHARED_DATA}/chest_xray"])
    table = build_table(cfg.data.source)
    assert len(table) == 5216 + 624 and table.class_names == ["NORMAL", "PNEUMONIA"]
    assert all(g is not None for g in table.groups)
    splits = assign_splits(table, "auto", 0.1, 0.2, 0)
    assert (splits[table.splits == "test"] == "test").all()
    val_groups = {g for g, s in zip(table.groups, splits) if s == "val"}
    train_groups = {g for g, s in zip(table.groups, splits) if s == "train"}
    assert val_groups and not (val_groups & train_groups)


def _lesion_tables(npz, tmp_path, shared_lesion: bool = True):
    """DermaMNIST-style mapping (split, index -> image_id) and a metadata table (image_id ->
    lesion_id): two images per lesion, and (``shared_lesion``) one lesion in both train and test."""
    with np.load(npz) as arrays:
        ids = [(s, i) for s in ("train", "val", "test") for i in range(len(arrays[f"{s}_labels"]))]
    mapping = ["split,index,image_id"] + [f"{s},{i},IMG_{s}_{i}" for s, i in ids]
    lesions = {f"IMG_{s}_{i}": f"L_{s}_{i // 2}" for s, i in ids}
    if shared_lesion:
        lesions["IMG_test_0"] = "L_train_0"
    meta = ["image_id,lesion_id"] + [f"{k},{v}" for k, v in lesions.items()]
    (tmp_path / "split.csv").write_text("\n".join(mapping) + "\n")
    (tmp_path / "meta.csv").write_text("\n".join(meta) + "\n")
    return {"path": str(tmp_path / "split.csv"), "id_template": "{split}/{index}",
            "join_path": str(tmp_path / "meta.csv"), "join_on": "image_id", "column": "lesion_id"}


def test_data_groups_give_an_npz_lesion_ids_for_audit_and_intervals(tiny_npz, tmp_path):

    raw = tiny_config(tiny_npz.parent, tmp_path / "runs")
    raw["data"]["groups"] = _lesion_tables(tiny_npz, tmp_path)
    data = prepare_data(load_config(raw=raw).data)
    test = data.splits["test"]
    assert test.groups[:3] == ["L_train_0", "L_test_0", "L_test_1"]
    assert data.audit["groups"]["n_crossing"] == 1 and data.audit["groups"]["by_split_pair"]["train-test"] == 1
    assert not data.audit["clean"]


def test_data_groups_errors_name_the_key(tiny_npz, image_folder, tmp_path):

    raw = tiny_config(tiny_npz.parent, tmp_path / "runs")
    raw["data"]["groups"] = _lesion_tables(tiny_npz, tmp_path) | {"column": "patient"}
    with pytest.raises(DataError, match=r"no column\(s\) \['patient'\]"):
        prepare_data(load_config(raw=raw).data)
    raw["data"]["groups"] = _lesion_tables(tiny_npz, tmp_path) | {"id_template": "{image_id}"}
    with pytest.raises(DataError, match="data.groups.id_template"):
        prepare_data(load_config(raw=raw).data)
    # an npz downloaded without the HAM10000 tables: the error names the file, the key and the way out
    raw["data"]["groups"] = _lesion_tables(tiny_npz, tmp_path) | {"join_path": str(tmp_path / "absent.csv")}
    with pytest.raises(DataError, match=r"absent\.csv: metadata CSV not found; fix data\.groups\.join_path, "
                                        r"or go without the table \(--set data\.groups=null\)"):
        prepare_data(load_config(raw=raw).data)
    folder = folder_cfg(image_folder).model_dump()
    folder["groups"] = _lesion_tables(tiny_npz, tmp_path)
    with pytest.raises(ConfigError, match="already gives group ids"):
        prepare_data(load_config(raw={"name": "f", "data": folder}).data)
