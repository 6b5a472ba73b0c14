"""Clinical inputs beside the image: rendered text or numeric/categorical features.

Everything learned from data (the scratch tokenizer's vocabulary, feature means and category
lists) is fitted on the *training* split only and kept in a JSON-serialisable ``spec`` that the
checkpoint stores, so evaluation and prediction on new cases reproduce training's inputs exactly.

Per sample the model gets ``clinical_present`` (0 where the sample has no clinical record or
none of its columns has a value, or where modality dropout removed it) and one of: ``text_states`` + ``text_mask`` (frozen encoder),
``token_ids`` + ``text_mask`` (scratch encoder), ``tabular`` (features).
"""

from __future__ import annotations

import math
import string
from pathlib import Path

import numpy as np

from hybridmednet.data.metadata import load_metadata_rows
from hybridmednet.errors import ConfigError, DataError

__all__ = [
    "check_no_leak",
    "clinical_arrays",
    "clinical_columns",
    "fit_clinical_spec",
    "load_clinical_values",
    "numeric_columns",
    "parse_numbers",
    "render_texts",
    "resolve_table",
]


_INTEGER_TYPES, _NUMBER_TYPES = set("bcdoxX"), set("bcdoxXeEfFgGn%")


def _fields(phrase: str) -> list[tuple[str, str]]:
    """``(column, format spec)`` of each placeholder: "{age:.0f}-year-old" -> [("age", ".0f")]."""
    return [(field, spec or "") for _, field, spec, _ in string.Formatter().parse(phrase) if field]


def _placeholders(phrase: str) -> list[str]:
    return [field for field, _ in _fields(phrase)]


def numeric_columns(cfg) -> list[str]:
    """Columns read as numbers: tabular ``numeric``, or template fields with a numeric format spec."""
    if cfg.inputs == "tabular":
        return list(cfg.numeric)
    if cfg.text_column:
        return []
    return list(dict.fromkeys(f for phrase in cfg.template for f, spec in _fields(phrase) if spec[-1:] in _NUMBER_TYPES))


def clinical_columns(cfg) -> list[str]:
    """Every metadata column the clinical inputs read (``cfg``: :class:`ClinicalConfig`)."""
    if cfg.inputs == "tabular":
        cols = [*cfg.numeric, *cfg.categorical]
    elif cfg.text_column:
        cols = [cfg.text_column]
    else:
        cols = [f for phrase in cfg.template for f in _placeholders(phrase)]
    return list(dict.fromkeys(cols))


def check_no_leak(cfg, label_columns: list[str] | str | None = None) -> None:
    """Refuse leak columns (how the label was obtained, or the label itself) as model inputs."""
    labels = [label_columns] if isinstance(label_columns, str) else list(label_columns or [])
    forbidden = {c.lower() for c in [*cfg.leak_columns, *labels]}
    used = {*clinical_columns(cfg), *cfg.numeric, *cfg.categorical}
    leaks = sorted({c for c in used if c.lower() in forbidden})
    if leaks:
        raise ConfigError(f"data.clinical uses {leaks}: these columns reveal the label (data.clinical.leak_columns "
                          f"{cfg.leak_columns}, or the label column) and must never be a model input; remove them")


def resolve_table(cfg, source):
    """The metadata table: ``data.clinical.table``, or the CSV source itself (by its id column)."""
    if cfg.table is not None:
        return cfg.table
    if getattr(source, "kind", None) == "csv" and source.id_column:
        from hybridmednet.config.schema import MetadataTableConfig

        return MetadataTableConfig(path=source.path, id_template="{" + source.id_column + "}")
    raise ConfigError("data.clinical.table is needed (a CSV with each sample's metadata and an id_template), "
                      "or use a CSV source with data.source.id_column")


def load_clinical_values(cfg, table, ids: list[str]) -> dict[str, list]:
    """Column -> one value per id: None where unknown, a float in :func:`numeric_columns`, else text."""
    values = load_metadata_rows(table, ids, clinical_columns(cfg), key="data.clinical.table")
    return parse_numbers(cfg, values, ids, source=table.path)


def parse_numbers(cfg, values: dict[str, list], ids: list[str], *, source: str) -> dict[str, list]:
    """Turn the numeric columns' cells into floats; a cell that is not a number is an error naming
    the file, the sample and the column (a stated unknown such as "NA" is already None)."""
    out = dict(values)
    for column in numeric_columns(cfg):
        numbers = []
        for sample_id, value in zip(ids, values[column]):
            try:
                number = None if value is None else float(value)
            except ValueError:
                advice = ("list the column under data.clinical.categorical instead" if cfg.inputs == "tabular"
                          else "or drop the numeric format (e.g. '{age}' instead of '{age:.0f}')")
                raise DataError(f"{source}: sample {sample_id!r}: {column} = {value!r} is not a number; fix the "
                                f"cell or leave it empty (unknown); {advice}") from None
            numbers.append(None if number is None or math.isnan(number) else number)
        out[column] = numbers
    return out


def _format(phrase: str, row: dict) -> str:
    """``phrase`` filled from ``row``; integer presentations ("{age:d}") get whole numbers."""
    ints = {f for f, spec in _fields(phrase) if spec[-1:] in _INTEGER_TYPES}
    return phrase.format(**{f: round(v) if f in ints and isinstance(v, float) else v for f, v in row.items()})


def render_texts(cfg, values: dict[str, list], present: np.ndarray) -> list[str | None]:
    """One text per sample; a phrase whose value is missing becomes its ``missing`` statement
    ("age unknown"), so the text says what is unknown instead of dropping it silently."""
    n = len(present)
    if cfg.text_column:
        return [values[cfg.text_column][i] if present[i] else None for i in range(n)]
    texts = []
    for i in range(n):
        if not present[i]:
            texts.append(None)
            continue
        parts = []
        for phrase in cfg.template:
            fields = _placeholders(phrase)
            row = {f: values[f][i] for f in fields}
            absent = [f for f in fields if row[f] is None]
            if absent:
                parts.extend(cfg.missing.get(f, f"{f} unknown") for f in absent)
                continue
            parts.append(_format(phrase, row))
        texts.append(cfg.joiner.join(parts))
    return texts


def _present(values: dict[str, list], n: int) -> np.ndarray:
    """A sample has a clinical record when any of its columns has a value."""
    if not values:
        return np.zeros(n, dtype=bool)
    return np.array([any(v[i] is not None for v in values.values()) for i in range(n)], dtype=bool)


# --------------------------------------------------------------------------- fitting (train only)
def fit_clinical_spec(cfg, train_values: dict[str, list], n_train: int) -> dict:
    spec = {"inputs": cfg.inputs, "columns": clinical_columns(cfg)}
    if cfg.inputs == "tabular":
        numeric = {}
        for col in cfg.numeric:
            xs = np.array([x for x in train_values[col] if x is not None])
            if xs.size == 0:
                raise DataError(f"data.clinical.numeric: column '{col}' has no values in the training split")
            numeric[col] = [float(xs.mean()), float(xs.std()) or 1.0]
        categorical = {col: sorted({v for v in train_values[col] if v is not None}) for col in cfg.categorical}
        spec["tabular"] = {"numeric": numeric, "categorical": categorical}
        spec["tabular_dim"] = 2 * len(numeric) + sum(len(c) + 2 for c in categorical.values())
        return spec
    from hybridmednet.data.text_encoding import fit_text_spec

    texts = render_texts(cfg, train_values, _present(train_values, n_train))
    spec.update(fit_text_spec(cfg.text_encoder, [t for t in texts if t is not None]))
    return spec


def _tabular(spec: dict, values: dict[str, list], n: int) -> np.ndarray:
    """Standardised numbers with a missing flag; one-hot categories with 'unseen' and 'missing' slots."""
    cols = []
    for col, (mean, std) in spec["tabular"]["numeric"].items():
        xs = values[col]
        cols.append(np.array([0.0 if x is None else (x - mean) / std for x in xs]))
        cols.append(np.array([1.0 if x is None else 0.0 for x in xs]))
    for col, cats in spec["tabular"]["categorical"].items():
        index = {c: i for i, c in enumerate(cats)}
        block = np.zeros((n, len(cats) + 2))
        for i, v in enumerate(values[col]):
            block[i, len(cats) + 1 if v is None else index.get(v, len(cats))] = 1.0
        cols.extend(block.T)
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)


def clinical_arrays(cfg, spec: dict, values: dict[str, list], n: int, *,
                    cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The model's clinical inputs for ``n`` samples, from their metadata values and a fitted spec."""
    present = _present(values, n)
    if spec["inputs"] == "tabular":
        return {"clinical_present": present.astype(np.float32), "tabular": _tabular(spec, values, n)}
    from hybridmednet.data.text_encoding import encode_texts

    texts = render_texts(cfg, values, present)
    return {"clinical_present": present.astype(np.float32), **encode_texts(cfg.text_encoder, spec, texts, cache_dir)}
