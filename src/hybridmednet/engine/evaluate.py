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

from hybridmednet.engine.run import Run
from hybridmednet.engine.run_dir import RunDir, git_commit, recorded_checkpoint
from hybridmednet.errors import DataError
from hybridmednet.metrics import compute_metrics
from hybridmednet.utils.io import atomic_write, atomic_write_json, sha256_file


def write_predictions(path: Path, ids, probs: np.ndarray, targets: np.ndarray, class_names: list[str], multilabel: bool,
                      groups=None) -> None:
    """One row per case; a ``group`` column (patient/lesion id) when the split has group ids, so
    intervals and paired tests recomputed from the file can resample groups."""
    has_groups = groups is not None and any(g is not None for g in groups)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["id", "target"] + (["group"] if has_groups else []) + [f"prob_{c}" for c in class_names]
                         + ["predicted"])
            for i, sample_id in enumerate(ids):
                if multilabel:
                    target = "|".join(c for c, t in zip(class_names, targets[i]) if t > 0)
                    pred = "|".join(c for c, p in zip(class_names, probs[i]) if p >= 0.5)
                else:
                    target, pred = class_names[int(targets[i])], class_names[int(np.argmax(probs[i]))]
                group = [groups[i] if groups[i] is not None else ""] if has_groups else []
                out.writerow([sample_id, target] + group + [f"{p:.6f}" for p in probs[i]] + [pred])

    atomic_write(path, write)


def read_predictions(path: Path, class_names: list[str], multilabel: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, probabilities, targets) from an evaluate predictions CSV, targets as class indices
    (single-label) or a 0/1 matrix (multi-label, ``|``-joined names in the file). The group ids,
    when the file has them, come from :func:`read_groups`. A ``.gz`` file (kept by benchmarks) is
    read the same way."""
    rows = _rows(path)
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


def _rows(path: Path) -> list[dict]:
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def read_groups(path: Path) -> dict[str, str | None] | None:
    """id -> patient/lesion id from a predictions CSV's ``group`` column (None when it has none)."""
    rows = _rows(path)
    if not rows or "group" not in rows[0]:
        return None
    return {row["id"]: row["group"] or None for row in rows}


def evaluate_run(run_path: str | Path, split: str = "test", *, n_bootstrap: int | None = None,
                 device: str | None = None, without_clinical: bool = False, precision: str = "fp32") -> dict:
    """``without_clinical``: a multimodal model evaluated as if no case had clinical input (robustness
    to missing text); stored under ``<split>_without_clinical``. The ``metrics.json`` entry records the
    checkpoint's sha256 and the sha256 of the predictions CSV written beside it; entries computed
    from an earlier checkpoint of the run (before ``train --overwrite`` or ``--resume``) are dropped."""
    run = Run.load(run_path, device=device, precision=precision)
    data = run.prepare((split,))
    part = data.splits[split]
    key = split
    if without_clinical:
        if part.clinical is None:
            raise DataError(f"{run.path}: --without-clinical needs a multimodal run (data.clinical); this one has none")
        part.clinical = part.clinical | {"clinical_present": np.zeros_like(part.clinical["clinical_present"])}
        key = f"{split}_without_clinical"
    probs = run.predict(part.images, part.clinical)
    return score_split(run, part, probs, split, key=key, source=data.source, n_bootstrap=n_bootstrap)


def score_split(run: Run, part, probs: np.ndarray, split: str, *, key: str | None = None, source: str = "",
                n_bootstrap: int | None = None) -> dict:
    """Metrics with intervals of ``probs`` on ``part`` (cluster bootstrap when it has group ids), the
    predictions CSV, and the ``metrics.json[key]`` entry: for callers that already predicted the split
    (the report), so the model is not loaded and run again."""
    cfg, key = run.config, key or split
    n_boot = cfg.eval.n_bootstrap if n_bootstrap is None else n_bootstrap
    result = compute_metrics(probs, part.targets, run.class_names, multilabel=run.multilabel,
                             n_bootstrap=n_boot, seed=cfg.seed, groups=part.groups)  # groups: a cluster bootstrap
    predictions = run.path / f"predictions_{key}.csv"
    write_predictions(predictions, part.ids, probs, part.targets, run.class_names, run.multilabel, groups=part.groups)
    result.update(split=split, n=len(part), data_source=source, model=cfg.model.name, checkpoint=run.provenance(),
                  git_commit=git_commit(), evaluated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return record_evaluation(run.dir, key, result, predictions, run.checkpoint_sha256)


def record_evaluation(run_dir: RunDir, key: str, result: dict, predictions: Path, checkpoint_sha256: str) -> dict:
    """Store ``result`` as ``metrics.json[key]``, tied to the checkpoint and to the predictions CSV
    by sha256; entries of earlier checkpoints are dropped in the same atomic write."""
    result = dict(result, checkpoint_sha256=checkpoint_sha256,
                  predictions={"file": predictions.name, "sha256": sha256_file(predictions)})
    merged = read_metrics(run_dir, checkpoint_sha256)
    merged[key] = result
    atomic_write_json(run_dir.metrics_json, merged)
    return result


def read_metrics(run_dir: RunDir, checkpoint_sha256: str) -> dict:
    """``metrics.json`` entries that describe the checkpoint ``checkpoint_sha256`` (entries left by an
    earlier model of the run are dropped)."""
    path = run_dir.metrics_json
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, dict) and recorded_checkpoint(v) == checkpoint_sha256}


def current_predictions(run_dir: RunDir, key: str) -> Path:
    """``predictions_<key>.csv`` if ``evaluate`` wrote it for the run's current best checkpoint and
    it is unchanged since; otherwise a :class:`DataError` that says what to run."""
    path = run_dir.path / f"predictions_{key}.csv"
    split = key.removesuffix("_without_clinical")
    command = f"hybridmednet evaluate {run_dir.path} --split {split}" + (" --without-clinical" if key != split else "")
    if not path.exists():
        have = sorted(p.name for p in run_dir.path.glob("predictions_*.csv")) or ["none"]
        raise DataError(f"{path}: missing; run `{command}` first (predictions in this run: {', '.join(have)})")
    sha = run_dir.checkpoint_sha256()
    entry = read_metrics(run_dir, sha).get(key)
    if entry is None:
        raise DataError(f"{path}: metrics.json holds no '{key}' entry for the run's best checkpoint ({sha[:12]}), so the "
                        f"file may come from an earlier model of the run (train --overwrite / --resume); run `{command}`")
    if (entry.get("predictions") or {}).get("sha256") != sha256_file(path):
        raise DataError(f"{path}: changed since `evaluate` wrote it (sha256 differs from metrics.json); run `{command}` again")
    return path
