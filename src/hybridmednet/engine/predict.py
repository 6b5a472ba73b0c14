"""``hybridmednet predict RUN <images | folder | csv>``: class probabilities for new images.

Images get exactly the training preprocessing recorded in the checkpoint (size, resize mode,
channels, mean/std). Output: one CSV row per image with ``prob_<class>`` columns, the predicted
label(s), an ``uncertainty`` column (normalised predictive entropy; probabilities are
temperature-scaled when ``calibration.json`` exists) and, with ``abstain``, whether the case
should go to a human instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hybridmednet.data.inputs import expand_inputs, load_inputs, write_predictions_csv
from hybridmednet.errors import DataError


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
    from hybridmednet.metrics.calibration import logits_from_probs
    from hybridmednet.utils.probability import predictive_entropy, probabilities

    if calibration is not None:
        probs = probabilities(logits_from_probs(probs, multilabel), multilabel, calibration["temperature"])
    return probs, predictive_entropy(probs, multilabel=multilabel)


def clinical_inputs_for(inputs: list[str], kept: list[str], clinical_cfg, spec: dict, path_column: str) -> dict:
    """A multimodal model's clinical inputs for the predicted images, read from the input CSV(s):
    one row per image with ``path_column`` and the columns the model was trained on (an empty
    cell means unknown and is rendered as such)."""
    import pandas as pd

    from hybridmednet.data.clinical import clinical_arrays, parse_numbers
    from hybridmednet.data.materialize import cache_dir
    from hybridmednet.data.metadata import clean_value

    csvs = [Path(i) for i in inputs if Path(i).suffix.lower() == ".csv"]
    if len(csvs) != len(inputs):
        raise DataError(f"this model also takes clinical inputs ({', '.join(spec['columns'])}): pass a CSV with a "
                        f"'{path_column}' column and those columns (empty cell = unknown), not bare images or folders")
    rows = {}
    for path in csvs:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        absent = [c for c in spec["columns"] if c not in frame.columns]
        if absent:
            raise DataError(f"{path}: no column(s) {absent}, which the model was trained on; the CSV has: "
                            f"{', '.join(frame.columns)}; add them (empty cells mean unknown)")
        for row in frame.to_dict("records"):
            image = row[path_column] if Path(row[path_column]).is_absolute() else str(path.parent / row[path_column])
            rows[image] = row
    values = {c: [clean_value(rows[k][c]) for k in kept] for c in spec["columns"]}
    values = parse_numbers(clinical_cfg, values, kept, source=", ".join(map(str, csvs)))
    return clinical_arrays(clinical_cfg, spec, values, len(kept), cache_dir=cache_dir())


def predict_files(run_path: str | Path, inputs: list[str], out_csv: str | Path, *, skip_bad: bool = False,
                  path_column: str = "path", device: str | None = None, abstain: bool = False) -> dict:
    """``abstain=True`` marks cases whose uncertainty exceeds the threshold chosen on val
    (needs ``calibration.json`` from ``hybridmednet report``)."""
    from hybridmednet.engine.inference import predict_arrays
    from hybridmednet.engine.run_dir import load_trained_model
    from hybridmednet.engine.runtime import make_runtime

    model, meta, cfg = load_trained_model(run_path)
    calibration = load_calibration(run_path, meta)
    if abstain and calibration is None:
        raise DataError(f"{run_path}: no calibration.json for this checkpoint; run `hybridmednet report {run_path}` "
                        "first (it fits the temperature and the abstention threshold on val)")
    prep, class_names = meta["preprocessing"], meta["class_names"]
    runtime = make_runtime(cfg.train, device=device)
    model = model.to(runtime.device)
    images, kept, failed = load_inputs(expand_inputs(inputs, path_column), prep, skip_bad=skip_bad)
    extras = None
    if meta.get("clinical_spec") and len(images):
        extras = clinical_inputs_for(inputs, kept, cfg.data.clinical, meta["clinical_spec"], path_column)
    probs, uncertainty = np.zeros((0, len(class_names))), np.zeros(0)
    if len(images):
        probs, _ = predict_arrays(model, images, mean=prep["mean"], std=prep["std"], runtime=runtime,
                                  multilabel=meta["multilabel"], batch_size=cfg.data.eval_batch_size, extras=extras)
        probs, uncertainty = uncertainty_columns(probs, calibration, meta["multilabel"])
    threshold = calibration["abstain_threshold"] if (abstain and calibration) else None
    return write_predictions_csv(out_csv, kept, probs, uncertainty, class_names, meta["multilabel"],
                                 threshold=threshold, failed=failed)
