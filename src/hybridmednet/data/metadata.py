"""Per-sample metadata (sex, age, body site ...) matched to a run's sample ids.

One reader serves both uses: subgroup analysis of predictions (``eval.subgroups``) and clinical
model inputs (``data.clinical.table``). Values that are empty or ``unknown`` count as missing.
"""

from __future__ import annotations

import pandas as pd

from hybridmednet.errors import DataError

# cell values that state "no value" (compared stripped and case-folded)
MISSING = frozenset({"", "unknown", "nan", "none", "na", "n/a", "null", "missing", "?", "-"})


def clean_value(value) -> str | None:
    """A metadata cell, stripped; None where it states no value ("", "unknown", "NA", "n/a", "null")."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.casefold() in MISSING else text


def _read(path: str, key: str, field: str, optional: bool) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:  # e.g. a preset's HAM10000 tables beside an npz downloaded on its own
        way_out = f", or go without the table (--set {key}=null)" if optional else ""
        raise DataError(f"{path}: metadata CSV not found; fix {key}.{field}{way_out}") from None


def load_metadata_rows(cfg, ids: list[str], columns: list[str], *, key: str,
                       optional: bool = False) -> dict[str, list[str | None]]:
    """Column -> one value per id (None where the id has no row or the value is missing).

    ``cfg`` is a :class:`MetadataTableConfig`; ``key`` names it in errors (``eval.subgroups``);
    ``optional``: the config works without the table, so a missing file's error offers ``key=null``.
    """
    frame = _read(cfg.path, key, "path", optional)
    if cfg.join_path:
        other = _read(cfg.join_path, key, "join_path", optional)
        for name, table in ((cfg.path, frame), (cfg.join_path, other)):
            if cfg.join_on not in table.columns:
                raise DataError(f"{name}: no column '{cfg.join_on}' to join on ({key}.join_on)")
        frame = frame.merge(other, on=cfg.join_on, how="left", suffixes=("", "_joined"))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{cfg.path}: metadata has no column(s) {missing}; columns: {', '.join(frame.columns)}")
    try:
        keys = [cfg.id_template.format(**row) for row in frame.to_dict("records")]
    except KeyError as exc:
        raise DataError(f"{cfg.path}: {key}.id_template names column {exc}, which the CSV lacks") from None
    rows = {}
    for k, row in zip(keys, frame[columns].to_dict("records")):
        if rows.setdefault(k, row) != row:  # a repeated id is fine only if its rows agree
            raise DataError(f"{cfg.path}{' joined with ' + cfg.join_path if cfg.join_path else ''}: id {k!r} "
                            f"({key}.id_template {cfg.id_template!r}) has several rows that disagree on {columns}; "
                            "keep one row per id, or make the id_template (or join_on) unique")
    if ids and not any(i in rows for i in ids):
        raise DataError(f"{cfg.path}: none of the {len(ids)} sample ids has a row here: {key}.id_template "
                        f"{cfg.id_template!r} makes keys like {keys[:3]}, the samples' ids look like {ids[:3]}; "
                        "fix the id_template")
    return {column: [clean_value(rows[i][column]) if i in rows else None for i in ids] for column in columns}


def load_subgroup_values(cfg, ids: list[str]) -> dict[str, list[str | None]]:
    """Attribute name -> one value per id (None where the id or value is missing)."""
    columns = list(dict.fromkeys(cfg.columns.values()))
    values = load_metadata_rows(cfg, ids, columns, key="eval.subgroups", optional=True)
    return {name: values[column] for name, column in cfg.columns.items()}


def load_group_ids(cfg, ids: list[str]) -> list[str | None]:
    """One patient/lesion id per sample id from ``data.groups`` (a :class:`GroupTableConfig`);
    None where the table has no row or no value for it (such a sample is its own group)."""
    return load_metadata_rows(cfg, ids, [cfg.column], key="data.groups", optional=True)[cfg.column]
