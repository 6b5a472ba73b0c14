"""Volumes (CT, MR): reading NIfTI files and DICOM series, resampling to the model's cubic grid,
intensity windowing, and the 2.5D view a 2D network reads.

A volume leaves here as ``uint8 (S, S, S, 1)`` in (depth, height, width, channel) order, the 3D
twin of the 2D ``(S, S, C)`` images, so the cache, the leakage audit, the dataset and the
inference path treat both alike. The steps, in order:

1. read: NIfTI is reoriented to the closest canonical (RAS) orientation and stored (z, y, x);
   a DICOM series (one folder) is ordered by ``ImagePositionPatient`` projected on the slice
   normal, refused when a slice is missing or doubled, and mapped to HU with
   ``RescaleSlope`` / ``RescaleIntercept``. The voxel spacing comes from the headers.
2. grid: ``center_crop`` crops every axis to the shortest physical extent (so the grid is
   isotropic in mm), ``squash`` keeps the whole field of view; then each axis is resampled to
   ``S`` voxels with ``data.volume.interpolation`` (trilinear or nearest, ``scipy.ndimage.zoom``).
3. intensity: a CT window (level, width, or a named preset) maps HU linearly to 0..255;
   otherwise ``percentile`` clips to the 0.5-99.5th percentiles of the volume (MR, whose units
   are arbitrary), and ``minmax`` stretches. ``uint8`` volumes are kept as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridmednet.errors import DataError

# (level, width) in HU; the usual radiology presets
CT_WINDOWS = {"brain": (40, 80), "subdural": (75, 215), "stroke": (40, 40), "lung": (-600, 1500),
              "mediastinum": (50, 350), "soft_tissue": (50, 400), "abdomen": (40, 400), "liver": (60, 160),
              "bone": (400, 1800)}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# a gap this many times the usual slice spacing means slices are missing
MISSING_SLICE_FACTOR = 1.5


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_dicom_series(path: str | Path) -> bool:
    """A folder holding ``.dcm`` files directly: one series."""
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() == ".dcm" for f in p.iterdir() if f.is_file())


def find_volumes(root: str | Path) -> list[Path]:
    """The volumes at or below ``root``: ``root`` itself when it is a DICOM series, else every NIfTI
    file and series folder below it (a series' slices are not separate entries; hidden names skipped)."""
    root = Path(root)
    if is_dicom_series(root):
        return [root]
    found: list[Path] = []
    for p in sorted(root.rglob("*")):
        if p.name.startswith(".") or any(parent in found for parent in p.parents):
            continue
        if (p.is_file() and is_nifti(p)) or is_dicom_series(p):
            found.append(p)
    return found


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``(volume float32 (z, y, x), spacing (dz, dy, dx) in mm)``, in canonical orientation."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for broken files
        raise DataError(f"{path}: not a readable NIfTI volume ({exc})") from None
    return nifti_array(image, path)


def nifti_array(image, source) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A loaded NIfTI image (file or bytes) as ``(volume (z, y, x), spacing)``; ``source`` names it."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(image)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise DataError(f"{source}: not a readable NIfTI volume ({exc})") from None
    data = data.reshape(data.shape[:3] + tuple(s for s in data.shape[3:] if s != 1))
    if data.ndim != 3:
        raise DataError(f"{source}: NIfTI image has shape {data.shape}; a volume needs 3 dimensions (x, y, z)")
    zooms = img.header.get_zooms()[:3]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def _slice_position(ds, where: str) -> float:
    try:
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        position = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    except AttributeError:
        raise DataError(f"{where}: DICOM slice without ImagePositionPatient / ImageOrientationPatient; "
                        "the series cannot be ordered") from None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(position @ normal)


def read_dicom_series(folder: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``(volume float32 (z, y, x) in HU where rescale tags exist, spacing (dz, dy, dx))`` from a
    folder of ``.dcm`` slices (see :func:`series_volume`)."""
    import pydicom

    folder = Path(folder)
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".dcm")
    datasets = []
    for f in files:
        try:
            datasets.append((f.name, pydicom.dcmread(str(f))))
        except Exception as exc:
            raise DataError(f"{f}: not a readable DICOM slice ({exc})") from None
    return series_volume(datasets, str(folder))


def series_volume(datasets: list, where: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One series from its slices ``[(file name, pydicom dataset)]`` (a folder, or a zip upload
    read in memory); ``where`` names the series in errors.

    Slices are ordered by position along the slice normal, not by file name or InstanceNumber; a
    gap larger than 1.5x the median spacing (a missing slice), two slices at one position, or
    slices of different sizes are errors naming the series and the neighbouring files."""
    if len(datasets) < 2:
        raise DataError(f"{where}: a DICOM series needs at least 2 slices, found {len(datasets)}")
    slices = []
    for name, ds in datasets:
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:
            raise DataError(f"{where}/{name}: not a readable DICOM slice ({exc})") from None
        slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        slices.append((_slice_position(ds, f"{where}/{name}"), pixels * slope + intercept, ds, name))
    shapes = {s[1].shape for s in slices}
    if len(shapes) > 1:
        raise DataError(f"{where}: series slices have different sizes {sorted(shapes)}")
    slices.sort(key=lambda s: s[0])
    positions = np.asarray([s[0] for s in slices])
    steps = np.diff(positions)
    if (steps < 1e-4).any():
        at = int(np.argmin(steps))
        raise DataError(f"{where}: two slices at one position ({slices[at][3]}, {slices[at + 1][3]}); "
                        "the folder mixes series or holds a duplicate")
    spacing_z = float(np.median(steps))
    gaps = np.flatnonzero(steps > MISSING_SLICE_FACTOR * spacing_z)
    if gaps.size:
        at = int(gaps[0])
        raise DataError(f"{where}: slice(s) missing in the series between position {positions[at]:.2f} mm "
                        f"({slices[at][3]}) and {positions[at + 1]:.2f} mm ({slices[at + 1][3]}); "
                        f"usual spacing {spacing_z:.2f} mm. Re-export the full series")
    first = slices[0][2]
    dy, dx = (float(v) for v in getattr(first, "PixelSpacing", (1.0, 1.0)))
    return np.stack([s[1] for s in slices]), (spacing_z, dy, dx)


def read_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A NIfTI file or a DICOM-series folder."""
    if is_nifti(path):
        return read_nifti(path)
    if is_dicom_series(path):
        return read_dicom_series(path)
    raise DataError(f"{path}: not a volume; 3D data (data.spatial_dims=3) reads .nii / .nii.gz files or "
                    "folders of one DICOM series each")


def to_grid(volume: np.ndarray, spacing, size: int, mode: str, interpolation: str) -> np.ndarray:
    """Crop (``center_crop``: to the shortest physical extent) and resample to ``size``^3."""
    from scipy import ndimage

    spacing = np.asarray(spacing, dtype=np.float64)
    if mode == "center_crop":
        extent = np.asarray(volume.shape) * spacing
        keep = np.minimum(np.rint(extent.min() / spacing).astype(int), volume.shape)
        starts = (np.asarray(volume.shape) - keep) // 2
        volume = volume[tuple(slice(s, s + k) for s, k in zip(starts, keep))]
    if volume.shape == (size, size, size):
        return volume
    factors = [size / n for n in volume.shape]
    out = ndimage.zoom(volume, factors, order=1 if interpolation == "linear" else 0, mode="nearest", grid_mode=True)
    return out[:size, :size, :size]


def window_of(window) -> tuple[float, float] | None:
    if window is None:
        return None
    if isinstance(window, str):
        return CT_WINDOWS[window]
    return float(window[0]), float(window[1])


def to_uint8(volume: np.ndarray, intensity: str, window=None) -> np.ndarray:
    """Map intensities to 0..255 (see the module docstring); ``uint8`` input is kept."""
    if volume.dtype == np.uint8 and window is None:
        return volume
    values = np.where(np.isfinite(volume), volume, 0.0).astype(np.float32)
    if window is not None:
        level, width = window_of(window)
        low, high = level - width / 2, level + width / 2
    elif intensity == "percentile":
        low, high = np.percentile(values, [0.5, 99.5])
    else:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.rint(np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def load_volume(path: str | Path, size: int, mode: str, options: dict) -> np.ndarray:
    """A volume file or series as the model reads it: ``uint8 (S, S, S, 1)``. ``options`` is
    ``data.volume`` as a dict (interpolation, window, intensity), as a checkpoint records it."""
    return model_input(*read_volume(path), size, mode, options)


def model_input(volume: np.ndarray, spacing, size: int, mode: str, options: dict) -> np.ndarray:
    """A read volume (z, y, x) on the model's grid with its intensity options: ``uint8 (S, S, S, 1)``."""
    grid = to_grid(volume, spacing, size, mode, options["interpolation"])
    return to_uint8(grid, options["intensity"], options["window"])[..., None]


def fit_volume(volume: np.ndarray, size: int, options: dict) -> np.ndarray:
    """An in-memory ``(D, H, W[, 1])`` volume (MedMNIST 3D) resampled to ``(S, S, S, 1)`` uint8;
    the voxels are taken as isotropic (the MedMNIST files are)."""
    volume = volume[..., 0] if volume.ndim == 4 else volume
    if volume.shape != (size, size, size):
        volume = to_grid(volume.astype(np.float32), (1.0, 1.0, 1.0), size, "squash", options["interpolation"])
    return to_uint8(volume, options["intensity"], options["window"])[..., None]


def orthogonal_slices(volumes: np.ndarray) -> np.ndarray:
    """(N, D, H, W[, 1]) -> (N, H, W, 3): the central axial, coronal and sagittal slices, the 2.5D
    view a 2D network reads (``data.spatial_dims=2`` on volume data)."""
    volumes = volumes[..., 0] if volumes.ndim == 5 else volumes
    n, d, h, w = volumes.shape
    if not (d == h == w):
        raise DataError(f"3D volumes must be cubic to stack orthogonal slices, got {volumes.shape}")
    stacked = np.stack([volumes[:, d // 2], volumes[:, :, h // 2], volumes[:, :, :, w // 2]], axis=-1)
    if stacked.dtype != np.uint8:
        lo, hi = float(stacked.min()), float(stacked.max())
        stacked = np.round((stacked - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    return stacked
