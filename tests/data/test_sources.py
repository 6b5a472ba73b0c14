"""Each reader on tiny files the tests write: npz (incl. download + MD5), folders, CSV."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridmednet.config.schema import CsvSource, FolderSource, MedMNISTSource
from hybridmednet.data.sources import build_table
from hybridmednet.errors import DataError


def medmnist(root, flag="tinymnist", **kw):
    return MedMNISTSource(kind="medmnist", root=str(root), flag=flag, **kw)


# ----------------------------------------------------------------------------- npz
def test_npz_reads_official_layout(tiny_npz):
    table = build_table(medmnist(tiny_npz.parent, download=False))
    assert len(table) == 180 and table.images.shape == (180, 16, 16, 3)
    assert list(np.unique(table.splits)) == ["test", "train", "val"]
    assert table.class_names == ["0", "1", "2"] and not table.multilabel
    record = table.record(0, channels=1)
    assert record.image.shape == (16, 16, 1) and record.image.dtype == np.uint8 and record.split == "train"


def test_npz_size_suffix_and_missing_file(tmp_path, tiny_npz):
    (tmp_path / "tinymnist_64.npz").write_bytes(tiny_npz.read_bytes())
    assert len(build_table(medmnist(tmp_path, size=64, download=False))) == 180
    with pytest.raises(DataError, match="tinymnist_128.npz: file not found"):
        build_table(medmnist(tmp_path, size=128, download=False))


def test_npz_without_standard_keys(tmp_path):
    np.savez(tmp_path / "tinymnist.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"tinymnist.npz: missing key\(s\) train_images, train_labels \(found: images\)"):
        build_table(medmnist(tmp_path, download=False))


def test_npz_not_an_npz(tmp_path):
    (tmp_path / "tinymnist.npz").write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        build_table(medmnist(tmp_path, download=False))


def test_npz_multilabel_and_3d(tmp_path):
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.savez(tmp_path / "volmnist3d.npz", **arrays)
    table = build_table(medmnist(tmp_path, flag="volmnist3d", download=False))
    assert table.multilabel and table.targets.shape == (12, 3)
    assert table.images.shape == (12, 8, 8, 8, 1)  # volumes, read natively or as 2.5D by materialize
    from hybridmednet.data.volumes import orthogonal_slices

    slices = orthogonal_slices(table.images)  # the 2.5D view: three orthogonal central slices
    vol = arrays["train_images"][0]
    np.testing.assert_array_equal(slices[0, :, :, 0], vol[4])
    np.testing.assert_array_equal(slices[0, :, :, 2], vol[:, :, 4])


def test_npz_download_from_file_url_checks_md5(tmp_path, tiny_npz):
    md5 = hashlib.md5(tiny_npz.read_bytes()).hexdigest()
    root = tmp_path / "cache"
    table = build_table(medmnist(root, url=tiny_npz.as_uri(), md5=md5))
    assert len(table) == 180 and (root / "tinymnist.npz").exists()
    other = tmp_path / "other"
    with pytest.raises(DataError, match="does not match the expected"):
        build_table(medmnist(other, url=tiny_npz.as_uri(), md5="0" * 32))
    assert not any(other.glob("*"))  # the corrupt download was removed
    with pytest.raises(DataError, match="download from .* failed"):
        build_table(medmnist(tmp_path / "x", url=(tmp_path / "absent.npz").as_uri()))


def test_npz_download_from_local_http_server(tmp_path, tiny_npz):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny_npz.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tinymnist.npz"
        md5 = hashlib.md5(tiny_npz.read_bytes()).hexdigest()
        table = build_table(medmnist(tmp_path / "dl", url=url, md5=md5))
        assert len(table) == 180
    finally:
        server.shutdown()


# ----------------------------------------------------------------------------- folders
def test_folder_with_split_level_and_groups(image_folder):
    table = build_table(FolderSource(kind="folder", root=str(image_folder), group_regex=r"^(patient\d+)_"))
    assert table.class_names == ["a", "b"] and len(table) == 24
    assert set(table.splits) == {"train", "test"}
    assert table.groups[0].startswith("patient")
    assert table.record(0, 3).image.shape == (12, 12, 3)


def test_folder_without_split_level(tmp_path):
    for cls in ("x", "y"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (5, 5), 40 * i).save(tmp_path / cls / f"{i}.png")
    table = build_table(FolderSource(kind="folder", root=str(tmp_path)))
    assert table.splits is None and table.class_names == ["x", "y"] and list(table.targets) == [0, 0, 0, 1, 1, 1]


def test_folder_empty_class_and_missing_root(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (5, 5)).save(tmp_path / "a" / "1.png")
    with pytest.raises(DataError, match="b: class folder has no images"):
        build_table(FolderSource(kind="folder", root=str(tmp_path)))
    with pytest.raises(DataError, match="image folder not found"):
        build_table(FolderSource(kind="folder", root=str(tmp_path / "nope")))


# ----------------------------------------------------------------------------- CSV
def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def csv_images(tmp_path):
    for i in range(4):
        Image.new("RGB", (6, 6), (60 * i, 0, 0)).save(tmp_path / f"im{i}.png")
    return tmp_path


def test_csv_single_label_with_group_split(csv_images):
    path = write_csv(csv_images / "m.csv", "path,label,note,patient,split\n"
                     "im0.png,cat,old,p1,train\nim1.png,dog,,p1,val\nim2.png,cat,young,p2,Test\nim3.png,dog,x,p3,train\n")
    table = build_table(CsvSource(kind="csv", path=str(path), group_column="patient", split_column="split"))
    assert table.class_names == ["cat", "dog"] and list(table.targets) == [0, 1, 0, 1]
    assert table.groups[:2] == ["p1", "p1"]
    assert list(table.splits) == ["train", "val", "test", "train"]
    record = table.record(2, 3)
    assert record.image[0, 0].tolist() == [120, 0, 0] and record.group == "p2"


def test_csv_multilabel_separator_and_columns(csv_images):
    sep = write_csv(csv_images / "a.csv", "path,findings\nim0.png,mass|nodule\nim1.png,\nim2.png,nodule\n")
    table = build_table(CsvSource(kind="csv", path=str(sep), label_column="findings", label_separator="|"))
    assert table.multilabel and table.class_names == ["mass", "nodule"]
    assert table.targets.tolist() == [[1, 1], [0, 0], [0, 1]]
    cols = write_csv(csv_images / "b.csv", "path,mass,nodule\nim0.png,1,0\nim1.png,0,1\n")
    table = build_table(CsvSource(kind="csv", path=str(cols), label_columns=["mass", "nodule"]))
    assert table.targets.tolist() == [[1, 0], [0, 1]]


def test_csv_path_template(csv_images):
    path = write_csv(csv_images / "t.csv", "image_id,dx\nim0,a\nim3,b\n")
    table = build_table(CsvSource(kind="csv", path=str(path), path_template="{image_id}.png", label_column="dx",
                                  id_column="image_id"))
    assert table.paths[1].endswith("im3.png") and table.ids == ["im0", "im3"]


@pytest.mark.parametrize("text, kwargs, message", [
    ("file,label\nim0.png,a\n", {}, r"m.csv: no column\(s\) \['path'\]; the CSV has: file, label"),
    ("path,label\nim0.png,a\nim1.png,zebra\n", {"class_names": ["a", "b"]}, r"m.csv: row 3: label 'zebra'"),
    ("path,mass\nim0.png,1\nim1.png,2\n", {"label_columns": ["mass"]}, r"row 3: column 'mass' must be 0 or 1"),
    ("path,label,split\nim0.png,a,train\nim1.png,a,holdout\n", {"split_column": "split"}, r"row 3: split 'holdout'"),
    ("path,label\n", {}, "the CSV has no rows"),
    ("path,label\nim0.png,a\nim1.png,\nim2.png,\n", {}, r"row 3: empty label in column 'label' \(2 row\(s\) in all\)"),
    ("path,label\nim0.png,a\nim1.png,b\nim0.png,b\n", {}, r"row 4 lists .*im0.png again \(first at row 2\) with another label"),
    ("image_id,label\nim0,a\n", {"path_template": "{image}.png"}, r"path_template .* names column 'image'"),
])
def test_csv_errors_name_file_row_and_column(csv_images, text, kwargs, message):
    path = write_csv(csv_images / "m.csv", text)
    with pytest.raises(DataError, match=message):
        build_table(CsvSource(kind="csv", path=str(path), **kwargs))


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="CSV file not found"):
        build_table(CsvSource(kind="csv", path=str(tmp_path / "none.csv")))


def test_dicom_and_nifti_through_a_csv(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    nib = pytest.importorskip("nibabel")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype=np.uint16).reshape(4, 4).tobytes()
    pydicom.dcmwrite(tmp_path / "a.dcm", ds, enforce_file_format=True)
    nib.save(nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4)), tmp_path / "b.nii.gz")
    path = write_csv(tmp_path / "m.csv", "path,label\na.dcm,x\nb.nii.gz,y\n")
    table = build_table(CsvSource(kind="csv", path=str(path)))
    dicom, nifti = table.record(0, 1).image, table.record(1, 3).image
    assert dicom.shape == (4, 4, 1) and dicom.min() == 0 and dicom.max() == 255
    assert nifti.shape == (4, 4, 3) and nifti.max() == 255


def test_csv_repeating_an_image_is_counted_and_audited(csv_images, caplog):
    from hybridmednet.config.schema import DataConfig
    from hybridmednet.data.pipeline import prepare_data

    splits = ["train", "train", "val", "val", "test", "test"]
    rows = "".join(f"im{i % 4}.png,{'ab'[i % 2]},{split}\n" for i, split in enumerate(splits))
    path = write_csv(csv_images / "r.csv", "path,label,split\n" + rows + "im0.png,a,train\n")
    cfg = DataConfig.model_validate({"source": {"kind": "csv", "path": str(path), "split_column": "split"},
                                     "image_size": 8, "cache": False})
    with caplog.at_level("WARNING", logger="hybridmednet"):
        data = prepare_data(cfg)
    assert "3 row(s) list an image already listed (e.g. row 6 repeats row 2)" in caplog.text
    images = data.audit["identical_images"]
    assert images["n_crossing"] == 2 and images["n_repeated_within_a_split"] == 1  # im0, im1 in train and test


def test_a_single_class_is_refused_at_load(csv_images):
    from hybridmednet.config.schema import DataConfig
    from hybridmednet.data.pipeline import prepare_data

    path = write_csv(csv_images / "one.csv", "path,label\n" + "".join(f"im{i}.png,cat\n" for i in range(4)))
    cfg = DataConfig.model_validate({"source": {"kind": "csv", "path": str(path)}, "image_size": 8, "cache": False})
    with pytest.raises(DataError, match=r"only one class \(cat\) found; a classifier needs at least two"):
        prepare_data(cfg)
