"""From ``DataConfig`` to three in-memory splits, audited for leakage.

source -> :class:`SampleTable` -> split assignment -> decode/resize (cached) -> leakage audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from hybridmednet.data.leakage import audit_leakage
from hybridmednet.data.materialize import materialize
from hybridmednet.data.sources import build_table
from hybridmednet.data.splits import assign_splits, split_table
from hybridmednet.data.table import SPLITS, SampleTable
from hybridmednet.errors import ConfigError, DataError


@dataclass
class SplitArrays:
    """One split, decoded: what the torch ``Dataset`` and the metrics read."""

    ids: list[str]
    images: np.ndarray  # (N, S, S, C) uint8; volumes (N, S, S, S, 1)
    targets: np.ndarray
    groups: list[str | None] | None = None
    clinical: dict[str, np.ndarray] | None = None  # the model's clinical inputs, one row per sample

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PreparedData:
    splits: dict[str, SplitArrays]
    class_names: list[str]
    multilabel: bool
    source: str
    audit: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clinical_spec: dict | None = None  # fitted on train; stored with the checkpoint

    def class_counts(self) -> dict[str, list[int]]:
        out = {}
        for name, part in self.splits.items():
            t = part.targets
            counts = t.sum(axis=0) if self.multilabel else np.bincount(t, minlength=len(self.class_names))
            out[name] = [int(c) for c in counts]
        return out


def _cap(table: SampleTable, limit: int | None, seed: int) -> SampleTable:
    if limit is None or len(table) <= limit:
        return table
    rng = np.random.default_rng(seed)
    return table.subset(np.sort(rng.choice(len(table), size=limit, replace=False)))


def _to_arrays(table: SampleTable, cfg, skip_bad: bool) -> tuple[SplitArrays, list]:
    volume = cfg.volume.model_dump(mode="json") if cfg.spatial_dims == 3 else None
    images, ok, skipped = materialize(table, cfg.image_size, cfg.channels, cfg.resize, skip_bad=skip_bad,
                                      use_cache=cfg.cache, volume=volume)
    if not ok.all():
        keep = np.flatnonzero(ok)
        table, images = table.subset(keep), images[keep]
    return SplitArrays(ids=list(table.ids), images=images, targets=table.targets,
                       groups=table.groups), skipped


def keep_classes(table: SampleTable, classes: list[str]) -> SampleTable:
    """The rows of ``classes`` only (``data.classes``), relabelled in that order; a name the source
    lacks is an error listing what it has. Multi-label rows keep the chosen columns and are kept
    when any of them is positive."""
    lookup = {c.lower(): i for i, c in enumerate(table.class_names)}
    unknown = [c for c in classes if c.lower() not in lookup]
    if unknown:
        raise DataError(f"{table.source}: data.classes {unknown} are not classes of the source; it has: "
                        f"{', '.join(table.class_names)}")
    if len({c.lower() for c in classes}) != len(classes):
        raise DataError(f"{table.source}: data.classes {classes} names a class twice")
    columns = np.asarray([lookup[c.lower()] for c in classes])
    if table.multilabel:
        keep = np.flatnonzero(table.targets[:, columns].sum(1) > 0)
        targets = table.targets[keep][:, columns]
    else:
        keep = np.flatnonzero(np.isin(table.targets, columns))
        remap = np.full(len(table.class_names), -1, np.int64)
        remap[columns] = np.arange(len(columns))
        targets = remap[table.targets[keep]]
    return replace(table.subset(keep), targets=targets, class_names=[table.class_names[i] for i in columns])


def with_groups(table: SampleTable, groups_cfg) -> SampleTable:
    """The table with patient/lesion ids read from ``data.groups``; a source that has its own
    (a CSV ``group_column``, a folder ``group_regex``) is refused, so one id never has two origins."""
    from hybridmednet.data.metadata import load_group_ids

    if table.groups is not None:
        raise ConfigError(f"{table.source}: the source already gives group ids (its group column or regex); "
                          "drop data.groups, or the source's group setting")
    return replace(table, groups=load_group_ids(groups_cfg, list(table.ids)))


def prepare_data(cfg, *, splits_wanted=SPLITS, clinical_spec: dict | None = None) -> PreparedData:
    """Build the splits named in ``splits_wanted`` (decoding only those).

    ``clinical_spec``: a trained model's fitted clinical inputs (its checkpoint's); given, the
    clinical inputs are built with it instead of being fitted again on today's training split,
    so a changed metadata file cannot silently shift a trained model's vocabulary or scaling."""
    table = build_table(cfg.source, spatial_dims=cfg.spatial_dims)
    if cfg.groups is not None:
        table = with_groups(table, cfg.groups)
    if cfg.classes:
        table = keep_classes(table, cfg.classes)
    if len(table.class_names) < 2:
        raise DataError(f"{table.source}: only one class ({', '.join(table.class_names) or 'none'}) found; a classifier "
                        "needs at least two: check the folder layout (root/<class>/<image>) or the label column")
    assignment = assign_splits(table, cfg.split.strategy, cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.seed)
    parts, skipped, train_ids = {}, [], []
    for name, part in split_table(table, assignment).items():
        part = _cap(part, cfg.max_samples_per_split, cfg.split.seed)
        if name == "train":
            train_ids = list(part.ids)
        if name not in splits_wanted:
            continue
        parts[name], bad = _to_arrays(part, cfg, cfg.skip_bad)
        skipped += [(f"{name}:{i}", reason) for i, reason in bad]
    data = PreparedData(splits=parts, class_names=table.class_names, multilabel=table.multilabel,
                        source=table.source, skipped=skipped)
    if "train" in parts:
        counts = data.class_counts()["train"]
        empty = [n for n, c in zip(table.class_names, counts) if c == 0]
        if empty:
            raise DataError(f"{table.source}: class(es) {empty} have no training images; "
                            "add images or remove them from data.source.class_names")
    if len(parts) > 1:
        data.audit = audit_leakage(parts)
    if cfg.clinical is not None:
        data.clinical_spec = attach_clinical(cfg, parts, train_ids=train_ids, spec=clinical_spec)
    return data


def attach_clinical(cfg, parts: dict[str, SplitArrays], *, train_ids: list[str] | None = None,
                    spec: dict | None = None) -> dict:
    """Set every part's ``clinical`` inputs; returns the spec they were built with: ``spec`` (a
    checkpoint's) or one fitted on ``train_ids``' metadata."""
    from hybridmednet.data.clinical import (
        check_no_leak,
        clinical_arrays,
        fit_clinical_spec,
        load_clinical_values,
        resolve_table,
    )
    from hybridmednet.paths import cache_dir

    c = cfg.clinical
    source = cfg.source
    labels = [getattr(source, "label_column", None), *(getattr(source, "label_columns", None) or [])]
    check_no_leak(c, [name for name in labels if name])
    table = resolve_table(c, source)
    # One read of the metadata for the training ids (to fit) and every wanted split (to build), and
    # all splits encoded at once, so a frozen text encoder runs (or reads its cache) once.
    if spec is None and not train_ids:
        raise ConfigError("data.clinical: no training ids to fit the clinical inputs on, and no fitted spec given")
    fit_ids = list(train_ids) if spec is None else []
    ids = [i for part in parts.values() for i in part.ids]
    values = load_clinical_values(c, table, fit_ids + ids)
    n = len(fit_ids)
    if spec is None:
        spec = fit_clinical_spec(c, {k: v[:n] for k, v in values.items()}, n)
    arrays = clinical_arrays(c, spec, {k: v[n:] for k, v in values.items()}, len(ids),
                             cache_dir=cache_dir() if cfg.cache else None)
    start = 0
    for part in parts.values():
        part.clinical = {k: v[start:start + len(part)] for k, v in arrays.items()}
        start += len(part)
    return spec
