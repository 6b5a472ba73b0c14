"""CSV manifests: one row per image.

The image path comes from ``path_column`` or from ``path_template`` filled with the row
(``"{image_id}.jpg"``), relative to ``image_root`` (default: the CSV's folder). Labels are one
class per row (``label_column``), several joined by ``label_separator`` (``"mel|nv"``), or
0/1 ``label_columns``. Optional group (patient/lesion), split and id columns; per-sample text
or metadata for the model is ``data.clinical``'s (it reads any CSV by id).
Errors name the CSV file and the row number as a spreadsheet shows it (header = row 1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hybridmednet.data.sources import register_source
from hybridmednet.data.table import SPLITS, SampleTable
from hybridmednet.errors import DataError

_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _row(i: int) -> int:
    return i + 2  # header is row 1


def _require_columns(frame: pd.DataFrame, path: str, names: list[str]) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; the CSV has: {', '.join(frame.columns)}; "
                        "fix the column names in data.source")


def _single_labels(frame, cfg) -> tuple[np.ndarray, list[str]]:
    values = frame[cfg.label_column].astype(str).str.strip()
    empty = np.flatnonzero((values == "").to_numpy())
    if len(empty):
        raise DataError(f"{cfg.path}: row {_row(int(empty[0]))}: empty label in column '{cfg.label_column}' "
                        f"({len(empty)} row(s) in all); fill in the label or remove the row(s)")
    class_names = list(cfg.class_names) if cfg.class_names else sorted(values.unique())
    index = {name: i for i, name in enumerate(class_names)}
    targets = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if value not in index:
            raise DataError(f"{cfg.path}: row {_row(i)}: label {value!r} in column '{cfg.label_column}' is not one of "
                            f"{class_names}; fix the row or data.source.class_names")
        targets[i] = index[value]
    return targets, class_names


def _separated_labels(frame, cfg) -> tuple[np.ndarray, list[str]]:
    cells = [[t.strip() for t in str(v).split(cfg.label_separator) if t.strip()] for v in frame[cfg.label_column]]
    class_names = list(cfg.class_names) if cfg.class_names else sorted({t for c in cells for t in c})
    index = {name: i for i, name in enumerate(class_names)}
    targets = np.zeros((len(cells), len(class_names)), dtype=np.float32)
    for i, labels in enumerate(cells):
        for label in labels:
            if label not in index:
                raise DataError(f"{cfg.path}: row {_row(i)}: label {label!r} is not one of {class_names}; "
                                "fix the row or data.source.class_names")
            targets[i, index[label]] = 1.0
    return targets, class_names


def _column_labels(frame, cfg) -> tuple[np.ndarray, list[str]]:
    _require_columns(frame, cfg.path, cfg.label_columns)
    values = frame[cfg.label_columns].apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.to_numpy().any():
        i, j = map(int, np.argwhere(bad.to_numpy())[0])
        raise DataError(f"{cfg.path}: row {_row(i)}: column '{cfg.label_columns[j]}' must be 0 or 1, "
                        f"got {frame[cfg.label_columns[j]].iloc[i]!r}")
    return values.to_numpy(np.float32), list(cfg.class_names or cfg.label_columns)


def _paths(frame, cfg) -> list[str]:
    root = Path(cfg.image_root) if cfg.image_root else Path(cfg.path).parent
    if cfg.path_template is not None:
        try:
            names = [cfg.path_template.format(**row) for row in frame.to_dict("records")]
        except KeyError as exc:
            raise DataError(f"{cfg.path}: path_template {cfg.path_template!r} names column {exc}, "
                            f"which the CSV lacks; columns: {', '.join(frame.columns)}") from None
    else:
        _require_columns(frame, cfg.path, [cfg.path_column])
        names = frame[cfg.path_column].astype(str).tolist()
    return [str(root / n) if not Path(n).is_absolute() else n for n in names]


def _optional(frame, column) -> list[str | None] | None:
    if column is None:
        return None
    return [None if v == "" else v for v in frame[column].astype(str).tolist()]


def _check_repeated_images(paths: list[str], targets: np.ndarray, source: str) -> None:
    """The same image listed twice counts twice in training and in every metric (and leaks when its
    copies land in different splits, which the leakage audit reports): two labels for one image are
    an error; same-label repeats are logged with their count."""
    first: dict[str, int] = {}
    repeats = []
    for i, path in enumerate(paths):
        j = first.setdefault(path, i)
        if j != i:
            if not np.array_equal(targets[i], targets[j]):
                raise DataError(f"{source}: row {_row(i)} lists {path} again (first at row {_row(j)}) with another label; "
                                "one image can have one label: fix or remove one of the rows")
            repeats.append((i, j))
    if repeats:
        i, j = repeats[0]
        logging.getLogger("hybridmednet").warning(
            f"{source}: {len(repeats)} row(s) list an image already listed (e.g. row {_row(i)} repeats row {_row(j)}); "
            "they count twice in training and metrics, and the leakage audit reports copies across splits; "
            "remove the repeated rows")


@register_source("csv")
def csv_table(cfg, spatial_dims: int = 2) -> SampleTable:
    try:
        frame = pd.read_csv(cfg.path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{cfg.path}: CSV file not found; set data.source.path") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{cfg.path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise DataError(f"{cfg.path}: the CSV has no rows")
    extra = [c for c in (cfg.group_column, cfg.split_column, cfg.id_column) if c]
    _require_columns(frame, cfg.path, extra + ([cfg.label_column] if not cfg.label_columns else []))

    if cfg.label_columns:
        targets, class_names = _column_labels(frame, cfg)
        if cfg.one_hot:
            bad = np.flatnonzero(targets.sum(axis=1) != 1)
            if len(bad):
                raise DataError(f"{cfg.path}: row {_row(int(bad[0]))}: one_hot label columns must hold exactly one 1 "
                                f"({len(bad)} row(s) do not); fix the rows or drop data.source.one_hot")
            targets = targets.argmax(axis=1).astype(np.int64)
    elif cfg.label_separator:
        targets, class_names = _separated_labels(frame, cfg)
    else:
        targets, class_names = _single_labels(frame, cfg)
    multilabel = targets.ndim == 2

    splits = None
    if cfg.split_column:
        raw = frame[cfg.split_column].str.strip().str.lower()
        unknown = sorted(set(raw) - set(_SPLIT_ALIASES))
        if unknown:
            i = int(np.flatnonzero(~raw.isin(list(_SPLIT_ALIASES)))[0])
            raise DataError(f"{cfg.path}: row {_row(i)}: split {unknown[0]!r} in column '{cfg.split_column}' "
                            f"is not one of {list(SPLITS)}")
        splits = raw.map(_SPLIT_ALIASES).to_numpy(dtype=object)

    paths = _paths(frame, cfg)
    _check_repeated_images(paths, targets, cfg.path)
    ids = frame[cfg.id_column].tolist() if cfg.id_column else [Path(p).name for p in paths]
    return SampleTable(
        ids=ids, class_names=class_names, targets=targets, multilabel=multilabel, source=str(cfg.path),
        paths=paths, splits=splits, groups=_optional(frame, cfg.group_column),
    )
