"""Data sources by ``data.source.kind``: each turns its config into a :class:`SampleTable`.

Adding a source is one decorated function; the pipeline looks it up here, never by if/else.
"""

from __future__ import annotations

from collections.abc import Callable

from hybridmednet.data.table import SampleTable
from hybridmednet.registry import Registry

SOURCES: Registry[Callable[..., SampleTable]] = Registry("data source", "data.source.kind")


def register_source(kind: str):
    return SOURCES.register(kind)


def build_table(source_config, spatial_dims: int = 2) -> SampleTable:
    """``spatial_dims=3`` tells path sources that an entry is a volume (a NIfTI file or a DICOM
    series folder); in-memory sources return volumes as they are in either case."""
    from hybridmednet.data.sources import csv_table, folder, medmnist  # noqa: F401  (registers)

    return SOURCES.get(source_config.kind)(source_config, spatial_dims=spatial_dims)
