"""``hybridmednet evaluate RUN --data CONFIG_OR_SOURCE``: score a trained run on another labelled dataset.

External validation asks what a model's validation-chosen settings are worth elsewhere. The data
is read with the run's own preprocessing (size, resize mode, channels); class names are matched
case-insensitively, with ``--class-map old=new`` for the rest; classes the model has but the data
lacks are reported, not silently dropped (their per-class figures are absent), and data classes
the model cannot predict are an error. Reported beside the usual metrics and intervals (cluster
bootstrap when the data has group ids): how calibration shifts (ECE of the raw probabilities and
after the temperature fitted on the original val split) and the sensitivity / specificity of the
operating points chosen on the original val split. Nothing is fitted on the external data.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np

from hybridmednet.engine.run import Run
from hybridmednet.engine.run_dir import git_commit
from hybridmednet.errors import ConfigError, DataError
from hybridmednet.utils.io import atomic_write_json


def parse_class_map(items: list[str] | None) -> dict[str, str]:
    """``["NORMAL=normal", ...]`` -> {"normal": "normal"} (keys lower-cased: matching is case-insensitive)."""
    mapping = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ConfigError(f"--class-map {item!r}: expected DATA_CLASS=MODEL_CLASS, e.g. PNEUMONIA=pneumonia")
        mapping[old.strip().lower()] = new.strip()
    return mapping


def _source(spec: str, run: Run):
    """A data config's source (YAML file or preset) or a folder / CSV / npz path."""
    from hybridmednet.config.loader import load_config
    from hybridmednet.config.schema import DataConfig
    from hybridmednet.data.infer import source_for_path
    from hybridmednet.paths import resolve_config_path

    path = resolve_config_path(spec)
    if path.suffix in (".yaml", ".yml"):
        return load_config(path).data.source
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise DataError(f"--data {spec}: not found; give a data config (YAML or preset), an image folder, a CSV or an npz")
    source = source_for_path(path)
    if source["kind"] == "csv":  # ISIC-style ground truth: image,MEL,NV,... one-hot columns
        import pandas as pd

        head = pd.read_csv(path, nrows=50, dtype=str)
        if "label" not in head.columns and "path" not in head.columns:
            names = [c for c in head.columns[1:] if set(head[c].dropna().str.strip()) <= {"0", "1", "0.0", "1.0"}]
            if names:
                source |= {"path_column": None, "path_template": "{" + head.columns[0] + "}" + _image_suffix(path.parent),
                           "id_column": head.columns[0], "label_column": None, "label_columns": names, "one_hot": True}
    return DataConfig.model_validate({"source": source}).source


def _image_suffix(folder: Path) -> str:
    for suffix in (".jpg", ".jpeg", ".png", ".dcm", ".tif"):
        if any(folder.rglob(f"*{suffix}")):
            return suffix
    return ".jpg"


def _match_classes(data_names: list[str], model_names: list[str], class_map: dict[str, str], source: str) -> list[int]:
    """Index into the model's classes for each data class; an unmatched data class is an error."""
    by_lower = {n.lower(): k for k, n in enumerate(model_names)}
    index = []
    for name in data_names:
        target = class_map.get(name.lower(), name)
        if target.lower() not in by_lower:
            raise DataError(f"{source}: class {name!r} matches none of the model's classes {model_names} "
                            f"(case-insensitive); map it with --class-map {re.sub(r'[ =]', '_', name)}=<model class>")
        index.append(by_lower[target.lower()])
    return index


def external_evaluate(run_path: str | Path, data: str, *, class_map: list[str] | None = None, split: str | None = None,
                      n_bootstrap: int | None = None, out: str | Path | None = None, device: str | None = None,
                      skip_bad: bool = False) -> dict:
    from hybridmednet.data.materialize import materialize
    from hybridmednet.data.sources import build_table
    from hybridmednet.metrics import compute_metrics
    from hybridmednet.engine.predict import uncertainty_columns
    from hybridmednet.metrics.calibration import expected_calibration_error
    from hybridmednet.metrics.operating_points import operating_points

    run = Run.load(run_path, device=device)
    if run.multilabel or run.clinical_spec:
        raise DataError(f"{run.path}: external validation supports single-label image-only runs")
    cfg = run.config
    source = _source(data, run)
    table = build_table(source)
    if split is None:
        split = "test" if table.splits is not None and "test" in set(table.splits) else "all"
    if split != "all":
        if table.splits is None:
            raise DataError(f"--data {data}: has no {split!r} split; use --split all")
        table = table.subset(np.flatnonzero(table.splits == split))
    mapping = _match_classes(table.class_names, run.class_names, parse_class_map(class_map), table.source)
    prep = run.preprocessing
    images, ok, skipped = materialize(table, prep["image_size"], prep["channels"], prep["resize"],
                                      skip_bad=skip_bad, use_cache=cfg.data.cache)
    keep = np.flatnonzero(ok)
    table, images = table.subset(keep), images[keep]
    targets = np.asarray(mapping)[table.targets]
    probs = run.predict(images)
    n_boot = cfg.eval.n_bootstrap if n_bootstrap is None else n_bootstrap
    result = compute_metrics(probs, targets, run.class_names, multilabel=False, n_bootstrap=n_boot, seed=cfg.seed,
                             groups=table.groups)
    present = sorted(set(targets.tolist()))
    missing = [run.class_names[k] for k in range(len(run.class_names)) if k not in present]

    val = run.prepare(("val",)).splits["val"]
    val_probs = run.predict(val.images, val.clinical)
    shift = {"ece_raw": expected_calibration_error(probs, targets)}
    if run.calibration is not None:
        calibrated, _ = uncertainty_columns(probs, run.calibration, False)  # predict's temperature scaling
        shift |= {"temperature": run.calibration["temperature"], "ece_after_val_temperature":
                  expected_calibration_error(calibrated, targets)}
    else:
        shift["note"] = f"no calibration.json for this checkpoint; run `hybridmednet report {run.path}` for the temperature"
    points = operating_points(val_probs, val.targets, probs, targets, run.class_names, multilabel=False,
                              sensitivity_target=cfg.eval.sensitivity_target, n_bootstrap=n_boot, seed=cfg.seed,
                              test_groups=table.groups)
    points["reported_on"] = "external data"
    result |= {"data": str(data), "data_source": table.source, "split": split, "n": len(targets),
               "n_skipped": len(skipped), "class_mapping": {n: run.class_names[k] for n, k in zip(table.class_names, mapping)},
               "classes_missing_from_data": missing, "calibration_shift": shift, "operating_points_from_val": points,
               "checkpoint": run.provenance(), "checkpoint_sha256": run.checkpoint_sha256, "git_commit": git_commit(),
               "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    out = Path(out) if out else run.path / f"external_{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(str(data)).name)}.json"
    atomic_write_json(out, result)
    result["out"] = str(out)
    return result
