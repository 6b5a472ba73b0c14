"""Per-sample metadata (sex, age, body site ...) matched to a run's sample ids, for subgroups.

Metadata is only ever used to *analyse* predictions; it never reaches the model here.
"""

from __future__ import annotations

import pandas as pd

from hybridmednet.errors import DataError


def _read(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: metadata CSV not found; fix eval.subgroups.path") from None


def load_subgroup_values(cfg, ids: list[str]) -> dict[str, list[str | None]]:
    """Attribute name -> one value per id (None where the id or value is missing)."""
    frame = _read(cfg.path)
    if cfg.join_path:
        other = _read(cfg.join_path)
        for name, table in ((cfg.path, frame), (cfg.join_path, other)):
            if cfg.join_on not in table.columns:
                raise DataError(f"{name}: no column '{cfg.join_on}' to join on (eval.subgroups.join_on)")
        frame = frame.merge(other, on=cfg.join_on, how="left", suffixes=("", "_joined"))
    missing = [c for c in cfg.columns.values() if c not in frame.columns]
    if missing:
        raise DataError(f"{cfg.path}: metadata has no column(s) {missing}; columns: {', '.join(frame.columns)}")
    try:
        keys = [cfg.id_template.format(**row) for row in frame.to_dict("records")]
    except KeyError as exc:
        raise DataError(f"{cfg.path}: eval.subgroups.id_template names column {exc}, which the CSV lacks") from None
    rows = dict(zip(keys, frame[list(cfg.columns.values())].to_dict("records")))
    out = {}
    for name, column in cfg.columns.items():
        values = [rows.get(i, {}).get(column) for i in ids]
        out[name] = [v if v not in ("", None, "unknown") else None for v in values]
    return out
