"""Decode every image once to ``uint8 (N, S, S, C)`` at the training size (volumes:
``(N, S, S, S, 1)``), and cache the result.

Training reads small arrays from memory instead of decoding JPEGs each epoch (on 2 cores,
decoding dominates otherwise). The cache key covers the file list, sizes, modification times,
every preprocessing option, ``skip_bad`` and :data:`PREPROCESS_VERSION`, so a changed file, option
or reader is never served stale, and a cache written while skipping bad images is never served to
a strict run. Bump :data:`PREPROCESS_VERSION` whenever a reader or the resize changes its pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hybridmednet.data.resize import fit_to_square
from hybridmednet.data.table import SampleTable
from hybridmednet.errors import DataError
from hybridmednet.paths import cache_dir


# the decoders' and the resize's pixel output; part of every cache key
PREPROCESS_VERSION = 2


def _cache_key(table: SampleTable, size: int, channels: int, mode: str, skip_bad: bool, volume=None) -> str:
    stats = []
    for p in table.paths:
        try:
            st = os.stat(p)
            stats.append((p, st.st_size, int(st.st_mtime)))
        except OSError:
            stats.append((p, -1, -1))
    blob = json.dumps([PREPROCESS_VERSION, stats, size, channels, mode, table.reader_options, skip_bad]
                      + ([volume] if volume is not None else []), default=str).encode()
    return hashlib.sha1(blob).hexdigest()


def _decode_all(table: SampleTable, size: int, channels: int, mode: str, skip_bad: bool, volume=None):
    """``volume`` (``data.volume``) given: each row is a volume file or series, read natively."""
    def decode(i: int) -> np.ndarray:
        if volume is not None:
            from hybridmednet.data.volumes import load_volume

            return load_volume(table.paths[i], size, mode, volume)
        return fit_to_square(table.record(i, channels).image, size, mode)

    def one(i: int):
        try:
            return decode(i), None
        except DataError as exc:
            if not skip_bad:
                raise
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, range(len(table))))
    ok = np.asarray([r[0] is not None for r in results], dtype=bool)
    shape = (size,) * (3 if volume is not None else 2) + (channels,)
    images = np.zeros((len(table),) + shape, dtype=np.uint8)
    for i, (image, _) in enumerate(results):
        if image is not None:
            images[i] = image
    skipped = [(table.ids[i], r[1]) for i, r in enumerate(results) if r[1] is not None]
    return images, ok, skipped


def _in_memory_volumes(table: SampleTable, size: int, channels: int, mode: str, volume):
    """A table of ``(N, D, H, W, 1)`` volumes (MedMNIST 3D): resampled natively (``volume`` given,
    ``data.spatial_dims=3``) or read as 2.5D images (three central orthogonal slices)."""
    from hybridmednet.data.volumes import fit_volume, orthogonal_slices

    ok = np.ones(len(table), dtype=bool)
    if volume is not None:
        if table.images.shape[1:] == (size, size, size, 1) and volume["window"] is None:
            return table.images, ok, []
        return np.stack([fit_volume(v, size, volume) for v in table.images]), ok, []
    if channels != 3:
        raise DataError(f"{table.source}: volumes read as 2.5D images need data.channels=3 (one per orthogonal "
                        "slice); or set data.spatial_dims=3 (and data.channels=1) to read them natively")
    slices = orthogonal_slices(table.images)
    if slices.shape[1] != size:
        slices = np.stack([fit_to_square(s, size, mode) for s in slices])
    return slices, ok, []


def materialize(table: SampleTable, size: int, channels: int, mode: str, *, skip_bad: bool, use_cache: bool = True,
                volume=None):
    """Return ``(images, ok_mask, skipped)`` where ``skipped`` lists ``(id, reason)``. ``volume``
    (``data.volume`` as a dict, given when ``data.spatial_dims=3``) reads every row as a volume."""
    if table.images is not None and table.images.ndim == 5:
        return _in_memory_volumes(table, size, channels, mode, volume)
    if table.images is not None and volume is not None:
        raise DataError(f"{table.source}: data.spatial_dims=3 but the file holds 2D images {table.images.shape[1:]}; "
                        "set data.spatial_dims=2")
    if table.images is not None and table.images.shape[1:] == (size, size, channels) and table.images.dtype == np.uint8:
        return table.images, np.ones(len(table), dtype=bool), []
    if table.images is not None:
        return _decode_all(table, size, channels, mode, skip_bad)
    path = cache_dir() / "images" / f"{_cache_key(table, size, channels, mode, skip_bad, volume)}.npz"
    if use_cache and path.exists():
        with np.load(path) as cached:
            skipped = json.loads(str(cached["skipped"]))
            return cached["images"], cached["ok"], [tuple(s) for s in skipped]
    images, ok, skipped = _decode_all(table, size, channels, mode, skip_bad, volume)
    if use_cache:
        from hybridmednet.utils.io import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, images=images, ok=ok, skipped=json.dumps(skipped), skip_bad=skip_bad)

        atomic_write(path, write)
    return images, ok, skipped
