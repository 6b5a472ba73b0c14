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

from hybridmednet.data.pipeline import attach_clinical
from hybridmednet.engine.run import Run
from hybridmednet.engine.run_dir import git_commit
from hybridmednet.errors import ConfigError
from hybridmednet.metrics import compute_metrics
from hybridmednet.utils.io import atomic_write_json

__all__ = ["ensemble_probabilities", "evaluate_ensemble"]


def _data_key(cfg) -> dict:
    """What must agree between runs for their probabilities to be averaged row by row."""
    return cfg.data.model_dump(include={"source", "image_size", "channels", "resize", "max_samples_per_split"})


def ensemble_probabilities(run_paths, split: str = "test", *, flips=("none",), device: str | None = None,
                           precision: str = "fp32"):
    """``(probs (N, C), split data, class names, multilabel, runs' provenance)``: the mean over runs
    and flips."""
    if not run_paths:
        raise ConfigError("evaluate: give at least one run directory")
    total, data, reference, provenance = None, None, None, []
    for path in run_paths:
        run = Run.load(path, device=device, precision=precision)
        if reference is None:
            reference = (run.path, _data_key(run.config), run.class_names)
            # images once; each run's clinical inputs (if any) are built below with its own fitted spec
            data = run.prepare((split,), data_cfg=run.config.data.model_copy(update={"clinical": None}))
        elif (_data_key(run.config), run.class_names) != reference[1:]:
            raise ConfigError(f"{run.path}: its data settings or classes differ from {reference[0]}'s; "
                              "an ensemble needs runs trained on the same data, classes and image size")
        part = data.splits[split]
        if run.config.data.clinical is not None:  # a copy: the next run may have other clinical inputs or none
            part = dataclasses.replace(part)
            attach_clinical(run.config.data, {split: part}, spec=run.clinical_spec)
        probs = run.predict(part.images, part.clinical, flips=flips)
        total = probs if total is None else total + probs
        provenance.append({"run": str(run.path), **run.provenance()})
    return total / len(run_paths), data.splits[split], data.class_names, data.multilabel, provenance


def evaluate_ensemble(run_paths, split: str = "test", *, flips=("none",), out: str | Path | None = None,
                      n_bootstrap: int = 1000, seed: int = 0, device: str | None = None, precision: str = "fp32") -> dict:
    """Metrics with 95% bootstrap CIs of the averaged prediction; written to ``out`` (JSON) if given,
    with the checkpoint sha256 of every member."""
    probs, part, class_names, multilabel, members = ensemble_probabilities(run_paths, split, flips=flips, device=device,
                                                                           precision=precision)
    result = compute_metrics(probs, part.targets, class_names, multilabel=multilabel, n_bootstrap=n_bootstrap, seed=seed,
                             groups=part.groups)
    result.update(split=split, n=len(part), runs=[str(p) for p in run_paths], members=members, flips=list(flips),
                  git_commit=git_commit(), evaluated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if out is not None:
        atomic_write_json(Path(out), result)
    return result
