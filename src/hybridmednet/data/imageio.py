"""Read any supported image file into one ``uint8`` ``(H, W, C)`` array.

Every source (folders, CSV manifests, DICOM series) goes through :func:`load_image`, so the
model always sees the same layout and intensity conventions whatever the file format:

* channels are 1 (grey) or 3 (RGB); RGB -> grey uses ITU-R 601 luma, grey -> RGB repeats;
* alpha is removed by compositing onto **black** (transparent pixels become 0), since a
  transparent background in a medical image is "no signal", not "white paper";
* 16-bit greyscale is divided by 257 (a fixed dtype range, not a per-image stretch), so one
  intensity means the same thing in every image of a dataset;
* DICOM goes through its modality LUT (rescale) and VOI LUT / window; NIfTI slices are
  min-max scaled and rotated for display (see :func:`_read_nifti`).

Readers are chosen by file suffix through :func:`register_reader`; files with an unknown
suffix go to Pillow, unless they carry the DICOM "DICM" magic. Every failure is a
:class:`~hybridmednet.errors.DataError` that names the file.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from hybridmednet.errors import DataError
from hybridmednet.registry import Registry

Reader = Callable[..., np.ndarray]
READERS: Registry[Reader] = Registry("image reader", "file suffix", case_insensitive=True)
_SKIP_HINT = "fix or remove the file, or pass --skip-bad to skip unreadable images"
_SHAPES = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"


def register_reader(*suffixes: str) -> Callable[[Reader], Reader]:
    """Register ``fn(path, **opts) -> ndarray`` for file suffixes such as ``".nii.gz"``.

    Suffixes are matched case-insensitively, longest first, so ``".nii.gz"`` wins over
    ``".gz"``. Registering a suffix twice is an error. Readers get
    the keyword options of :func:`load_image` (``nifti_slice``, ``dicom_window``, ``frame``)
    and must accept and ignore those they do not use; they may return any array that
    :func:`to_uint8_hwc` accepts.
    """
    for suffix in suffixes:
        if not suffix.startswith("."):
            raise ValueError(f"reader suffix must start with '.', got {suffix!r}")

    return READERS.register(*suffixes)


def load_image(
    path: str | os.PathLike,
    channels: int,
    *,
    nifti_slice: int | None = None,
    dicom_window: tuple[float, float] | None = None,
    frame: int | None = None,
) -> np.ndarray:
    """Read ``path`` as a ``uint8`` array of shape ``(H, W, channels)``, ``channels`` in {1, 3}.

    ``nifti_slice`` picks the slice of a 3D NIfTI volume (default: the middle one);
    ``dicom_window=(center, width)`` overrides the DICOM file's own window; ``frame`` picks
    the frame of a multi-frame DICOM (default: the middle one) or multi-page Pillow image
    (default: the first). Raises :class:`DataError` naming the file for anything unreadable.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise DataError(f"{path}: channels must be 1 or 3, got {channels}")
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path or data.root")
    reader = _reader_for(path)
    try:
        array = reader(path, nifti_slice=nifti_slice, dicom_window=dicom_window, frame=frame)
    except DataError:
        raise
    except Exception as exc:  # any decoder failure becomes one actionable line
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise DataError(f"{path}: cannot read image ({reason}); {_SKIP_HINT}") from exc
    return to_uint8_hwc(array, channels, source=str(path))


def _reader_for(path: Path) -> Reader:
    """Longest registered suffix of the file name; else DICOM by magic; else Pillow."""
    name = path.name.lower()
    for i, char in enumerate(name):
        if char == "." and name[i:] in READERS:
            return READERS.get(name[i:])
    with open(path, "rb") as f:
        head = f.read(132)
    return _read_dicom if head[128:132] == b"DICM" else _read_pillow


# --------------------------------------------------------------------------- conversion


def to_uint8_hwc(array: np.ndarray, channels: int, *, source: str = "<array>") -> np.ndarray:
    """Convert an image array to ``uint8`` ``(H, W, channels)``, ``channels`` in {1, 3}.

    Accepts shapes (H, W), (H, W, 1), (H, W, 3) and (H, W, 4). Intensities: ``bool`` -> 0/255;
    ``uint8`` as is; ``uint16`` divided by 257 (65535 -> 255); float in [0, 1] times 255, any
    other float range min-max stretched (NaN/inf -> 0); other integers as is when within 0..255,
    else min-max. A 4th channel is alpha: colours are composited onto black, then it is
    dropped. RGB -> grey is ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B, rounded); grey ->
    RGB repeats the channel. Anything else raises :class:`DataError` naming ``source``.
    """
    array = np.asarray(array)
    if channels not in (1, 3):
        raise DataError(f"{source}: channels must be 1 or 3, got {channels}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise DataError(f"{source}: unsupported image shape {array.shape}; expected {_SHAPES}")
    numeric = array.dtype == bool or np.issubdtype(array.dtype, np.number)
    if not numeric or np.iscomplexobj(array):
        raise DataError(f"{source}: unsupported pixel type {array.dtype}; expected int or float")
    if array.shape[2] == 4:
        alpha = _alpha_fraction(array[:, :, 3])
        image = np.rint(_scale_to_uint8(array[:, :, :3]) * alpha[:, :, None]).astype(np.uint8)
    else:
        image = _scale_to_uint8(array)
    if channels == 1 and image.shape[2] == 3:
        luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.rint(luma).clip(0, 255).astype(np.uint8)[:, :, None]
    if channels == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map intensities to 0..255 by dtype: fixed ranges where the dtype has one, else min-max."""
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.unsignedinteger) and array.dtype.itemsize == 2:
        return np.rint(array / 257.0).astype(np.uint8)
    values = array.astype(np.float64)
    finite = values[np.isfinite(values)]
    in_range = finite.size > 0 and finite.min() >= 0
    if np.issubdtype(array.dtype, np.floating) and in_range and finite.max() <= 1:
        return np.rint(np.where(np.isfinite(values), values, 0.0) * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and in_range and finite.max() <= 255:
        return values.astype(np.uint8)
    return _minmax(values)


def _alpha_fraction(alpha: np.ndarray) -> np.ndarray:
    """Alpha as opacity in [0, 1]; integers use their dtype's full range, floats are clipped."""
    if alpha.dtype == bool:
        return alpha.astype(np.float64)
    if np.issubdtype(alpha.dtype, np.floating):
        return np.nan_to_num(alpha.astype(np.float64), nan=1.0).clip(0, 1)
    top = 65535.0 if alpha.dtype == np.uint16 else 255.0
    return (alpha.astype(np.float64) / top).clip(0, 1)


def _minmax(values: np.ndarray) -> np.ndarray:
    """Stretch finite values to 0..255 (NaN -> 0); a constant image becomes all zeros."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    low, high = values[finite].min(), values[finite].max()
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = np.where(finite, (values - low) / (high - low) * 255.0, 0.0)
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- Pillow


def _read_pillow(path: Path, *, frame: int | None = None, **_: Any) -> np.ndarray:
    """Decode with Pillow (PNG, JPEG, TIFF, BMP, ...), applying the EXIF orientation."""
    with Image.open(path) as img:
        if frame is not None:
            img.seek(frame)
        img.load()  # decode now, so a truncated file fails here and not later
        return _pil_to_array(ImageOps.exif_transpose(img), path)


def _pil_to_array(img: Image.Image, path: Path) -> np.ndarray:
    """Array for each Pillow mode, keeping the convention of :func:`to_uint8_hwc`.

    16-bit grey ("I;16*") keeps its dtype so it is divided by 257. 32-bit "I" is treated as
    16-bit when its values fit 0..65535 (that is how Pillow often opens 16-bit PNG/TIFF) and
    min-max stretched otherwise, since no fixed range exists; float "F" is min-max stretched.
    """
    mode = img.mode
    if mode in ("1", "L", "RGB", "RGBA"):
        return np.asarray(img)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("LA", "La", "RGBa"):
        return np.asarray(img.convert("RGBA"))
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(img.convert("RGB"))
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)
    if mode == "I":
        values = np.asarray(img)
        if values.min() >= 0 and values.max() <= 65535:
            return values.astype(np.uint16)
        return _minmax(values)
    if mode == "F":
        return _minmax(np.asarray(img))
    raise DataError(f"{path}: unsupported Pillow image mode {mode!r}; convert it to PNG")


# --------------------------------------------------------------------------- DICOM


def _import_medical(module: str, path: Path, kind: str) -> Any:
    """Import pydicom/nibabel only when such a file is read; they are optional extras."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DataError(
            f"{path}: reading {kind} files needs {module}; install hybridmednet[medical]"
        ) from exc


@register_reader(".dcm", ".dicom")
def _read_dicom(
    path: Path,
    *,
    dicom_window: tuple[float, float] | None = None,
    frame: int | None = None,
    **_: Any,
) -> np.ndarray:
    """One DICOM frame: modality LUT, then VOI window, then MONOCHROME1 inversion.

    Greyscale frames come back as ``uint8`` with higher = brighter (MONOCHROME1 is inverted to
    look like MONOCHROME2). YBR colour is converted to RGB. Multi-frame files give the frame
    ``frame`` (default: the middle one, ``n // 2``). Needs pydicom >= 3. Rescale and window
    are read from the top-level dataset only (not from enhanced multi-frame functional groups).
    """
    pydicom = _import_medical("pydicom", path, "DICOM")
    try:
        from pydicom.pixels import (
            apply_color_lut,
            apply_modality_lut,
            as_pixel_options,
            convert_color_space,
            get_decoder,
        )
    except ImportError as exc:  # pydicom 2.x has no pydicom.pixels
        raise DataError(
            f"{path}: reading DICOM files needs pydicom>=3 (found {pydicom.__version__}); "
            "pip install -U 'hybridmednet[medical]'"
        ) from exc
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc}); {_SKIP_HINT}") from exc
    if "PixelData" not in ds:
        raise DataError(
            f"{path}: no DICOM PixelData (corrupt, or a report/DICOMDIR without an image); "
            f"{_SKIP_HINT}"
        )
    n_frames = int(ds.get("NumberOfFrames") or 1)
    index = n_frames // 2 if frame is None else frame
    if not 0 <= index < n_frames:
        raise DataError(f"{path}: frame {frame} out of range; the file has {n_frames} frame(s)")
    if "TransferSyntaxUID" not in ds.file_meta:  # bare dataset without a file meta header
        implicit = ds.original_encoding[0]
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        )
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    pixels, meta = decoder.as_array(ds, index=index, raw=True, **as_pixel_options(ds))
    photometric = str(meta.get("photometric_interpretation", ds.PhotometricInterpretation))

    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        return convert_color_space(pixels, photometric, "RGB")
    if photometric == "PALETTE COLOR":
        return apply_color_lut(pixels, ds)
    if photometric in ("RGB", "YBR_ICT", "YBR_RCT"):  # JPEG 2000 decoders undo ICT/RCT
        if pixels.dtype == np.uint8:
            return pixels
        return pixels / float(2 ** int(ds.get("BitsStored", 16)) - 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(f"{path}: unsupported DICOM PhotometricInterpretation {photometric!r}")
    grey = _dicom_voi(apply_modality_lut(pixels, ds).astype(np.float64), ds, dicom_window, path)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def _dicom_voi(values: np.ndarray, ds: Any, window: Any, path: Path) -> np.ndarray:
    """Window to 0..255: explicit ``window``, else the file's window, else its VOI LUT, else
    min-max of the frame. Values are in modality units (e.g. Hounsfield for CT)."""
    function = "LINEAR"
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = (_first(ds.WindowCenter), _first(ds.WindowWidth))
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        if width > 0:
            window = (center, width)  # a broken width in the file falls through to min-max
    elif window is not None and not float(window[1]) > 0:
        raise DataError(f"{path}: dicom_window width must be > 0, got {window[1]}")
    if window is None and ds.get("VOILUTSequence"):
        from pydicom.pixels import apply_voi

        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        mapped = apply_voi(np.rint(values).astype(np.int64), ds)  # LUT inputs are integers
        return np.rint(mapped / (2.0**bits - 1) * 255).clip(0, 255).astype(np.uint8)
    if window is None:
        return _minmax(values)
    return _apply_window(values, float(window[0]), float(window[1]), function)


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """pydicom's windowing (LINEAR, LINEAR_EXACT, SIGMOID: DICOM PS3.3 C.11.2.1) of modality values,
    the file's window or an explicit one, mapped to 0..255. pydicom reads the window from a
    dataset, so a minimal one carries it; its 16-bit unsigned output range is rescaled to 8 bits."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    window = Dataset()
    window.PhotometricInterpretation, window.BitsStored, window.PixelRepresentation = "MONOCHROME2", 16, 0
    window.WindowCenter, window.WindowWidth, window.VOILUTFunction = center, width, function
    if function == "LINEAR" and width < 1:  # pydicom refuses it; LINEAR_EXACT is the same map without the -1
        window.WindowWidth, window.VOILUTFunction = max(width, 1e-6), "LINEAR_EXACT"
    y = apply_windowing(values.astype(np.float64), window)
    return np.rint(np.clip(y / 65535.0, 0.0, 1.0) * 255).astype(np.uint8)


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DICOM element (one window per view)."""
    try:
        return float(value)
    except TypeError:
        return float(value[0])


# --------------------------------------------------------------------------- NIfTI


@register_reader(".nii", ".nii.gz")
def _read_nifti(path: Path, *, nifti_slice: int | None = None, **_: Any) -> np.ndarray:
    """One slice of a NIfTI image, min-max scaled over that slice, rotated for display.

    2D images are used as is; 3D volumes give slice ``nifti_slice`` along the last stored axis
    (axial for the usual RAS/LAS storage; default: the middle one, ``n // 2``); trailing
    singleton dimensions are ignored and real 4D series are refused. The volume is not
    reoriented: nibabel indexes ``(x, y)``, so the slice is returned as ``np.rot90(slice)``,
    i.e. rows run from high y to low y (anterior/superior at the top for RAS storage) and
    columns follow x, the usual radiological display of a stored slice.
    """
    nib = _import_medical("nibabel", path, "NIfTI")
    img = nib.load(path)
    shape = tuple(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise DataError(f"{path}: NIfTI image has shape {img.shape}; only 2D or 3D is supported")
    n_slices = shape[2] if len(shape) == 3 else 1
    index = n_slices // 2 if nifti_slice is None else nifti_slice
    if not 0 <= index < n_slices:
        raise DataError(f"{path}: nifti_slice {nifti_slice} out of range; it has {n_slices}")
    if len(img.shape) == 2:
        plane = img.dataobj[:, :]
    else:  # slicing the proxy reads one slice, not the whole volume
        plane = img.dataobj[(slice(None), slice(None), index) + (0,) * (len(img.shape) - 3)]
    return np.rot90(_minmax(np.asarray(plane, dtype=np.float64)))
