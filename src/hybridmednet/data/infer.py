"""``hybridmednet train --data PATH``: a config inferred from a folder, a CSV or an npz.

timm's ``train.py --data-dir DIR`` starts from a folder; here a new user should not have to write
YAML first either. The source kind comes from the path (folder, ``.csv``, MedMNIST-layout
``.npz``), the classes from the source itself, the channels from a sample of the images (grey
only when every sampled image is grey), and the image size from their median shorter side,
rounded down to 28, 64 or 128 px (128 at most: a CPU-friendly default; ``--set
data.image_size=224`` for more). Everything else is the default recipe. The choices are
returned as lines to print, and the resolved config is saved in the run as usual.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridmednet.errors import ConfigError, DataError

SIZES = (28, 64, 128)
SAMPLE = 24  # images opened to infer channels and size


def source_for_path(path: Path) -> dict:
    """The ``data.source`` section for a folder, a CSV or a MedMNIST-layout npz (also external validation's)."""
    if path.is_dir():
        return {"kind": "folder", "root": str(path)}
    if path.suffix.lower() == ".csv":
        return {"kind": "csv", "path": str(path), "image_root": str(path.parent)}
    if path.suffix.lower() == ".npz":
        stem, size = path.stem, 28
        head, _, tail = stem.rpartition("_")
        if head and tail.isdigit() and int(tail) in (64, 128, 224):
            stem, size = head, int(tail)
        return {"kind": "medmnist", "root": str(path.parent), "flag": stem, "size": size, "download": False}
    raise DataError(f"--data {path}: not a folder, a .csv or a .npz; give an image folder (root/<class>/*), a CSV with "
                    "path and label columns, or a MedMNIST-style npz")


def _shape_of(path: str) -> tuple[int, int, int]:
    """(height, width, channels) of an image file, read as the loaders read it."""
    from hybridmednet.data.imageio import load_image

    grey = load_image(path, 1)
    colour = load_image(path, 3)
    is_grey = bool(np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2]))
    return grey.shape[0], grey.shape[1], 1 if is_grey else 3


def infer_config(path: str | Path, name: str | None = None) -> tuple[dict, list[str]]:
    """``(raw config dict, lines saying what was inferred)`` for the data at ``path``."""
    from hybridmednet.config.schema import DataConfig
    from hybridmednet.data.sources import build_table

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"--data {path}: not found")
    source = source_for_path(path)
    table = build_table(DataConfig.model_validate({"source": source}).source)
    if len(table.class_names) < 2:
        raise DataError(f"--data {path}: one class ({table.class_names}) found; a classifier needs at least two")
    if table.images is not None:  # npz: the arrays say it all
        height, width = table.images.shape[1:3]
        channels = 1 if table.images.ndim == 3 or table.images.shape[-1] == 1 else 3
        sides = [min(height, width)]
    else:
        rng = np.random.default_rng(0)
        picks = rng.choice(len(table.paths), size=min(SAMPLE, len(table.paths)), replace=False)
        shapes = [_shape_of(table.paths[i]) for i in picks]
        sides = [min(h, w) for h, w, _ in shapes]
        channels = 1 if all(c == 1 for _, _, c in shapes) else 3
    side = float(np.median(sides))
    image_size = max([s for s in SIZES if s <= side] or [SIZES[0]])
    raw = {"name": name or path.stem.replace(" ", "_"), "data": {"source": source, "image_size": image_size,
                                                                  "channels": channels}}
    counts = np.bincount(table.targets, minlength=len(table.class_names)) if not table.multilabel else \
        table.targets.sum(axis=0).astype(int)
    lines = [
        f"data: {source['kind']} source {path}",
        f"classes ({len(table.class_names)}): " + ", ".join(f"{c} ({n})" for c, n in zip(table.class_names, counts)),
        f"channels: {channels} ({'every sampled image is grey' if channels == 1 else 'colour images found'})",
        f"image size: {image_size} px (median shorter side {side:.0f} px; --set data.image_size=N to change)",
        "recipe: the defaults (small_cnn, 30 epochs, AdamW + cosine, EMA, checkpoint chosen on val AUC)",
    ]
    if len(table.class_names) > 50:
        raise ConfigError(f"--data {path}: {len(table.class_names)} classes inferred; check the layout "
                          "(root/<class>/<image>), or write a config")
    return raw, lines
