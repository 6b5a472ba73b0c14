"""Seed ensembles and flip test-time augmentation of trained runs, evaluated once.

``hybridmednet evaluate RUN_A RUN_B ... --tta none,h`` averages the probabilities of each run's
validation-selected checkpoint over the given flips and over the runs. Nothing here chooses a
checkpoint or a threshold: whether TTA or the ensemble is worth it is decided by running the same
command on ``--split val`` first, and the test split is read once with the chosen setting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from hybridmednet.data.pipeline import attach_clinical, prepare_data
from hybridmednet.engine.run_dir import RunDir, git_commit, load_trained_model
from hybridmednet.engine.runtime import make_runtime
from hybridmednet.errors import ConfigError, DataError
from hybridmednet.metrics import compute_metrics
from hybridmednet.metrics.uncertainty import tta_predict
from hybridmednet.utils.io import atomic_write_json

__all__ = ["ensemble_probabilities", "evaluate_ensemble"]


def _data_key(cfg) -> dict:
    """What must agree between runs for their probabilities to be averaged row by row."""
    return cfg.data.model_dump(include={"source", "image_size", "channels", "resize", "max_samples_per_split"})


def ensemble_probabilities(run_paths, split: str = "test", *, flips=("none",), device: str | None = None):
    """``(probs (N, C), split data, class names, multilabel)``: the mean over runs and flips."""
    runs = [RunDir(Path(p)) for p in run_paths]
    if not runs:
        raise ConfigError("evaluate: give at least one run directory")
    total, data, reference = None, None, None
    for run in runs:
        model, meta, cfg = load_trained_model(run)
        if reference is None:
            reference = (run.path, _data_key(cfg), meta["class_names"])
            # images once; each run's clinical inputs (if any) are built below with its own fitted spec
            data = prepare_data(cfg.data.model_copy(update={"clinical": None}), splits_wanted=(split,))
            if data.class_names != meta["class_names"]:
                raise DataError(f"{data.source}: classes {data.class_names} differ from the model's {meta['class_names']}")
        elif (_data_key(cfg), meta["class_names"]) != reference[1:]:
            raise ConfigError(f"{run.path}: its data settings or classes differ from {reference[0]}'s; "
                              "an ensemble needs runs trained on the same data, classes and image size")
        runtime = make_runtime(cfg.train, device=device)
        model = model.to(runtime.device)
        if runtime.channels_last:
            import torch

            model = model.to(memory_format=torch.channels_last)
        part = data.splits[split]
        if cfg.data.clinical is not None:  # a copy: the next run may have other clinical inputs or none
            part = dataclasses.replace(part)
            attach_clinical(cfg.data, {split: part}, spec=meta["clinical_spec"])
        prep = meta["preprocessing"]
        probs, _ = tta_predict(model, part.images, mean=prep["mean"], std=prep["std"], runtime=runtime,
                               multilabel=data.multilabel, flips=tuple(flips), batch_size=cfg.data.eval_batch_size,
                               extras=part.clinical)
        total = probs if total is None else total + probs
    return total / len(runs), data.splits[split], data.class_names, data.multilabel


def evaluate_ensemble(run_paths, split: str = "test", *, flips=("none",), out: str | Path | None = None,
                      n_bootstrap: int = 1000, seed: int = 0, device: str | None = None) -> dict:
    """Metrics with 95% bootstrap CIs of the averaged prediction; written to ``out`` (JSON) if given."""
    probs, part, class_names, multilabel = ensemble_probabilities(run_paths, split, flips=flips, device=device)
    result = compute_metrics(probs, part.targets, class_names, multilabel=multilabel, n_bootstrap=n_bootstrap, seed=seed)
    result.update(split=split, n=len(part), runs=[str(p) for p in run_paths], flips=list(flips), git_commit=git_commit(),
                  evaluated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if out is not None:
        atomic_write_json(Path(out), result)
    return result
