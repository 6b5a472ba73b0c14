"""Unit tests for hybridmednet.data.imageio on tiny files written into tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybridmednet.data import imageio
from hybridmednet.data.imageio import load_image, register_reader, to_uint8_hwc
from hybridmednet.errors import DataError

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def _save(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


# --------------------------------------------------------------------------- Pillow formats


def test_png_grey_8bit_as_1_and_3_channels(tmp_path):
    pixels = np.array([[0, 64], [128, 255]], np.uint8)
    path = _save(tmp_path, "grey.png", Image.fromarray(pixels))
    grey = load_image(path, 1)
    assert grey.dtype == np.uint8 and grey.shape == (2, 2, 1)
    np.testing.assert_array_equal(grey[:, :, 0], pixels)
    rgb = load_image(path, 3)
    assert rgb.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], pixels)


def test_png_grey_16bit_divides_by_257_not_minmax(tmp_path):
    pixels = np.array([[0, 257 * 10], [257 * 100, 65535]], np.uint16)
    img = Image.frombytes("I;16", (2, 2), pixels.astype("<u2").tobytes())
    path = _save(tmp_path, "grey16.png", img)
    with Image.open(path) as reopened:
        assert reopened.mode.startswith("I")  # really stored as 16-bit
    np.testing.assert_array_equal(load_image(path, 1)[:, :, 0], [[0, 10], [100, 255]])
    # a dark 16-bit image stays dark: no per-image stretch
    dark = _save(tmp_path, "dark16.png", Image.fromarray(np.array([[0, 2570]], np.uint16)))
    np.testing.assert_array_equal(load_image(dark, 1)[:, :, 0], [[0, 10]])


def test_rgb_png_and_luma(tmp_path):
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    path = _save(tmp_path, "rgb.png", Image.fromarray(pixels))
    np.testing.assert_array_equal(load_image(path, 3), pixels)
    # ITU-R 601: 76.245 -> 76, 149.685 -> 150, 29.07 -> 29, 18.15 -> 18
    np.testing.assert_array_equal(load_image(path, 1)[:, :, 0], [[76, 150], [29, 18]])


def test_rgba_is_composited_onto_black(tmp_path):
    pixels = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [200, 100, 50, 0]]], np.uint8)
    path = _save(tmp_path, "rgba.png", Image.fromarray(pixels, mode="RGBA"))
    out = load_image(path, 3)
    np.testing.assert_array_equal(out[0], [[200, 100, 50], [100, 50, 25], [0, 0, 0]])


def test_grey_with_alpha_is_composited(tmp_path):
    pixels = np.array([[[200, 255], [200, 0]]], np.uint8)
    path = _save(tmp_path, "la.png", Image.fromarray(pixels, mode="LA"))
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [200, 0])


def test_palette_without_and_with_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1])
    opaque = _save(tmp_path, "pal.png", img)
    np.testing.assert_array_equal(load_image(opaque, 3)[0], [[255, 0, 0], [0, 0, 255]])
    clear = _save(tmp_path, "pal_t.png", img, transparency=1)  # index 1 fully transparent
    np.testing.assert_array_equal(load_image(clear, 3)[0], [[255, 0, 0], [0, 0, 0]])


def test_jpeg_roughly_preserves_colour(tmp_path):
    pixels = np.full((8, 8, 3), (200, 40, 40), np.uint8)
    path = _save(tmp_path, "photo.jpg", Image.fromarray(pixels), quality=95)
    out = load_image(path, 3)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - pixels).max() <= 4


def test_mode_1_and_float_mode(tmp_path):
    bits = _save(tmp_path, "bits.png", Image.fromarray(np.array([[True, False]])))
    np.testing.assert_array_equal(load_image(bits, 1)[0, :, 0], [255, 0])
    floats = _save(
        tmp_path, "f.tif", Image.fromarray(np.array([[-1.0, 0.0, 3.0]], np.float32), mode="F")
    )
    np.testing.assert_array_equal(load_image(floats, 1)[0, :, 0], [0, 64, 255])


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.array([[0, 255, 255]], np.uint8))  # 1x3, bright on the right
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = _save(tmp_path, "rot.jpg", img, exif=exif, quality=100)
    out = load_image(path, 1)[:, :, 0]
    assert out.shape == (3, 1)
    assert out[0, 0] < 30 and out[2, 0] > 225


# --------------------------------------------------------------------------- to_uint8_hwc


def test_to_uint8_hwc_dtypes_and_channels():
    unit = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(to_uint8_hwc(unit, 1)[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(to_uint8_hwc(np.array([[True, False]]), 1)[0, :, 0], [255, 0])
    np.testing.assert_array_equal(
        to_uint8_hwc(np.array([[65535, 257]], np.uint16), 1)[0, :, 0], [255, 1]
    )
    np.testing.assert_array_equal(
        to_uint8_hwc(np.array([[-10.0, 0.0, 10.0]]), 1)[0, :, 0], [0, 128, 255]
    )
    grey = np.array([[7, 9]], np.uint8)[:, :, None]
    np.testing.assert_array_equal(to_uint8_hwc(grey, 3), np.repeat(grey, 3, axis=2))
    rgb = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)
    np.testing.assert_array_equal(to_uint8_hwc(rgb, 1)[0, :, 0], [76, 150])


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 2, 2, 3), (4,)])
def test_to_uint8_hwc_rejects_shapes(shape):
    with pytest.raises(DataError, match=r"scan\.png.*unsupported image shape"):
        to_uint8_hwc(np.zeros(shape, np.uint8), 3, source="scan.png")


def test_to_uint8_hwc_rejects_channels():
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        to_uint8_hwc(np.zeros((2, 2), np.uint8), 4, source="x.png")


# --------------------------------------------------------------------------- DICOM


def _write_dicom(path, frames, photometric="MONOCHROME2", **attrs):
    """Write uint16 greyscale frames (H, W) or (N, H, W) as an Explicit VR LE file."""
    frames = np.asarray(frames, np.uint16)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = frames.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


RAW = [[0, 50, 100, 150]]


def test_dicom_minmax_without_window(tmp_path):
    path = _write_dicom(tmp_path / "a.dcm", RAW)
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [0, 85, 170, 255])
    assert load_image(path, 3).shape == (1, 4, 3)


def test_dicom_window_from_file_and_explicit_override(tmp_path):
    # LINEAR window c=50.5, w=201 maps x to (x - 50) / 200 + 0.5
    path = _write_dicom(tmp_path / "w.dcm", RAW, WindowCenter=50.5, WindowWidth=201)
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [64, 128, 191, 255])
    shifted = load_image(path, 1, dicom_window=(100.5, 201))
    np.testing.assert_array_equal(shifted[0, :, 0], [0, 64, 128, 191])


@pytest.mark.parametrize("function, expected", [
    ("LINEAR_EXACT", [0, 64, 128, 191]),  # (x - c) / w + 0.5 with c = 100, w = 200
    ("SIGMOID", [30, 69, 128, 186]),  # 1 / (1 + exp(-4 (x - c) / w))
])
def test_dicom_voi_lut_functions_follow_the_standard(tmp_path, function, expected):
    path = _write_dicom(tmp_path / "f.dcm", [[0, 50, 100, 150]], WindowCenter=100, WindowWidth=200,
                        VOILUTFunction=function)
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], expected)


def test_dicom_rescale_is_applied_before_window(tmp_path):
    # values become 2 * raw - 100 = [-100, 0, 100, 200]
    path = _write_dicom(
        tmp_path / "r.dcm", RAW, RescaleSlope=2, RescaleIntercept=-100,
        WindowCenter=50.5, WindowWidth=201,
    )
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [0, 64, 191, 255])


def test_dicom_ct_hounsfield_with_multivalued_window(tmp_path):
    # HU = raw - 1024 = [-1024, -24, 976, 1976]; first window (40, 400) is used
    path = _write_dicom(
        tmp_path / "ct.dcm", [[0, 1000, 2000, 3000]], RescaleSlope=1, RescaleIntercept=-1024,
        WindowCenter=[40, 400], WindowWidth=[400, 2000],
    )
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [0, 87, 255, 255])


def test_dicom_voi_lut_sequence(tmp_path):
    path = _write_dicom(tmp_path / "voi.dcm", RAW)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUTData: inverting ramp
    ds.VOILUTSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [255, 205, 155, 105])


def test_dicom_monochrome1_is_inverted(tmp_path):
    path = _write_dicom(tmp_path / "m1.dcm", RAW, photometric="MONOCHROME1")
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [255, 170, 85, 0])


def test_dicom_multiframe_picks_frame(tmp_path):
    frames = np.zeros((3, 2, 3), np.uint16)
    for k in range(3):
        frames[k, 0, k] = 1000  # frame k is bright at column k
    path = _write_dicom(tmp_path / "mf.dcm", frames)
    assert load_image(path, 1)[0, :, 0].tolist() == [0, 255, 0]  # middle frame by default
    assert load_image(path, 1, frame=2)[0, :, 0].tolist() == [0, 0, 255]
    with pytest.raises(DataError, match=r"mf\.dcm.*frame 3 out of range.*3 frame"):
        load_image(path, 1, frame=3)


def test_dicom_detected_by_magic_without_suffix(tmp_path):
    path = _write_dicom(tmp_path / "IM0001", RAW)
    np.testing.assert_array_equal(load_image(path, 1)[0, :, 0], [0, 85, 170, 255])


def test_dicom_ybr_is_converted_to_rgb(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = np.array([[[200, 40, 40], [20, 180, 60]]], np.uint8)
    path = _write_dicom(tmp_path / "c.dcm", RAW)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 1, 2
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.save_as(path, enforce_file_format=True)
    out = load_image(path, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 2


def test_dicom_without_pixel_data(tmp_path):
    path = _write_dicom(tmp_path / "nopix.dcm", RAW)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError, match=r"nopix\.dcm: no DICOM PixelData"):
        load_image(path, 1)


# --------------------------------------------------------------------------- NIfTI


def test_nifti_2d_is_rotated_for_display(tmp_path):
    data = np.zeros((3, 2), np.float32)  # (x, y)
    data[0, 0] = 5.0  # x = 0, y = 0: lower-left when displayed
    path = tmp_path / "flat.nii"
    nib.Nifti1Image(data, np.eye(4)).to_filename(path)
    out = load_image(path, 1)[:, :, 0]
    assert out.shape == (2, 3)
    assert out.tolist() == [[0, 0, 0], [255, 0, 0]]


def test_nifti_3d_slice_selection(tmp_path):
    vol = np.zeros((5, 3, 4), np.int16)  # (x, y, z)
    for z in range(4):
        vol[z, 0, z] = 100  # slice z is bright at x = z, y = 0
    path = tmp_path / "vol.nii.gz"
    nib.Nifti1Image(vol, np.eye(4)).to_filename(path)
    middle = load_image(path, 1)[:, :, 0]
    assert middle.shape == (3, 5)
    assert np.argwhere(middle == 255).tolist() == [[2, 2]]  # z = 4 // 2
    first = load_image(path, 1, nifti_slice=0)[:, :, 0]
    assert np.argwhere(first == 255).tolist() == [[2, 0]]
    with pytest.raises(DataError, match=r"vol\.nii\.gz.*nifti_slice 4 out of range"):
        load_image(path, 1, nifti_slice=4)


def test_nifti_4d_is_refused(tmp_path):
    path = tmp_path / "series.nii"
    nib.Nifti1Image(np.zeros((2, 2, 2, 2), np.float32), np.eye(4)).to_filename(path)
    with pytest.raises(DataError, match=r"series\.nii.*only 2D or 3D"):
        load_image(path, 1)


# --------------------------------------------------------------------------- errors, registry


@pytest.fixture
def private_registry(monkeypatch):
    """Keep test readers out of the module-wide registry."""
    monkeypatch.setattr(imageio.READERS, "_items", dict(imageio.READERS._items))
    monkeypatch.setattr(imageio.READERS, "_info", dict(imageio.READERS._info))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.png: file not found; check the path"):
        load_image(tmp_path / "nothere.png", 3)


def test_truncated_png(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = _save(tmp_path, "cut.png", Image.fromarray(pixels))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png: cannot read image.*--skip-bad"):
        load_image(path, 3)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError, match=r"notes\.png: cannot read image.*--skip-bad") as info:
        load_image(path, 3)
    assert "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupt_dicom(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 20)
    with pytest.raises(DataError, match=r"broken\.dcm: no DICOM PixelData.*--skip-bad"):
        load_image(path, 1)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_truncated_dicom(tmp_path):
    path = _write_dicom(tmp_path / "short.dcm", np.arange(64 * 64).reshape(64, 64))
    path.write_bytes(path.read_bytes()[:-4000])
    with pytest.raises(DataError, match=r"short\.dcm: cannot read image.*--skip-bad"):
        load_image(path, 1)


def test_unsupported_channel_shape_from_reader(tmp_path, private_registry):
    @register_reader(".twoch")
    def _two_channels(path, **_):
        return np.zeros((2, 2, 2), np.uint8)

    path = tmp_path / "odd.twoch"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"odd\.twoch: unsupported image shape \(2, 2, 2\)"):
        load_image(path, 3)


def test_a_suffix_cannot_be_registered_twice(private_registry):
    with pytest.raises(ValueError, match=r"image reader '\.DCM' is registered twice"):
        register_reader(".DCM")(lambda path, **_: np.zeros((1, 1), np.uint8))


def test_registered_reader_wins_by_longest_suffix(tmp_path, private_registry):
    @register_reader(".raw.bin")
    def _ramp(path, **opts):
        return np.full((1, 2), opts["frame"] or 7, np.uint8)

    path = tmp_path / "Scan.RAW.BIN"
    path.write_bytes(b"x")
    assert load_image(path, 1).tolist() == [[[7], [7]]]
    assert load_image(path, 1, frame=9).tolist() == [[[9], [9]]]
