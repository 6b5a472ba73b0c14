"""Image folders: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*``.

With ``data.spatial_dims=3`` each entry of a class folder is one volume: a NIfTI file
(``.nii``, ``.nii.gz``) or a folder holding one DICOM series.

A ``group_regex`` pulls a patient id out of each file name (the Kermany chest X-rays encode it
as ``person123_...`` or ``IM-0115-...``), so val can be carved from train without splitting a
patient across the two.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hybridmednet.data.sources import register_source
from hybridmednet.data.table import SampleTable
from hybridmednet.errors import DataError

SPLIT_DIR_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _has_suffix(path: Path, extensions: list[str]) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and any(name.endswith(e.lower()) for e in extensions)


def _group_of(name: str, pattern: re.Pattern | None) -> str | None:
    if pattern is None:
        return None
    match = pattern.search(name)
    if match is None:
        return None
    found = [g for g in match.groups() if g is not None]
    return "-".join(found) if found else match.group(0)


@register_source("folder")
def folder_table(cfg, spatial_dims: int = 2) -> SampleTable:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found; set data.source.root")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_layout = bool(subdirs) and all(p.name.lower() in SPLIT_DIR_NAMES for p in subdirs)
    split_roots = [(SPLIT_DIR_NAMES[p.name.lower()], p) for p in subdirs] if split_layout else [(None, root)]

    found = sorted({c.name for _, r in split_roots for c in r.iterdir() if c.is_dir() and not c.name.startswith(".")})
    class_names = list(cfg.class_names) if cfg.class_names else found
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise DataError(f"{root}: class folder(s) {unknown} are not in data.source.class_names {class_names}")
    if not class_names:
        raise DataError(f"{root}: no class sub-folders; expected root/<class>/<image> or root/train/<class>/<image>")
    pattern = re.compile(cfg.group_regex) if cfg.group_regex else None

    paths, targets, splits, groups = [], [], [], []
    for split, split_root in split_roots:
        for index, name in enumerate(class_names):
            class_dir = split_root / name
            if not class_dir.is_dir():
                continue
            if spatial_dims == 3:
                from hybridmednet.data.volumes import find_volumes

                files = find_volumes(class_dir)
                if not files:
                    raise DataError(f"{class_dir}: class folder has no volumes (.nii / .nii.gz files or DICOM-series "
                                    "folders); add volumes or remove the folder")
            else:
                files = sorted(p for p in class_dir.rglob("*") if _has_suffix(p, cfg.extensions))
            if not files:
                raise DataError(f"{class_dir}: class folder has no images with extensions {cfg.extensions}; "
                                "add images or remove the folder")
            paths += [str(p) for p in files]
            targets += [index] * len(files)
            splits += [split] * len(files)
            groups += [_group_of(p.name, pattern) for p in files]
    counts = np.bincount(targets, minlength=len(class_names))
    empty = [n for n, c in zip(class_names, counts) if c == 0]
    if empty:
        raise DataError(f"{root}: class(es) {empty} have no images; add images or drop them from class_names")
    ids = [str(Path(p).relative_to(root)) for p in paths]
    return SampleTable(
        ids=ids, class_names=class_names, targets=np.asarray(targets, dtype=np.int64), multilabel=False,
        source=str(root), paths=paths, splits=np.asarray(splits, dtype=object) if split_layout else None,
        groups=groups if pattern is not None else None,
    )
