"""Volumes: NIfTI and DICOM-series readers, the grid, intensity windows, MedMNIST 3D and the 2.5D view."""

import numpy as np
import pytest

from hybridmednet.config.schema import DataConfig
from hybridmednet.data.pipeline import prepare_data
from hybridmednet.data.volumes import CT_WINDOWS, load_volume, orthogonal_slices, read_dicom_series, read_nifti, to_grid, to_uint8
from hybridmednet.errors import DataError
from tests.data.volume_files import sphere, write_dicom_series, write_nifti

OPTIONS = {"interpolation": "linear", "intensity": "minmax", "window": None}


def test_nifti_is_read_in_zyx_order_with_its_spacing(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    data, spacing = read_nifti(write_nifti(tmp_path / "v.nii.gz", volume, (3.0, 2.0, 1.0)))
    np.testing.assert_array_equal(data, volume)
    assert spacing == (3.0, 2.0, 1.0)


def test_nifti_in_another_orientation_reads_the_same(tmp_path):
    import nibabel as nib

    volume = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    write_nifti(tmp_path / "ras.nii", volume)
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # x stored right-to-left: LAS
    flipped[0, 3] = 5.0
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)[::-1]), flipped), str(tmp_path / "las.nii"))
    np.testing.assert_allclose(read_nifti(tmp_path / "las.nii")[0], read_nifti(tmp_path / "ras.nii")[0])


def test_a_4d_nifti_is_refused(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(tmp_path / "t.nii"))
    with pytest.raises(DataError, match="t.nii: NIfTI image has shape .* a volume needs 3 dimensions"):
        read_nifti(tmp_path / "t.nii")


def test_dicom_series_is_ordered_by_position_not_file_name(tmp_path):
    hu = np.stack([np.full((6, 6), 100.0 * z - 500) for z in range(5)])
    ordered = read_dicom_series(write_dicom_series(tmp_path / "a", hu))
    shuffled = read_dicom_series(write_dicom_series(tmp_path / "b", hu, names=["e.dcm", "b.dcm", "d.dcm", "a.dcm", "c.dcm"]))
    np.testing.assert_allclose(ordered[0], hu)  # stored values mapped back to HU by slope / intercept
    np.testing.assert_allclose(shuffled[0], hu)
    assert ordered[1] == pytest.approx((2.0, 0.8, 0.8))


def test_a_missing_slice_is_an_error_naming_the_series(tmp_path):
    folder = write_dicom_series(tmp_path / "series7", np.zeros((6, 4, 4)))
    (folder / "slice003.dcm").unlink()
    with pytest.raises(DataError, match=r"series7: slice\(s\) missing in the series between position 4.00 mm "
                                        r"\(slice002.dcm\) and 8.00 mm \(slice004.dcm\)"):
        read_dicom_series(folder)


def test_a_doubled_slice_is_an_error(tmp_path):
    import shutil

    folder = write_dicom_series(tmp_path / "s", np.zeros((4, 4, 4)))
    shutil.copy(folder / "slice001.dcm", folder / "copy.dcm")
    with pytest.raises(DataError, match="two slices at one position"):
        read_dicom_series(folder)


def test_grid_center_crop_is_isotropic_in_mm():
    volume = np.zeros((10, 40, 40), np.float32)  # 10 slices of 4 mm, 40 x 40 at 1 mm: 40 mm cube
    assert to_grid(volume, (4.0, 1.0, 1.0), 16, "center_crop", "linear").shape == (16, 16, 16)
    wide = np.zeros((10, 60, 40), np.float32)  # 60 mm in y: cropped to 40 mm, the shortest extent
    out = to_grid(wide + np.arange(60)[None, :, None], (4.0, 1.0, 1.0), 10, "center_crop", "nearest")
    assert out.shape == (10, 10, 10) and 10 <= out.min() and out.max() < 50


def test_ct_window_maps_hu_linearly():
    level, width = CT_WINDOWS["abdomen"]
    hu = np.array([level - width / 2 - 100, level, level + width / 2 + 5], np.float32)
    np.testing.assert_array_equal(to_uint8(hu, "percentile", "abdomen"), [0, 128, 255])
    np.testing.assert_array_equal(to_uint8(hu, "percentile", [level, width]), [0, 128, 255])


def test_load_volume_gives_the_model_grid(tmp_path):
    path = write_nifti(tmp_path / "s.nii.gz", sphere(20, 6, 800.0), (2.0, 1.0, 1.0))
    out = load_volume(path, 16, "squash", OPTIONS)
    assert out.shape == (16, 16, 16, 1) and out.dtype == np.uint8 and out.max() == 255 and out.min() == 0
    with pytest.raises(DataError, match="not a volume"):
        load_volume(tmp_path / "x.png", 16, "squash", OPTIONS)


def _npz3d(path, n=(6, 3, 3), size=28):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(count).reshape(-1, 1) % 2
    np.savez(path, **arrays)
    return arrays


def _data(root, **kw):
    return DataConfig.model_validate({"source": {"kind": "medmnist", "flag": "volmnist3d", "root": str(root),
                                                  "size": kw.pop("size", 28), "download": False},
                                      "cache": False, **kw})


def test_medmnist_3d_native_and_as_2p5d(tmp_path):
    arrays = _npz3d(tmp_path / "volmnist3d.npz")
    native = prepare_data(_data(tmp_path, spatial_dims=3, channels=1, image_size=28))
    np.testing.assert_array_equal(native.splits["train"].images[..., 0], arrays["train_images"])
    flat = prepare_data(_data(tmp_path, image_size=28))
    np.testing.assert_array_equal(flat.splits["val"].images, orthogonal_slices(arrays["val_images"]))


def test_medmnist_3d_at_64_is_resampled_to_the_training_grid(tmp_path):
    _npz3d(tmp_path / "volmnist3d_64.npz", size=64)
    data = prepare_data(_data(tmp_path, size=64, spatial_dims=3, channels=1, image_size=28))
    assert data.splits["test"].images.shape == (3, 28, 28, 28, 1)


def test_official_64_voxel_files_are_md5_checked(tmp_path, monkeypatch):
    from hybridmednet.config.schema import MedMNISTSource
    from hybridmednet.data.sources import medmnist

    seen = {}
    monkeypatch.setattr(medmnist, "download_npz", lambda url, target, md5: seen.update(url=url, md5=md5))
    medmnist.find_npz(MedMNISTSource(kind="medmnist", flag="adrenalmnist3d", size=64, root=str(tmp_path), download=True))
    assert seen == {"url": "https://zenodo.org/records/10519652/files/adrenalmnist3d_64.npz?download=1",
                    "md5": "17721accfe9fb005146a47d33bc54b2f"}


def test_spatial_dims_3_needs_one_channel_and_volumes(tmp_path):
    with pytest.raises(ValueError, match="spatial_dims=3 reads single-channel volumes"):
        _data(tmp_path, spatial_dims=3, channels=3)
    np.savez(tmp_path / "flatmnist.npz", **{f"{s}_{k}": (np.zeros((2, 8, 8), np.uint8) if k == "images" else np.array([[0], [1]]))
                                           for s in ("train", "val", "test") for k in ("images", "labels")})
    cfg = DataConfig.model_validate({"source": {"kind": "medmnist", "flag": "flatmnist", "root": str(tmp_path),
                                                "download": False}, "spatial_dims": 3, "channels": 1, "image_size": 8})
    with pytest.raises(DataError, match="spatial_dims=3 but the file holds 2D images"):
        prepare_data(cfg)


def test_volume_folder_of_nifti_files_and_dicom_series(tmp_path):
    from hybridmednet.config.schema import FolderSource
    from hybridmednet.data.sources import build_table

    for i in range(4):
        write_nifti(tmp_path / "ball" / f"b{i}.nii.gz", sphere(12, 4))
        write_dicom_series(tmp_path / "empty" / f"series{i}", np.zeros((4, 8, 8)))
    table = build_table(FolderSource(kind="folder", root=str(tmp_path)), spatial_dims=3)
    assert sorted(table.ids) == [f"ball/b{i}.nii.gz" for i in range(4)] + [f"empty/series{i}" for i in range(4)]
    cfg = DataConfig.model_validate({"source": {"kind": "folder", "root": str(tmp_path)}, "spatial_dims": 3,
                                     "channels": 1, "image_size": 8, "split": {"val_fraction": 0.25, "test_fraction": 0.25}})
    data = prepare_data(cfg)
    assert sum(len(p) for p in data.splits.values()) == 8
    assert data.splits["train"].images.shape[1:] == (8, 8, 8, 1)


def test_the_config_offers_exactly_the_ct_window_presets():
    from typing import get_args

    from hybridmednet.config.schema import CTWindowName

    assert set(get_args(CTWindowName)) == set(CT_WINDOWS)
