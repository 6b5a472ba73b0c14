"""Uploaded bytes -> the model's input image, with the status code a bad upload deserves.

Uploads are decoded in memory (never written to disk) by the same readers training uses
(``data/imageio.py``: Pillow for PNG/JPEG/TIFF..., pydicom for DICOM, found by its "DICM" magic),
then fitted to the model's square input exactly as ``predict`` does. The pixel count is checked
from the header before anything is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io

import numpy as np

from hybridmednet.errors import DataError

SUPPORTED = ("image/png", "image/jpeg", "image/tiff", "image/bmp", "application/dicom", "application/octet-stream")
# a 3D run reads one volume per upload: a NIfTI file (.nii, .nii.gz) or a zip of one DICOM series
SUPPORTED_3D = ("application/gzip", "application/x-gzip", "application/x-nifti", "application/zip",
                "application/x-zip-compressed", "application/octet-stream")
ZIP_MAX_MEMBERS = 4096  # slices in one zipped series
ZIP_MAX_RATIO = 50  # uncompressed / compressed: DICOM compresses a few times; a zip bomb by far more


class UploadError(Exception):
    """A request the service refuses: ``status`` (4xx, or 503 under overload) and a message."""

    def __init__(self, status: int, message: str, *, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def check_content_type(content_type: str | None, name: str, spatial_dims: int = 2) -> None:
    kind = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if spatial_dims == 3:
        if kind not in SUPPORTED_3D:
            raise UploadError(415, f"{name}: unsupported type {kind!r}; this model reads volumes: send one NIfTI file "
                                   f"(.nii or .nii.gz) or one DICOM series as a .zip ({', '.join(SUPPORTED_3D)})")
        return
    if kind not in SUPPORTED:
        raise UploadError(415, f"{name}: unsupported type {kind!r}; send PNG, JPEG, TIFF, BMP or DICOM "
                               f"({', '.join(SUPPORTED)})")


def decode_upload(data: bytes, *, name: str, channels: int, max_pixels: int) -> np.ndarray:
    """``uint8 (H, W, channels)``; :class:`UploadError` 400 (empty, not an image, truncated) or 413
    (too many pixels)."""
    from PIL import Image, UnidentifiedImageError

    from hybridmednet.data.imageio import _pil_to_array, _read_dicom, to_uint8_hwc

    if not data:
        raise UploadError(400, f"{name}: empty upload")
    try:
        if _is_dicom(data):
            array = _read_dicom(io.BytesIO(data))
        else:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise UploadError(413, f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} "
                                           "(--max-pixels); downscale the image before sending it")
                img.load()  # a truncated file fails here
                from PIL import ImageOps

                array = _pil_to_array(ImageOps.exif_transpose(img), name)
    except UploadError:
        raise
    except Image.DecompressionBombError:
        raise UploadError(413, f"{name}: too many pixels (decompression bomb guard)") from None
    except (UnidentifiedImageError, DataError, OSError, ValueError, SyntaxError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UploadError(400, f"{name}: not a readable image ({reason})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault, never a 500
        raise UploadError(400, f"{name}: cannot decode ({type(exc).__name__})") from None
    if array.ndim == 2 and _is_dicom(data) and array.shape[0] * array.shape[1] > max_pixels:
        raise UploadError(413, f"{name}: {array.shape[1]}x{array.shape[0]} pixels is over the limit of {max_pixels:,}")
    try:
        return to_uint8_hwc(array, channels, source=name)
    except DataError as exc:
        raise UploadError(400, str(exc)) from None


def decode_volume_upload(data: bytes, *, name: str, preprocessing: dict, max_pixels: int) -> np.ndarray:
    """A NIfTI upload (plain or gzipped) or a zip of one DICOM series as the 3D model's
    ``uint8 (S, S, S, 1)`` input, read in memory with the training pipeline's grid and intensity
    options (a series is ordered and checked exactly as a series folder is). 400 for anything
    unreadable, 413 when the voxel count (from the headers) is over ``max_pixels`` times 64 (a volume
    is many slices) or a zip expands suspiciously far."""
    import gzip

    import nibabel as nib

    from hybridmednet.data.volumes import model_input, nifti_array

    if not data:
        raise UploadError(400, f"{name}: empty upload")
    if data[:4] == b"PK\x03\x04":
        volume, spacing = _zipped_series(data, name, max_pixels)
        return model_input(volume, spacing, preprocessing["image_size"], preprocessing["resize"], preprocessing["volume"])
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        image = nib.Nifti1Image.from_bytes(raw)
        voxels = int(np.prod(image.shape))
        if voxels > max_pixels * 64:
            raise UploadError(413, f"{name}: {voxels:,} voxels is over the limit of {max_pixels * 64:,} "
                                   "(64 x --max-pixels); crop or downsample the volume before sending it")
        volume, spacing = nifti_array(image, name)
    except UploadError:
        raise
    except DataError as exc:
        raise UploadError(400, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault, never a 500
        reason = " ".join(str(exc).split())[:200]
        raise UploadError(400, f"{name}: not a readable NIfTI volume ({type(exc).__name__}: {reason})") from None
    return model_input(volume, spacing, preprocessing["image_size"], preprocessing["resize"], preprocessing["volume"])


def _zipped_series(data: bytes, name: str, max_pixels: int):
    """``(volume, spacing)`` of the DICOM series in a zip (every ``.dcm`` member, any folder depth),
    read in memory. Sizes are checked from the zip directory and the slice headers first."""
    import zipfile

    import pydicom

    from hybridmednet.data.volumes import series_volume

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir() and m.filename.lower().endswith(".dcm")]
    except zipfile.BadZipFile as exc:
        raise UploadError(400, f"{name}: not a readable zip ({exc})") from None
    if not members:
        raise UploadError(400, f"{name}: the zip holds no .dcm file; zip the series' slices (one .dcm per slice)")
    expanded = sum(m.file_size for m in members)
    if len(members) > ZIP_MAX_MEMBERS or expanded > ZIP_MAX_RATIO * len(data):
        raise UploadError(413, f"{name}: {len(members)} slices, {expanded:,} bytes unpacked from {len(data):,}; at most "
                               f"{ZIP_MAX_MEMBERS} slices and {ZIP_MAX_RATIO}x expansion")
    datasets, voxels = [], 0
    for member in members:
        try:
            ds = pydicom.dcmread(io.BytesIO(archive.read(member)))
            voxels += int(ds.Rows) * int(ds.Columns)
        except Exception as exc:  # noqa: BLE001 - any unreadable slice is the upload's fault, never a 500
            reason = " ".join(str(exc).split())[:200]
            raise UploadError(400, f"{name}/{member.filename}: not a readable DICOM slice ({type(exc).__name__}: {reason})") from None
        if voxels > max_pixels * 64:
            raise UploadError(413, f"{name}: over {max_pixels * 64:,} voxels (64 x --max-pixels); crop or downsample "
                                   "the series before sending it")
        datasets.append((member.filename, ds))
    try:
        return series_volume(datasets, name)
    except DataError as exc:
        raise UploadError(400, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - odd headers are the upload's fault, never a 500
        raise UploadError(400, f"{name}: not a usable DICOM series ({type(exc).__name__}: {str(exc)[:200]})") from None


def fit(image: np.ndarray, preprocessing: dict) -> np.ndarray:
    """The square model input, resized as in training (``data.resize``)."""
    from hybridmednet.data.resize import fit_to_square

    return fit_to_square(image, preprocessing["image_size"], preprocessing["resize"])
