"""Everything a reviewer asks of a medical classifier, computed for one run.

Every choice (temperature, abstention threshold, operating thresholds) is fitted on the
validation split and only then applied to test. The result is a JSON-ready dict that the
HTML report renders and ``report_data.json`` stores; ``calibration.json`` keeps what
``predict`` needs to report uncertainty and abstain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hybridmednet.engine.evaluate import read_metrics, score_split
from hybridmednet.engine.run import Run
from hybridmednet.metrics.calibration import (
    TemperatureScaler,
    expected_calibration_error,
    logits_from_probs,
)
from hybridmednet.metrics.operating_points import group_operating_points, operating_points
from hybridmednet.metrics.uncertainty import (
    accuracy_coverage_curve,
    choose_abstain_threshold,
    correct_predictions,
    predictive_entropy,
)
from hybridmednet.utils.io import atomic_write_json

ABSTAIN_VAL_COVERAGE = 0.8  # keep the 80% most certain validation cases; the rest go to a human
OOD_VAL_QUANTILE = 0.05  # the service's out-of-distribution flag: less confident than 95% of val cases


def calibrate(val_probs, val_targets, test_probs, test_targets, multilabel: bool) -> tuple[dict, TemperatureScaler]:
    scaler = TemperatureScaler(multilabel=multilabel).fit(logits_from_probs(val_probs, multilabel), val_targets)
    calibrated = scaler.transform(logits_from_probs(test_probs, multilabel))
    before = expected_calibration_error(test_probs, test_targets, multilabel=multilabel)
    after = expected_calibration_error(calibrated, test_targets, multilabel=multilabel)
    return {"temperature": scaler.temperature, "fitted_on": "val", "test_before": before, "test_after": after}, scaler


def uncertainty_analysis(run: Run, val, test, val_cal, test_cal, *, multilabel: bool) -> dict:
    """Predictive entropy of calibrated probabilities, and MC-dropout where the model has dropout."""
    val_unc = predictive_entropy(val_cal, multilabel=multilabel)
    test_unc = predictive_entropy(test_cal, multilabel=multilabel)
    threshold = choose_abstain_threshold(val_unc, correct_predictions(val_cal, val.targets), target_coverage=ABSTAIN_VAL_COVERAGE)
    keep = test_unc <= threshold
    correct = correct_predictions(test_cal, test.targets)
    curves = {"predictive entropy": accuracy_coverage_curve(test_cal, test.targets, test_unc)}
    if run.has_dropout():
        mc_probs, mc_unc = run.mc_dropout(test.images, test.clinical, n_samples=10, uncertainty="mi")
        curves["MC-dropout mutual information (10 passes)"] = accuracy_coverage_curve(mc_probs, test.targets, mc_unc)
    return {
        "measure": "normalised predictive entropy of temperature-scaled probabilities",
        "abstain_threshold": threshold, "chosen_on": f"val, keeping {ABSTAIN_VAL_COVERAGE:.0%} of cases",
        "test_coverage": float(keep.mean()), "test_acc_kept": float(correct[keep].mean()) if keep.any() else None,
        "test_acc_all": float(correct.mean()), "curves": curves, "test_uncertainty": test_unc,
    }


def conformal_analysis(cfg, val_cal, val_targets, test_cal, test_targets, names: list[str], multilabel: bool) -> dict | None:
    """Prediction sets calibrated on val (temperature-scaled probabilities), scored on test: the
    configured method, plus every method with and without Mondrian calibration for comparison."""
    if multilabel:
        return None
    from hybridmednet.metrics.conformal import METHODS, ConformalSets, resplit_coverage, set_coverage

    c = cfg.eval.conformal
    table, chosen = {}, None
    for method in METHODS:
        for mondrian in (False, True):
            fitted = ConformalSets(c.alpha, method, mondrian=mondrian).fit(val_cal, val_targets)
            row = table[f"{method}{' (Mondrian)' if mondrian else ''}"] = set_coverage(fitted.predict(test_cal), test_targets, names)
            if c.resplits:
                row["resplit_coverage"] = resplit_coverage(val_cal, val_targets, test_cal, test_targets, c.alpha, method,
                                                           mondrian=mondrian, n_resplits=c.resplits, seed=cfg.seed)
            if (method, mondrian) == (c.method, c.mondrian):
                chosen = fitted
    return {"alpha": c.alpha, "method": c.method, "mondrian": c.mondrian, "n_calibration": chosen.n_calibration,
            "calibrated_on": "val, temperature-scaled probabilities", "library": "crepes (non-smoothed p-values)",
            "test": table[f"{c.method}{' (Mondrian)' if c.mondrian else ''}"], "all_methods": table,
            "_calibration": {"scores": chosen.calibration_scores.tolist(), "targets": chosen.calibration_targets.tolist()}}


def subgroup_analysis(cfg, test, probs, class_names, multilabel: bool, n_bootstrap: int) -> dict | None:
    if cfg.eval.subgroups is None:
        return None
    from hybridmednet.data.metadata import load_subgroup_values
    from hybridmednet.metrics.subgroups import age_band, subgroup_metrics

    values = load_subgroup_values(cfg.eval.subgroups, test.ids)
    for name in cfg.eval.subgroups.age_columns:
        values[name] = [age_band(v) if v is not None else None for v in values[name]]
    return subgroup_metrics(probs, test.targets, values, class_names, multilabel=multilabel,
                            n_bootstrap=n_bootstrap, seed=cfg.seed, clusters=test.groups)


def gallery_indices(probs: np.ndarray, targets: np.ndarray, uncertainty: np.ndarray, multilabel: bool, k: int) -> dict:
    """Most confident correct, most confident wrong, and most uncertain test cases."""
    correct = correct_predictions(probs, targets)
    confidence = probs.max(axis=1)
    right = np.flatnonzero(correct)[np.argsort(-confidence[correct])][:k]
    wrong = np.flatnonzero(~correct)[np.argsort(-confidence[~correct])][:k]
    unsure = np.argsort(-uncertainty)[:k]
    return {"correct (most confident)": right.tolist(), "wrong (most confident)": wrong.tolist(), "most uncertain": unsure.tolist()}


def analyse_run(run_path: str | Path, *, n_bootstrap: int | None = None, subgroup_bootstrap: int = 200,
                gallery_size: int = 4, device: str | None = None, with_cam: bool = True) -> dict:
    """``subgroup_bootstrap``: fewer resamples for the many small subgroups (AUC per resample is
    the slow part); headline metrics keep ``eval.n_bootstrap``."""
    run = Run.load(run_path, device=device)
    cfg, meta = run.config, run.meta
    n_boot = cfg.eval.n_bootstrap if n_bootstrap is None else n_bootstrap
    data = run.prepare(("val", "test"))
    val, test = data.splits["val"], data.splits["test"]
    multilabel, names = data.multilabel, data.class_names
    mean, std = run.preprocessing["mean"], run.preprocessing["std"]
    val_probs, test_probs = run.predict(val.images, val.clinical), run.predict(test.images, test.clinical)
    metrics = read_metrics(run.dir, run.checkpoint_sha256)  # only entries computed from this checkpoint
    if "test" not in metrics:  # scored from the predictions just made: no second model load or test pass
        metrics["test"] = score_split(run, test, test_probs, "test", source=data.source, n_bootstrap=n_boot)
    calibration, scaler = calibrate(val_probs, val.targets, test_probs, test.targets, multilabel)
    val_cal = scaler.transform(logits_from_probs(val_probs, multilabel))
    test_cal = scaler.transform(logits_from_probs(test_probs, multilabel))
    uncertainty = uncertainty_analysis(run, val, test, val_cal, test_cal, multilabel=multilabel)
    conformal = conformal_analysis(cfg, val_cal, val.targets, test_cal, test.targets, names, multilabel)
    record = {"temperature": calibration["temperature"], "abstain_threshold": uncertainty["abstain_threshold"],
              "uncertainty": uncertainty["measure"], "chosen_on": "val", "checkpoint_sha256": run.checkpoint_sha256}
    if not multilabel:  # the service flags cases less confident than all but 5% of val: drift shows on /metrics
        record["ood"] = {"measure": "max temperature-scaled probability", "val_quantile": OOD_VAL_QUANTILE,
                         "threshold": float(np.quantile(np.asarray(val_cal).max(axis=1), OOD_VAL_QUANTILE))}
    if conformal is not None:  # what predict needs to build the same sets for new cases
        record["conformal"] = {k: conformal[k] for k in ("alpha", "method", "mondrian")} | conformal["_calibration"]
    points = operating_points(val_probs, val.targets, test_probs, test.targets, names, multilabel=multilabel,
                              sensitivity_target=cfg.eval.sensitivity_target, n_bootstrap=n_boot, seed=cfg.seed,
                              test_groups=test.groups)
    risk = None
    if cfg.eval.risk_groups and not multilabel:
        risk = group_operating_points(val_probs, val.targets, test_probs, test.targets, names, cfg.eval.risk_groups,
                                      sensitivity_target=cfg.eval.risk_sensitivity, n_bootstrap=n_boot, seed=cfg.seed,
                                      test_groups=test.groups)
        record["risk_groups"] = {g: {"members": r["members"], "threshold": r["threshold"],
                                     "sensitivity_target": r["sensitivity_target"]} for g, r in risk.items() if "threshold" in r}
    atomic_write_json(run.path / "calibration.json", record)  # everything predict applies, fitted on val
    result = {
        "run": str(run.path), "model": cfg.model.name, "checkpoint_sha256": run.checkpoint_sha256, "class_names": names, "multilabel": multilabel,
        "config": cfg.model_dump(mode="json"), "checkpoint": {k: meta[k] for k in ("epoch", "variant", "weights_sha256", "git_commit")},
        "val_metrics": meta.get("val_metrics", {}), "test": metrics["test"], "calibration": calibration,
        "uncertainty": {k: v for k, v in uncertainty.items() if k != "test_uncertainty"},
        "operating_points": points, "conformal": conformal, "risk_groups": risk,
        "subgroups": subgroup_analysis(cfg, test, test_probs, names, multilabel, min(n_boot, subgroup_bootstrap)),
        "data_summary": json.loads((run.path / "data_summary.json").read_text()),
        "train_summary": json.loads((run.path / "train_summary.json").read_text()),
    }
    picks = gallery_indices(test_probs, test.targets, uncertainty["test_uncertainty"], multilabel, gallery_size)
    result["gallery"] = {title: [{"index": int(i), "id": test.ids[i], "true": _label(test.targets[i], names, multilabel),
                                  "predicted": _label(test_probs[i], names, multilabel, probs=True),
                                  "confidence": float(test_probs[i].max())} for i in idx] for title, idx in picks.items()}
    if with_cam and test.clinical is None:  # Grad-CAM explains image-only models; multimodal ones are skipped
        result["gallery_cams"] = _cams(run.cpu_float_model(), test.images, picks, mean, std, test_probs)
    result["_probs"] = {"test": test_probs, "test_targets": test.targets}
    return result


def _label(row, names, multilabel, probs: bool = False) -> str:
    if multilabel:
        return "|".join(n for n, v in zip(names, row) if v >= 0.5) or "(none)"
    return names[int(np.argmax(row))] if probs else names[int(row)]


def _cams(model, images, picks, mean, std, probs) -> dict:
    from hybridmednet.explain.cam import compute_cam, overlay, volume_montage

    out = {}
    for title, idx in picks.items():
        if not len(idx):
            out[title] = []
            continue
        chosen = images[idx]
        cams = compute_cam(model, chosen, mean=mean, std=std, method="gradcam",
                           target_classes=[int(np.argmax(probs[i])) for i in idx])
        if chosen.ndim == 5:  # volumes: axial / coronal / sagittal slices through the CAM peak
            pairs = [volume_montage(chosen[j], cams[j]) for j in range(len(idx))]
            out[title] = [(image, overlay(image, cam)) for image, cam in pairs]
        else:
            out[title] = [(chosen[j], overlay(chosen[j], cams[j])) for j in range(len(idx))]
    return out
