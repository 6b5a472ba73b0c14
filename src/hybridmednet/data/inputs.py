"""Images to predict: expand files / folders / CSVs of paths, decode them, fit them to the
model's input, and write one prediction row per image.

Shared by ``hybridmednet predict`` (PyTorch) and the torch-free ONNX runtime, so both read the
same pixels and write the same CSV. Needs numpy, pillow and OpenCV (pandas only for CSV inputs).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hybridmednet.data.imageio import load_image
from hybridmednet.data.resize import fit_to_square
from hybridmednet.errors import DataError
from hybridmednet.utils.io import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", ".gif", ".webp")


def expand_inputs(inputs: list[str], path_column: str = "path", spatial_dims: int = 2) -> list[str]:
    """Image files as given; folders searched recursively; CSVs read for ``path_column``. For a 3D
    model (``spatial_dims=3``) a DICOM-series folder is one input and other folders are searched
    for NIfTI files and series folders."""
    paths: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and spatial_dims == 3:
            from hybridmednet.data.volumes import find_volumes

            paths += [str(v) for v in find_volumes(p)]
        elif p.is_dir():
            paths += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
        elif p.suffix.lower() == ".csv":
            import pandas as pd

            frame = pd.read_csv(p, dtype=str, keep_default_na=False)
            if path_column not in frame.columns:
                raise DataError(f"{p}: no column '{path_column}'; the CSV has: {', '.join(frame.columns)}; "
                                "use --path-column")
            paths += [v if Path(v).is_absolute() else str(p.parent / v) for v in frame[path_column]]
        else:
            paths.append(str(p))
    if not paths:
        raise DataError(f"no images found in {inputs}")
    return paths


def load_inputs(paths: list[str], preprocessing: dict, *, skip_bad: bool = False
                ) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """``(images uint8 (N, S, S, C), kept paths, [(failed path, reason)])`` with the training
    preprocessing recorded in a checkpoint or an exported model (size, resize mode, channels;
    for 3D models the volume grid and intensity options, giving ``(N, S, S, S, 1)``)."""
    images, kept, failed = [], [], []
    size, channels = preprocessing["image_size"], preprocessing["channels"]
    dims = preprocessing.get("spatial_dims", 2)
    for path in paths:
        try:
            if dims == 3:
                from hybridmednet.data.volumes import load_volume

                images.append(load_volume(path, size, preprocessing["resize"], preprocessing["volume"]))
            else:
                images.append(fit_to_square(load_image(path, channels), size, preprocessing["resize"]))
        except DataError as exc:
            if not skip_bad:
                raise
            failed.append((path, str(exc)))
            continue
        kept.append(path)
    stacked = np.stack(images) if images else np.zeros((0,) + (size,) * dims + (channels,), np.uint8)
    return stacked, kept, failed


def write_predictions_csv(out_csv: str | Path, kept: list[str], probs: np.ndarray, uncertainty: np.ndarray,
                          class_names: list[str], multilabel: bool, *, threshold: float | None = None,
                          failed: list[tuple[str, str]] = (), extra: dict[str, list] | None = None) -> dict:
    """One row per image: ``prob_<class>``, the predicted label(s), normalised entropy, whether the
    case was held back (``threshold`` given), any ``extra`` columns (name -> one value per kept image:
    the conformal set, risk-group flags) and, for unreadable files, the reason. Returns the counts."""
    extra = extra or {}

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            out = csv.writer(handle)
            added = list(extra)
            out.writerow(["path"] + [f"prob_{c}" for c in class_names] + ["predicted", "uncertainty", "abstained"]
                         + added + ["error"])
            for i, (path, row, unc) in enumerate(zip(kept, probs, uncertainty)):
                pred = ("|".join(c for c, p in zip(class_names, row) if p >= 0.5) if multilabel
                        else class_names[int(np.argmax(row))])
                held = "" if threshold is None else str(bool(unc > threshold)).lower()
                values = [extra[name][i] for name in extra]
                out.writerow([path] + [f"{p:.6f}" for p in row] + [pred, f"{unc:.4f}", held] + values + [""])
            for path, reason in failed:
                out.writerow([path] + [""] * len(class_names) + ["", "", ""] + [""] * len(added) + [reason])

    atomic_write(out_csv, write)
    result = {"n_predicted": len(kept), "n_skipped": len(failed), "out": str(out_csv)}
    if threshold is not None:
        result["n_abstained"] = int((np.asarray(uncertainty) > threshold).sum())
    return result
