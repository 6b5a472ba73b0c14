"""``hybridmednet evaluate RUN --split test``: metrics with 95% bootstrap CIs -> ``metrics.json``.

The checkpoint evaluated is the one chosen on validation during training; nothing here can
change that choice, so evaluating on test is a single, honest read-out.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np

from hybridmednet.data.pipeline import prepare_data
from hybridmednet.engine.inference import predict_arrays
from hybridmednet.engine.run_dir import RunDir, git_commit, load_trained_model
from hybridmednet.engine.runtime import make_runtime
from hybridmednet.errors import DataError
from hybridmednet.metrics import compute_metrics
from hybridmednet.utils.io import atomic_write, atomic_write_json


def write_predictions(path: Path, ids, probs: np.ndarray, targets: np.ndarray, class_names: list[str], multilabel: bool) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["id", "target"] + [f"prob_{c}" for c in class_names] + ["predicted"])
            for i, sample_id in enumerate(ids):
                if multilabel:
                    target = "|".join(c for c, t in zip(class_names, targets[i]) if t > 0)
                    pred = "|".join(c for c, p in zip(class_names, probs[i]) if p >= 0.5)
                else:
                    target, pred = class_names[int(targets[i])], class_names[int(np.argmax(probs[i]))]
                out.writerow([sample_id, target] + [f"{p:.6f}" for p in probs[i]] + [pred])

    atomic_write(path, write)


def read_predictions(path: Path, class_names: list[str], multilabel: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, probabilities, targets) from an evaluate predictions CSV, targets as class indices
    (single-label) or a 0/1 matrix (multi-label, ``|``-joined names in the file)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [f"prob_{c}" for c in class_names]
    if not rows or any(c not in rows[0] for c in ["id", "target", *columns]):
        raise DataError(f"{path}: expected the columns id, target, {', '.join(columns)} written by `hybridmednet "
                        "evaluate`; re-run evaluate for this run")
    index = {c: k for k, c in enumerate(class_names)}
    targets = np.zeros((len(rows), len(class_names)), np.int64) if multilabel else np.zeros(len(rows), np.int64)
    for i, row in enumerate(rows):
        names = [n for n in row["target"].split("|") if n] if multilabel else [row["target"]]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DataError(f"{path}, row {i + 2}: target {unknown[0]!r} is not one of the model's classes {class_names}")
        if multilabel:
            targets[i, [index[n] for n in names]] = 1
        else:
            targets[i] = index[names[0]]
    probs = np.array([[float(row[c]) for c in columns] for row in rows])
    return [row["id"] for row in rows], probs, targets


def evaluate_run(run_path: str | Path, split: str = "test", *, n_bootstrap: int | None = None,
                 device: str | None = None, without_clinical: bool = False) -> dict:
    """``without_clinical``: a multimodal model evaluated as if no case had clinical input (robustness
    to missing text); stored under ``<split>_without_clinical``."""
    run = RunDir(Path(run_path))
    model, meta, cfg = load_trained_model(run)
    runtime = make_runtime(cfg.train, device=device)
    model = model.to(runtime.device)
    if runtime.channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    data = prepare_data(cfg.data, splits_wanted=(split,), clinical_spec=meta.get("clinical_spec"))
    if data.class_names != meta["class_names"]:
        raise DataError(f"{data.source}: classes {data.class_names} differ from the model's {meta['class_names']}")
    part = data.splits[split]
    key = split
    if without_clinical:
        if part.clinical is None:
            raise DataError(f"{run.path}: --without-clinical needs a multimodal run (data.clinical); this one has none")
        part.clinical = part.clinical | {"clinical_present": np.zeros_like(part.clinical["clinical_present"])}
        key = f"{split}_without_clinical"
    prep = meta["preprocessing"]
    probs, _ = predict_arrays(model, part.images, mean=prep["mean"], std=prep["std"], runtime=runtime,
                              multilabel=data.multilabel, batch_size=cfg.data.eval_batch_size, extras=part.clinical)
    n_boot = cfg.eval.n_bootstrap if n_bootstrap is None else n_bootstrap
    result = compute_metrics(probs, part.targets, data.class_names, multilabel=data.multilabel,
                             n_bootstrap=n_boot, seed=cfg.seed)
    result.update(split=split, n=len(part), data_source=data.source, model=cfg.model.name,
                  checkpoint={"epoch": meta["epoch"], "variant": meta.get("variant"), "weights_sha256": meta["weights_sha256"],
                              "selected_on": f"val {cfg.train.monitor}"},
                  git_commit=git_commit(), evaluated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    merged = json.loads(run.metrics_json.read_text()) if run.metrics_json.exists() else {}
    merged[key] = result
    atomic_write_json(run.metrics_json, merged)
    write_predictions(run.path / f"predictions_{key}.csv", part.ids, probs, part.targets, data.class_names, data.multilabel)
    return result
