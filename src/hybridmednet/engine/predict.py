"""``hybridmednet predict RUN <images | folder | csv>``: class probabilities for new images.

Images get exactly the training preprocessing recorded in the checkpoint (size, resize mode,
channels, mean/std). Output: one CSV row per image with ``prob_<class>`` columns, the predicted
label(s), an ``uncertainty`` column (normalised predictive entropy; probabilities are
temperature-scaled when ``calibration.json`` exists) and, with ``abstain``, whether the case
should go to a human instead.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from hybridmednet.data.imageio import load_image
from hybridmednet.data.materialize import fit_to_square
from hybridmednet.engine.inference import predict_arrays
from hybridmednet.engine.run_dir import load_trained_model
from hybridmednet.engine.runtime import make_runtime
from hybridmednet.errors import DataError
from hybridmednet.utils.io import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", ".gif", ".webp")


def expand_inputs(inputs: list[str], path_column: str = "path") -> list[str]:
    """Image files as given; folders searched recursively; CSVs read for ``path_column``."""
    paths: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
        elif p.suffix.lower() == ".csv":
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


def load_calibration(run_path: str | Path, meta: dict) -> dict | None:
    """``calibration.json`` (temperature and abstention threshold, fitted on val by ``report``),
    if it was fitted for this very checkpoint."""
    path = Path(run_path) / "calibration.json"
    if not path.exists():
        return None
    calibration = json.loads(path.read_text())
    return calibration if calibration.get("checkpoint_sha256") == meta["weights_sha256"] else None


def uncertainty_columns(probs: np.ndarray, calibration: dict | None, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Temperature-scaled probabilities and their normalised predictive entropy (0 = certain)."""
    from hybridmednet.metrics.calibration import TemperatureScaler, logits_from_probs
    from hybridmednet.metrics.uncertainty import predictive_entropy

    if calibration is not None:
        scaler = TemperatureScaler(multilabel=multilabel)
        scaler.temperature = calibration["temperature"]
        probs = scaler.transform(logits_from_probs(probs, multilabel))
    return probs, predictive_entropy(probs, multilabel=multilabel)


def predict_files(run_path: str | Path, inputs: list[str], out_csv: str | Path, *, skip_bad: bool = False,
                  path_column: str = "path", device: str | None = None, abstain: bool = False) -> dict:
    """``abstain=True`` marks cases whose uncertainty exceeds the threshold chosen on val
    (needs ``calibration.json`` from ``hybridmednet report``)."""
    model, meta, cfg = load_trained_model(run_path)
    calibration = load_calibration(run_path, meta)
    if abstain and calibration is None:
        raise DataError(f"{run_path}: no calibration.json for this checkpoint; run `hybridmednet report {run_path}` "
                        "first (it fits the temperature and the abstention threshold on val)")
    prep, class_names = meta["preprocessing"], meta["class_names"]
    runtime = make_runtime(cfg.train, device=device)
    model = model.to(runtime.device)
    paths = expand_inputs(inputs, path_column)
    images, kept, failed = [], [], []
    for path in paths:
        try:
            image = load_image(path, prep["channels"])
        except DataError as exc:
            if not skip_bad:
                raise
            failed.append((path, str(exc)))
            continue
        images.append(fit_to_square(image, prep["image_size"], prep["resize"]))
        kept.append(path)
    probs, uncertainty = np.zeros((0, len(class_names))), np.zeros(0)
    if images:
        probs, _ = predict_arrays(model, np.stack(images), mean=prep["mean"], std=prep["std"], runtime=runtime,
                                  multilabel=meta["multilabel"], batch_size=cfg.data.eval_batch_size)
        probs, uncertainty = uncertainty_columns(probs, calibration, meta["multilabel"])
    threshold = calibration["abstain_threshold"] if (abstain and calibration) else None

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["path"] + [f"prob_{c}" for c in class_names] + ["predicted", "uncertainty", "abstained", "error"])
            for path, row, unc in zip(kept, probs, uncertainty):
                pred = ("|".join(c for c, p in zip(class_names, row) if p >= 0.5) if meta["multilabel"]
                        else class_names[int(np.argmax(row))])
                held = "" if threshold is None else str(bool(unc > threshold)).lower()
                out.writerow([path] + [f"{p:.6f}" for p in row] + [pred, f"{unc:.4f}", held, ""])
            for path, reason in failed:
                out.writerow([path] + [""] * len(class_names) + ["", "", "", reason])

    atomic_write(out_csv, write)
    result = {"n_predicted": len(kept), "n_skipped": len(failed), "out": str(out_csv)}
    if threshold is not None:
        result["n_abstained"] = int((uncertainty > threshold).sum())
    return result
