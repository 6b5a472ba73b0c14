"""``hybridmednet compare --a RUN... --b RUN...``: is B better than A on the same cases?

Reads the per-case predictions that ``hybridmednet evaluate`` wrote (``predictions_<split>.csv``)
rather than running the models again, so a comparison costs seconds and scores exactly the
probabilities behind each run's reported metrics; a CSV that ``metrics.json`` does not tie to the
run's current best checkpoint (by sha256) is refused with the command that rewrites it. Several runs per side are seeds of one recipe;
see :mod:`hybridmednet.metrics.comparison` for how they are pooled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridmednet.engine.checkpoint import read_meta
from hybridmednet.engine.evaluate import current_predictions, read_groups, read_predictions
from hybridmednet.engine.run_dir import RunDir
from hybridmednet.errors import DataError
from hybridmednet.metrics.comparison import paired_difference
from hybridmednet.utils.io import atomic_write_json


def _load_side(runs: list[str], split: str, label: str) -> tuple[list[tuple[Path, list[str], np.ndarray, np.ndarray]], dict]:
    loaded, first = [], None
    for run in runs:
        run_dir = RunDir(Path(run))
        meta = read_meta(run_dir.checkpoints, "best")
        path = current_predictions(run_dir, split)  # written by evaluate for this very checkpoint
        kind = {"class_names": meta["class_names"], "multilabel": bool(meta["multilabel"])}
        if first is not None and kind != first:
            raise DataError(f"{run}: classes {kind['class_names']} differ from {runs[0]}'s {first['class_names']} ({label})")
        first = first or kind
        loaded.append((path, *read_predictions(path, kind["class_names"], kind["multilabel"])))
    return loaded, first


def align_predictions(loaded: list[tuple[Path, list[str], np.ndarray, np.ndarray]]
                      ) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """(ids, probabilities per file, targets) of several prediction files of the same cases, rows
    matched by id to the first file's order; ``loaded`` holds (path, ids, probs, targets) as
    :func:`read_predictions` gives them. Other cases or other targets for an id are an error."""
    ref_path, ref_ids, _, ref_targets = loaded[0]
    if len(set(ref_ids)) != len(ref_ids):
        raise DataError(f"{ref_path}: ids repeat, so cases cannot be matched between runs")
    probs = []
    for path, ids, p, targets in loaded:
        order = {sample: i for i, sample in enumerate(ids)}
        missing = [s for s in ref_ids if s not in order]
        if missing or len(ids) != len(ref_ids):
            raise DataError(f"{path}: scores other cases than {ref_path} (e.g. {(missing or ids)[0]!r}); compare runs "
                            "evaluated on the same split of the same data")
        rows = np.array([order[s] for s in ref_ids])
        if not np.array_equal(targets[rows], ref_targets):
            raise DataError(f"{path}: the targets differ from {ref_path} for the same ids; the runs used different labels")
        probs.append(p[rows])
    return ref_ids, probs, ref_targets


def compare_runs(runs_a: list[str], runs_b: list[str], split: str = "test", *, n_bootstrap: int = 1000,
                 seed: int = 0, out: str | Path | None = None) -> dict:
    """Paired difference B - A of the headline metrics on ``split``; checks every run scored the
    same cases with the same targets (rows are matched by id, in any order)."""
    if not runs_a or not runs_b:
        raise ValueError("compare needs at least one run on each side (A and B)")
    side_a, kind_a = _load_side(runs_a, split, "side A")
    side_b, kind_b = _load_side(runs_b, split, "side B")
    if kind_a != kind_b:
        raise DataError(f"A's classes {kind_a['class_names']} differ from B's {kind_b['class_names']}: not the same task")
    ref_path = side_a[0][0]
    ref_ids, probs, ref_targets = align_predictions(side_a + side_b)
    group_of = read_groups(ref_path)  # patient/lesion ids: resample groups, cluster the McNemar test
    groups = [group_of.get(s) for s in ref_ids] if group_of else None
    result = paired_difference(probs[:len(side_a)], probs[len(side_a):], ref_targets, multilabel=kind_a["multilabel"],
                               n_bootstrap=n_bootstrap, seed=seed, groups=groups)
    result |= {"split": split, "a": [str(r) for r in runs_a], "b": [str(r) for r in runs_b]}
    if out is not None:
        atomic_write_json(Path(out), result)
    return result


def seed_mean_interval(files: list[Path], class_names: list[str], n_resamples: int = 1000,
                       group_table=None) -> dict:
    """The 95% interval of the seed-averaged headline metrics from per-seed prediction files of
    one recipe (same cases): cases, or groups when the files carry patient/lesion ids (or
    ``group_table``, a :class:`GroupTableConfig`, gives them for the files' ids: files written
    before their data had ``data.groups``), resampled once per draw and every seed scored on it.
    Returns point (seed mean), ci95, seed_std, ci_method."""
    from hybridmednet.metrics.bootstrap import interval_method, seed_mean_ci
    from hybridmednet.metrics.classification import single_label_headline

    loaded = [read_predictions(Path(f), class_names, False) for f in files]
    ids, _, targets = loaded[0]
    if any(other[0] != ids for other in loaded[1:]):
        raise DataError(f"{[str(f) for f in files]}: the seeds scored other cases; a seed-mean interval needs the same cases")
    group_of = read_groups(Path(files[0]))
    groups = [group_of[i] for i in ids] if group_of else None
    if groups is None and group_table is not None:
        from hybridmednet.data.metadata import load_group_ids

        groups = load_group_ids(group_table, ids)
    result = seed_mean_ci(single_label_headline, [p for _, p, _ in loaded], targets, n_resamples=n_resamples, groups=groups)
    result["ci_method"] = ("seed-mean " + interval_method(multilabel=False, groups=groups, n_resamples=n_resamples)
                           + f"; every resample scores all {len(files)} seeds and averages them")
    return result
