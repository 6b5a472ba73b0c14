"""``hybridmednet predict RUN <images | folder | csv>``: class probabilities for new images.

Images get exactly the training preprocessing recorded in the checkpoint (size, resize mode,
channels, mean/std). Output: one CSV row per image with ``prob_<class>`` columns, the predicted
label(s), an ``uncertainty`` column (normalised predictive entropy; probabilities are
temperature-scaled when ``calibration.json`` exists), the conformal prediction set (when
``report`` calibrated one on val) and, with ``abstain``, whether the case should go to a human.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridmednet.data.inputs import expand_inputs, load_inputs, write_predictions_csv
from hybridmednet.errors import DataError


def uncertainty_columns(probs: np.ndarray, calibration: dict | None, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Temperature-scaled probabilities and their normalised predictive entropy (0 = certain)."""
    from hybridmednet.metrics.calibration import logits_from_probs
    from hybridmednet.utils.probability import predictive_entropy, probabilities

    if calibration is not None:
        probs = probabilities(logits_from_probs(probs, multilabel), multilabel, calibration["temperature"])
    return probs, predictive_entropy(probs, multilabel=multilabel)


def fitted_conformal(calibration: dict | None):
    """The conformal sets ``report`` calibrated (val scores of temperature-scaled probabilities),
    fitted and ready to predict; None when the run has none. A service fits them once."""
    conformal = (calibration or {}).get("conformal")
    if not conformal:
        return None
    from hybridmednet.metrics.conformal import ConformalSets

    sets = ConformalSets(conformal["alpha"], conformal["method"], mondrian=conformal["mondrian"])
    return sets.fit_scores(conformal["scores"], conformal["targets"])


def conformal_sets(calibration: dict | None, calibrated_probs: np.ndarray) -> np.ndarray | None:
    """Prediction sets for new cases, or None when the run has no conformal calibration."""
    fitted = fitted_conformal(calibration)
    return None if fitted is None else fitted.predict(calibrated_probs)


def risk_group_columns(calibration: dict | None, raw_probs: np.ndarray, class_names: list[str]) -> dict[str, list]:
    """``prob_<group>`` (the sum of its classes' uncalibrated probabilities, the score the val
    threshold was chosen on) and ``flag_<group>`` (at or above that threshold) for each risk group
    ``report`` fitted (``eval.risk_groups``)."""
    columns: dict[str, list] = {}
    for group, rule in ((calibration or {}).get("risk_groups") or {}).items():
        score = raw_probs[:, [class_names.index(m) for m in rule["members"]]].sum(axis=1)
        columns[f"prob_{group}"] = [f"{v:.6f}" for v in score]
        columns[f"flag_{group}"] = [str(bool(v >= rule["threshold"])).lower() for v in score]
    return columns


def clinical_inputs_for(inputs: list[str], kept: list[str], clinical_cfg, spec: dict, path_column: str) -> dict:
    """A multimodal model's clinical inputs for the predicted images, read from the input CSV(s):
    one row per image with ``path_column`` and the columns the model was trained on (an empty
    cell means unknown and is rendered as such)."""
    import pandas as pd

    from hybridmednet.data.clinical import clinical_arrays, parse_numbers
    from hybridmednet.paths import cache_dir
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
                  path_column: str = "path", device: str | None = None, abstain: bool = False,
                  precision: str = "fp32") -> dict:
    """``abstain=True`` marks cases whose uncertainty exceeds the threshold chosen on val
    (needs ``calibration.json`` from ``hybridmednet report``)."""
    from hybridmednet.engine.run import Run

    run = Run.load(run_path, device=device, precision=precision)
    calibration = run.calibration
    if abstain and calibration is None:
        raise DataError(f"{run_path}: no calibration.json for this checkpoint; run `hybridmednet report {run_path}` "
                        "first (it fits the temperature and the abstention threshold on val)")
    class_names = run.class_names
    images, kept, failed = load_inputs(expand_inputs(inputs, path_column, run.preprocessing.get("spatial_dims", 2)),
                                        run.preprocessing, skip_bad=skip_bad)
    extras = None
    if run.clinical_spec and len(images):
        extras = clinical_inputs_for(inputs, kept, run.config.data.clinical, run.clinical_spec, path_column)
    probs, uncertainty, raw = np.zeros((0, len(class_names))), np.zeros(0), np.zeros((0, len(class_names)))
    if len(images):
        raw = run.predict(images, extras)
        probs, uncertainty = uncertainty_columns(raw, calibration, run.multilabel)
    threshold = calibration["abstain_threshold"] if (abstain and calibration) else None
    extra = risk_group_columns(calibration, raw, class_names)
    sets = conformal_sets(calibration, probs) if len(images) else None
    if sets is not None:
        extra = {"conformal_set": ["|".join(c for c, inside in zip(class_names, row) if inside) for row in sets]} | extra
    summary = write_predictions_csv(out_csv, kept, probs, uncertainty, class_names, run.multilabel,
                                    threshold=threshold, failed=failed, extra=extra)
    if sets is not None:
        summary["mean_set_size"] = float(sets.sum(axis=1).mean())
    return summary | {"checkpoint_sha256": run.checkpoint_sha256, "calibrated": calibration is not None}
