"""Volumes the tests write: NIfTI files and DICOM series (one folder, one file per slice)."""

from pathlib import Path

import numpy as np


def write_nifti(path: Path, volume_zyx: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0)) -> Path:
    """``volume_zyx`` stored as NIfTI (x, y, z) with an axis-aligned RAS affine."""
    import nibabel as nib

    affine = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume_zyx.transpose(2, 1, 0)), affine), str(path))
    return path


def write_dicom_series(folder: Path, hu_zyx: np.ndarray, spacing_zyx=(2.0, 0.8, 0.8), *, names=None,
                       slope: float = 1.0, intercept: float = -1024.0) -> Path:
    """One CT slice per file, stored as ``(HU - intercept) / slope`` uint16 with the rescale tags;
    ``names`` (one per slice, in z order) lets a test shuffle file names against positions."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    stored = np.rint((hu_zyx - intercept) / slope).astype(np.uint16)
    for z, pixels in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = names[z] if names is not None else f"slice{z:03d}.dcm"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID, series
        ds.Modality = "CT"
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelSpacing = [spacing_zyx[1], spacing_zyx[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, z * spacing_zyx[0]]
        ds.InstanceNumber = z + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = pixels.tobytes()
        ds.save_as(str(folder / name), enforce_file_format=True)
    return folder


def sphere(size: int, radius: float, value: float = 1.0, background: float = 0.0) -> np.ndarray:
    grid = np.indices((size, size, size)) - (size - 1) / 2
    return np.where((grid**2).sum(0) <= radius**2, value, background).astype(np.float32)
